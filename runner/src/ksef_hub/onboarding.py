"""An office bringing its clients onto a running platform over its HTTP API only, as an office lives it: the
consent request, the client's agreement by the e-mailed link, the owner's invitation, the activation code from the
return address, the client's KSeF token with the gateway; and the client's purchase buffer read back page by page.

Shared by the distributed journey (tests/e2e/test_distributed_journey.py) and bench/bench_platform.py, so that the
bench measures the very path the journey proves. Mail is read from the runner's catcher (``/notify/dev/mail``, on
loopback only), which both runners serve.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from platform_common.testing import wait_until

CONSENT_LINK = re.compile(r"https?://\S+/approval/consent\?token=\S+")
INVITATION_LINK = re.compile(r"https?://\S+/invitations/accept\?token=(\S+)")
CODE = re.compile(r"\b([A-HJ-NP-Z2-9]{5}-[A-HJ-NP-Z2-9]{5})\b")

# Fast polls and ticks for a platform that is watched rather than left alone (the journey, the platform bench):
# they wait for what happens, never for a fixed time. Keyed by process, as ``Supervisor(extra_env=...)`` takes them;
# the same variables configure the embedded runner, whose settings read the environment for what it does not own.
FAST: dict[str, dict[str, str]] = {
    "ksef-sim": {
        "KSEF_SIM_RATE_LIMITS": "off",
        "KSEF_SIM_PERMANENT_STORAGE_DELAY_S": "0",
        "KSEF_SIM_PERMANENT_STORAGE_JITTER_S": "0",
        "KSEF_SIM_EXPORT_PROCESSING_DELAY_S": "0",
        "KSEF_SIM_AUTH_PROCESSING_DELAY_S": "0",
    },
    "ksef-gateway": {
        "GATEWAY_MESSAGING__RELAY_POLL_INTERVAL_S": "0.1",
        "GATEWAY_KSEF__AUTH_POLL_INTERVAL_S": "0.05",
        "GATEWAY_SYNC__TICK_INTERVAL_S": "0.2",
        "GATEWAY_SYNC__EXPORT_POLL_INTERVAL_S": "0.1",
        "GATEWAY_SYNC__EXPORT_POLL_MAX_INTERVAL_S": "0.5",
        "GATEWAY_SYNC__BACKFILL_MONTHS": "2",
        "GATEWAY_BUDGET__MODE": "off",
    },
    "buffer-svc": {"BUFFER_MESSAGING__RELAY_POLL_INTERVAL_S": "0.1"},
    "approval-svc": {"APPROVAL_MESSAGING__RELAY_POLL_INTERVAL_S": "0.1"},
    "auth-svc": {"AUTH_MESSAGING__RELAY_POLL_INTERVAL_S": "0.1"},
    "notify-svc": {
        "NOTIFY_MESSAGING__RELAY_POLL_INTERVAL_S": "0.1",
        "NOTIFY_MAIL__POLL_INTERVAL_S": "0.2",
        "NOTIFY_WEBHOOKS__POLL_INTERVAL_S": "0.2",
        "NOTIFY_WEBHOOKS__RETRY_DELAYS_S": "[0.5, 1, 2, 5]",
    },
}


class RetryUnavailable(httpx.AsyncBaseTransport):
    """What a client of the platform does while a service restarts: an answer 502/503 (or a refused connection) is
    asked again after a pause (its Retry-After, at most 1 s), for up to two minutes. Safe for the journey's calls made
    while chaos runs: reads, the credential's PUT and sales POSTs under an Idempotency-Key. ``retried`` counts the
    answers asked again, so that a caller measuring latency can say how many it absorbed."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self._inner = httpx.AsyncHTTPTransport() if limits is None else httpx.AsyncHTTPTransport(limits=limits)
        self.retried = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            try:
                response = await self._inner.handle_async_request(
                    httpx.Request(request.method, request.url, headers=request.headers, content=body)
                )
                if response.status_code not in (502, 503) or asyncio.get_running_loop().time() > deadline:
                    return response
                await response.aread()
                await response.aclose()
                pause = min(float(response.headers.get("retry-after") or 0.2), 1.0)
            except httpx.ConnectError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                pause = 0.2
            self.retried += 1
            await asyncio.sleep(pause)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    # Not an ``assert``: this module is imported outside pytest too, and must not go quiet under ``python -O``.
    if response.status_code not in statuses:
        request = response.request
        raise AssertionError(f"{request.method} {request.url}: {response.status_code} {response.text}")
    return response


@dataclass
class PlatformClient:
    """The platform as an office sees it: ``http`` has the platform's URL as its base (the distributed front or the
    embedded runner); every account made here signs in with ``password``."""

    http: httpx.AsyncClient
    password: str
    # How often a mail is looked for: each look lists the catcher's whole mailbox, which many clients onboarding at
    # once would otherwise ask for in a tight loop.
    mail_interval: float = 0.05
    # The transport of each client owner's own browser (the consent page); e.g. ``RetryUnavailable`` as ``http``'s.
    browser_transport: Callable[[], httpx.AsyncBaseTransport] | None = None
    _mailbox: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _mailbox_at: float = field(default=-1e9, init=False, repr=False)
    _mailbox_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def login(self, email: str) -> dict[str, str]:
        response = _expect(await self.http.post("/auth/login", json={"email": email, "password": self.password}), 200)
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def mails(self, recipient: str, pattern: re.Pattern[str]) -> list[dict[str, Any]]:
        # One listing serves every caller looking within the same interval: clients onboarding at once share it.
        async with self._mailbox_lock:
            if time.monotonic() - self._mailbox_at >= self.mail_interval:
                self._mailbox = _expect(await self.http.get("/notify/dev/mail"), 200).json()
                self._mailbox_at = time.monotonic()
            mailbox = self._mailbox
        return [m for m in mailbox if recipient in m["to"] and pattern.search(m["text"])]

    async def mail(self, recipient: str, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        found: list[dict[str, Any]] = []

        async def arrived() -> bool:
            found[:] = await self.mails(recipient, pattern)
            return bool(found)

        await wait_until(arrived, timeout=timeout, interval=self.mail_interval, what=f"a mail to {recipient}")
        match = pattern.search(found[0]["text"])
        if match is None:
            raise AssertionError(f"the mail to {recipient} no longer matches {pattern.pattern}")
        return match

    async def connect_client(
        self,
        admin: dict[str, str],
        office_id: str,
        name: str,
        nip: str,
        *,
        owner_email: str,
        return_email: str,
        accept_invitation: bool = True,
    ) -> dict[str, str] | None:
        """Consent by the e-mailed link, the code from the return address entered: the client is active. With
        ``accept_invitation`` the owner's invitation is accepted too and the owner's bearer headers are returned
        (activation does not wait for it: an office that only fetches invoices may leave it to the client)."""
        asked = _expect(
            await self.http.post(
                f"/approval/offices/{office_id}/integrations",
                json={
                    "client_nip": nip,
                    "client_name": name,
                    "client_email": owner_email,
                    "return_email": return_email,
                    "send_sales": True,
                },
                headers=admin,
            ),
            201,
        )
        integration = asked.json()["id"]
        link = urlsplit((await self.mail(owner_email, CONSENT_LINK)).group(0))
        # The client's owner opens the link in a browser of their own: the consent form's CSRF cookie is theirs, and
        # clients agreeing at the same time must not share a cookie jar.
        transport = self.browser_transport() if self.browser_transport is not None else None
        browser = httpx.AsyncClient(
            base_url=self.http.base_url, timeout=self.http.timeout, trust_env=False, transport=transport
        )
        async with browser:
            page = _expect(await browser.get(f"{link.path}?{link.query}"), 200)
            fields = dict(re.findall(r'name="(token|csrf)" value="([^"]+)"', page.text))
            agreed = {"decision": "agree", "access_mode": "token", "lang": "pl"}
            _expect(await browser.post(link.path, data=fields | agreed), 200)
        owner: dict[str, str] | None = None
        if accept_invitation:
            invitation = (await self.mail(owner_email, INVITATION_LINK)).group(1)
            _expect(
                await self.http.post("/auth/invitations/accept", json={"token": invitation, "password": self.password}),
                200,
            )
        code = (await self.mail(return_email, CODE)).group(1)
        activation = f"/approval/integrations/{integration}/activation"
        activated = _expect(await self.http.post(activation, json={"code": code}, headers=admin), 200)
        if activated.json()["state"] != "active":
            raise AssertionError(f"{nip}: activation left the integration {activated.json()['state']}")
        if accept_invitation:
            owner = await self.login(owner_email)
        return owner

    async def register_token(self, admin: dict[str, str], nip: str, token: str, timeout: float = 120) -> None:
        """The client's KSeF token with the gateway (its first sync starts at once)."""
        registered: list[httpx.Response] = []

        async def accepted() -> bool:
            # 404 until the gateway's replicas have consumed integration.activated.
            response = await self.http.put(
                f"/gateway/clients/{nip}/credential", json={"kind": "ksef_token", "token": token}, headers=admin
            )
            registered[:] = [response]
            return response.status_code != 404

        await wait_until(accepted, timeout=timeout, what=f"the gateway to accept {nip}'s token")
        _expect(registered[0], 200, 201)

    async def entries(self, nip: str, who: dict[str, str], **query: Any) -> list[dict[str, Any]]:
        """Every entry of the client's purchase buffer, page by page."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params = {"limit": 500, **query} | ({"cursor": cursor} if cursor else {})
            page = _expect(await self.http.get(f"/buffer/clients/{nip}/purchases", params=params, headers=who), 200)
            items += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if not cursor:
                return items
