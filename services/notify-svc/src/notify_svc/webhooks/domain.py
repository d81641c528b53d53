"""Rules of webhook delivery, without I/O: who receives an event, the message id, the body, the signatures, the
retry schedule.

Delivery semantics (docs/webhooks/README.md is the receivers' version): at least once. A delivery's message id is
derived from the subscription and the event, so every attempt and every replay of one event to one subscription
carries the same ``webhook-id`` and a receiver deduplicates on it. Order: a subscription's deliveries about one
client are attempted one at a time in the order notify-svc received the events; a failing one holds back only the
later ones of its client.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from standardwebhooks.webhooks import Webhook

from platform_common.contracts.public import PUBLIC_EVENTS

# Standard Webhooks' spelling: its libraries read the base64 key after it.
SECRET_PREFIX = "whsec_"  # noqa: S105  # a prefix, not a secret
ALL_EVENTS = "*"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its turn, its next attempt, or its subscription to be enabled
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # the retry window passed without a 2xx: a dead letter, replayable
    CANCELLED = "cancelled"  # the organisation may no longer read the client it concerns


class OrganisationKind(StrEnum):
    OFFICE = "office"
    CLIENT = "client"


def new_secret() -> str:
    """192 random bits, as ``whsec_<base64>`` (what the ``standardwebhooks`` verifiers take as they are)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def delivery_id(subscription_id: uuid.UUID, event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(subscription_id, str(event_id))


def message_id(delivery: uuid.UUID) -> str:
    return f"msg_{delivery.hex}"


@dataclass(frozen=True)
class ReceivedEvent:
    """A public event as notify-svc keeps it: the published data only."""

    id: uuid.UUID
    event_type: str
    event_version: int
    occurred_at: datetime
    client_nip: str | None
    office_id: uuid.UUID | None
    organisation_id: uuid.UUID | None
    data: Mapping[str, Any]
    link: str | None = None
    test: bool = False


@dataclass(frozen=True)
class SubscriptionScope:
    """What decides whether a subscription receives an event."""

    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_kind: str
    organisation_nips: frozenset[str]
    event_types: frozenset[str]
    client_nips: frozenset[str] | None  # None: every client the organisation may read

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.event_types or event_type in self.event_types


def needs_live_access(scope: SubscriptionScope, event: ReceivedEvent) -> bool:
    """Whether the answer depends on the office reading the client now (asked of the client-access projection)."""
    public = PUBLIC_EVENTS.get(event.event_type)
    return (
        public is not None
        and public.audience == "client"
        and scope.organisation_kind == OrganisationKind.OFFICE
        and event.client_nip is not None
    )


def may_receive(scope: SubscriptionScope, event: ReceivedEvent, *, office_reads_client: bool) -> bool:
    """Is this event the subscription's business? Asked when the event arrives and again before every attempt
    (``office_reads_client`` then comes from the live projection: a revoked office hears nothing more)."""
    public = PUBLIC_EVENTS.get(event.event_type)
    if public is None or not scope.wants(event.event_type):
        return False
    if event.client_nip is not None and scope.client_nips is not None and event.client_nip not in scope.client_nips:
        return False
    own_client = scope.organisation_kind == OrganisationKind.CLIENT and event.client_nip in scope.organisation_nips
    if public.audience == "platform":
        return True
    if public.audience == "organisation":
        return event.organisation_id == scope.organisation_id and event.data.get("subscription_id") != str(scope.id)
    if public.audience == "office":
        # The office named by an integration change hears of it even when it can no longer read the client: that
        # is how it learns of a revoke.
        return own_client or (
            scope.organisation_kind == OrganisationKind.OFFICE and event.office_id == scope.organisation_id
        )
    return own_client or (scope.organisation_kind == OrganisationKind.OFFICE and office_reads_client)


def webhook_body(event: ReceivedEvent, *, api_base_url: str) -> bytes:
    """The JSON body (Standard Webhooks' ``type``/``timestamp``/``data`` shape); bytes, because the signature is
    over exactly these bytes."""
    body: dict[str, Any] = {
        "type": event.event_type,
        "event_version": event.event_version,
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": dict(event.data) | ({"client_nip": event.client_nip} if event.client_nip else {}),
    }
    if event.link:
        body["links"] = {"api": api_base_url.rstrip("/") + event.link}
    if event.test:
        body["test"] = True
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def signature_header(signing_secrets: Sequence[str], msg_id: str, timestamp: datetime, body: bytes) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret, space-separated (both during a rotation's overlap),
    made by the ``standardwebhooks`` library itself."""
    return " ".join(Webhook(s).sign(msg_id, timestamp, body.decode()) for s in signing_secrets)


def webhook_headers(signing_secrets: Sequence[str], msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature_header(signing_secrets, msg_id, timestamp, body),
    }


@dataclass(frozen=True)
class RetrySchedule:
    """Waits between attempts (the last repeated), each jittered by ±``jitter``, within ``give_up_after`` of the
    window's start (the first attempt, or the last replay or re-enable)."""

    delays: tuple[timedelta, ...]
    jitter: float
    give_up_after: timedelta

    def next_attempt_at(self, now: datetime, attempts_in_window: int, rng: random.Random | None = None) -> datetime:
        base = self.delays[min(max(attempts_in_window, 1), len(self.delays)) - 1]
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return now + base * (1 + spread)

    def exhausted(self, window_started_at: datetime, now: datetime) -> bool:
        return now - window_started_at >= self.give_up_after


def excerpt(text: str | None, limit: int = 500) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"
