"""The embedded mode's webhook receiver: the demo office's subscription delivers every public event to
``POST /notify/dev/webhooks/demo-office`` on this server, which checks each delivery's Standard Webhooks signature
with the ``standardwebhooks`` verifier and keeps the last 200 for ``GET /notify/dev/webhooks`` (newest first).

Only when the platform is served on loopback (as the mail catcher): there notify-svc is allowed plain HTTP to
loopback targets (``NOTIFY_WEBHOOKS__*`` still win). The subscription's secret is never written anywhere: the runner
rotates it on every start (no overlap) and keeps the new one in memory for the verifier.
"""

from __future__ import annotations

import collections
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notify_svc.settings import NotifySettings
from notify_svc.webhooks.service import NewSubscription, SubscriptionChanges
from notify_svc.wiring import webhook_subscriptions
from platform_common.auth import public
from platform_common.auth.principal import Principal
from platform_common.problems import Problem
from platform_common.runtime import ServiceRuntime

log = logging.getLogger(__name__)

WEBHOOKS_PATH = "/notify/dev/webhooks"
DEMO_RECEIVER = "demo-office"
# What notify-svc sends stays far below this (thin payloads); the bound keeps a stray client from filling memory.
MAX_BODY_BYTES = 256 * 1024
LOOPBACK_NETWORKS = ["127.0.0.0/8", "::1/128"]


class EmbeddedWebhookCatcher:
    def __init__(self, public_url: str, keep: int = 200) -> None:
        self.public_url = public_url.rstrip("/")
        self.received: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._secrets: dict[str, str] = {}

    def url(self, name: str = DEMO_RECEIVER) -> str:
        return f"{self.public_url}{WEBHOOKS_PATH}/{name}"

    def notify_settings(self, settings: NotifySettings) -> NotifySettings:
        """Plain HTTP to loopback and links to this server, for what NOTIFY_WEBHOOKS__* does not set itself."""
        chosen = settings.webhooks.model_fields_set
        updates: dict[str, Any] = {}
        if "require_https" not in chosen:
            updates["require_https"] = False
        if "allowed_networks" not in chosen:
            updates["allowed_networks"] = LOOPBACK_NETWORKS
        if "api_base_url" not in chosen:
            updates["api_base_url"] = self.public_url
        if not updates:
            return settings
        webhooks = settings.webhooks.model_validate(settings.webhooks.model_dump() | updates)
        return settings.model_copy(update={"webhooks": webhooks})

    async def ensure_demo_subscription(self, notify: ServiceRuntime, office_id: uuid.UUID, admin_id: str) -> None:
        """The demo office's subscription to every event type, sent here; its secret fresh for this run."""
        service = webhook_subscriptions(notify)
        admin = Principal(
            id=admin_id,
            ptype="user",
            org=office_id,
            org_kind="office",
            perms=frozenset({"webhooks.manage"}),
            nips=frozenset({"*"}),
        )
        url = self.url()
        # Found by path: a run on another port (PORT=...) moves the demo subscription there.
        existing = [s for s in await service.of_organisation(admin) if urlsplit(s.url).path == urlsplit(url).path]
        if existing:
            if existing[0].url != url:
                await service.update(admin, existing[0].id, SubscriptionChanges(url=url))
            _rotated, secret = await service.rotate_secret(admin, existing[0].id, timedelta(0))
        else:
            _created, secret = await service.create(
                admin,
                NewSubscription(
                    url=url,
                    event_types=["*"],
                    contact_email="biuro@example.com",
                    description="Demo: the embedded receiver (GET /notify/dev/webhooks)",
                    language="pl",
                ),
            )
            log.info("demo: webhook subscription of the demo office to %s", url)
        self._secrets[DEMO_RECEIVER] = secret

    def router(self) -> APIRouter:
        router = APIRouter(tags=["development"])
        dev_only = [Depends(public("embedded development webhook receiver, served on loopback only"))]

        @router.post(f"{WEBHOOKS_PATH}/{{name}}", status_code=204, summary="Receive a webhook", dependencies=dev_only)
        async def receive(name: str, request: Request) -> None:
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise Problem(413, "Payload too large", f"a webhook here carries at most {MAX_BODY_BYTES} bytes")
            headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
            secret = self._secrets.get(name)
            verified, error, payload = False, None, None
            try:
                if secret is None:
                    raise WebhookVerificationError(f"no subscription of this run delivers to {name!r}")
                payload = Webhook(secret).verify(bytes(body), headers)
                verified = True
            except WebhookVerificationError as exc:
                error = str(exc)
            if payload is None:
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = body[:500].decode("utf-8", "replace")
            self.received.append(
                {
                    "receivedAt": datetime.now(UTC).isoformat(),
                    "receiver": name,
                    "webhookId": headers.get("webhook-id"),
                    "type": payload.get("type") if isinstance(payload, dict) else None,
                    "verified": verified,
                    "verificationError": error,
                    "body": payload,
                }
            )
            if not verified:
                # What a receiver must do with a delivery it cannot verify: refuse it (notify-svc retries).
                raise Problem(401, "Signature not verified", error or "")

        @router.get(WEBHOOKS_PATH, summary="Webhooks received here (newest first)", dependencies=dev_only)
        async def caught() -> list[dict[str, Any]]:
            return list(reversed(self.received))

        return router
