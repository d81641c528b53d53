"""The webhook API over HTTP, as an ERP vendor's integrator meets it, on SQLite and PostgreSQL: a subscription's
secret is shown once and never again, a test event reaches a real receiver signed, every attempt is in the delivery
log with its status, latency and an excerpt of the answer, the metrics count it, failed deliveries replay, and
everything is the organisation's own: another one gets 404, a token without ``webhooks.manage`` 403, a target inside
the network or a body too large a problem document."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from notify_svc.db import webhook_subscription
from notify_svc.main import create_app
from notify_svc.settings import MailDeliverySettings, NotifySettings, SmtpSettings, WebhookSettings
from notify_svc.webhooks.sender import WebhookSender
from notify_svc.wiring import webhook_sender
from platform_common.auth import Authenticator
from platform_common.messaging.transport import InProcessBus
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, HttpLimitsSettings, MessagingSettings
from platform_common.testing.auth import FakeClock, TokenFactory
from platform_common.testing.http_receiver import Received, Receiver, Reply
from platform_common.testing.smtp import SmtpCatcher

PRIVATE, _PUBLIC = generate_keypair()
ERP_ORG, OTHER_ORG = uuid.uuid4(), uuid.uuid4()
PROBLEM = "application/problem+json"


@dataclass
class Api:
    http: httpx.AsyncClient
    tokens: TokenFactory
    sender: WebhookSender
    runtime: Any

    def headers(self, org: uuid.UUID = ERP_ORG, perms: tuple[str, ...] = ("webhooks.manage",)) -> dict[str, str]:
        token = self.tokens.mint(sub="integrator", org=str(org), org_kind="client", perms=perms, nips=["5260250274"])
        return {"Authorization": f"Bearer {token}"}

    async def subscribe(self, url: str, **body: Any) -> dict[str, Any]:
        payload = {"url": url, "event_types": ["*"], "contact_email": "erp@example.com", **body}
        r = await self.http.post("/webhooks/subscriptions", json=payload, headers=self.headers())
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def until_attempts(self, count: int) -> None:
        async with asyncio.timeout(30):
            await self.sender.wait_for_attempts(count)

    async def until(self, check: Callable[[], Awaitable[bool]]) -> None:
        """Attempt by attempt until ``check`` holds."""
        async with asyncio.timeout(30):
            while True:
                # Counted before the check: an attempt that ends while the check reads is not waited for again.
                ended = self.sender.attempts_ended
                if await check():
                    return
                await self.sender.wait_for_attempts(ended + 1)


@pytest.fixture
def catcher() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.close()


@pytest.fixture
async def api(db_url: str, catcher: SmtpCatcher) -> AsyncIterator[Api]:
    clock = FakeClock()
    tokens = TokenFactory(clock=clock)
    settings = NotifySettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        seal_private_key=SecretStr(PRIVATE),
        smtp=SmtpSettings(host="127.0.0.1", port=catcher.port, timeout_s=5),
        mail=MailDeliverySettings(poll_interval_s=0.5),
        webhooks=WebhookSettings(
            require_https=False,
            allowed_networks=["127.0.0.0/8"],
            retry_delays_s=[0.02, 0.05],
            retry_jitter=0.0,
            poll_interval_s=0.5,
            # A delivery still failing 0.3 s after its first attempt has failed and its subscription is disabled.
            give_up_after_s=0.3,
        ),
        http_limits=HttpLimitsSettings(max_body_bytes=16_384),
        auth=tokens.settings(),
    )
    app = create_app(settings, bus=InProcessBus(), migrate_on_start=True)
    authenticator: Authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = clock, tokens.transport()
    transport = httpx.ASGITransport(app=app)
    async with (
        LifespanManager(app, startup_timeout=60),
        httpx.AsyncClient(transport=transport, base_url="http://n") as http,
    ):
        runtime = app.state.runtime
        yield Api(http=http, tokens=tokens, sender=webhook_sender(runtime), runtime=runtime)


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = dict(r.json())
    assert body["status"] == status and body["title"]
    return body


async def test_the_secret_is_shown_once_and_a_test_event_arrives_signed_and_logged(
    api: Api, receiver: Receiver
) -> None:
    created = await api.subscribe(f"http://127.0.0.1:{receiver.port}/erp", description="Symfonia")
    secret = created["secret"]
    assert secret.startswith("whsec_")

    # Never again: not in the list, not in the subscription, not in the database.
    listed = await api.http.get("/webhooks/subscriptions", headers=api.headers())
    one = await api.http.get(f"/webhooks/subscriptions/{created['id']}", headers=api.headers())
    assert listed.status_code == 200 and one.status_code == 200
    assert [s["id"] for s in listed.json()] == [created["id"]]
    assert secret not in listed.text and secret not in one.text and "secret" not in one.json()
    async with api.runtime.db.sessionmaker() as session:
        sealed = (await session.execute(select(webhook_subscription.c.secret_sealed))).scalar_one()
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed

    r = await api.http.post(
        f"/webhooks/subscriptions/{created['id']}/test", json={"event_type": "month.approved"}, headers=api.headers()
    )
    assert r.status_code == 202, r.text
    delivery = r.json()
    await api.until_attempts(1)
    (request,) = receiver.requests
    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    event = Webhook(secret).verify(request.body, headers)
    assert event["type"] == "month.approved" and event["test"] is True
    assert headers["webhook-id"] == delivery["webhook_id"]

    detail = await api.http.get(f"/webhooks/deliveries/{delivery['id']}", headers=api.headers())
    assert detail.status_code == 200, detail.text
    assert detail.json()["status"] == "delivered"
    (attempt,) = detail.json()["attempt_log"]
    assert attempt["ok"] is True and attempt["status_code"] == 200
    assert attempt["latency_ms"] >= 0 and attempt["response_excerpt"] == "ok"

    metrics = await api.http.get(f"/webhooks/subscriptions/{created['id']}/metrics", headers=api.headers())
    assert metrics.status_code == 200, metrics.text
    m = metrics.json()
    assert (m["attempts"], m["successes"], m["success_rate"], m["backlog"]) == (1, 1, 1.0, 0)
    assert m["latency_p95_ms"] is not None


async def test_failed_deliveries_replay_through_the_api_and_a_rotation_shows_the_new_secret_once(
    api: Api, receiver: Receiver
) -> None:
    created = await api.subscribe(f"http://127.0.0.1:{receiver.port}/erp")
    sid = created["id"]
    receiver.reply = lambda _r: Reply(503, b"maintenance")
    r = await api.http.post(f"/webhooks/subscriptions/{sid}/test", headers=api.headers())
    assert r.status_code == 202, r.text
    delivery_path = f"/webhooks/deliveries/{r.json()['id']}"

    async def failed() -> bool:
        return bool((await api.http.get(delivery_path, headers=api.headers())).json()["status"] == "failed")

    await api.until(failed)
    listed = await api.http.get(f"/webhooks/subscriptions/{sid}/deliveries?status=failed", headers=api.headers())
    assert [d["id"] for d in listed.json()] == [r.json()["id"]]
    log = (await api.http.get(delivery_path, headers=api.headers())).json()
    assert len(log["attempt_log"]) >= 2
    assert {(a["status_code"], a["response_excerpt"], a["ok"]) for a in log["attempt_log"]} == {
        (503, "maintenance", False)
    }
    attempts = len(log["attempt_log"])
    # Failing for the whole window disabled the subscription; its owner turns it back on.
    sub = (await api.http.get(f"/webhooks/subscriptions/{sid}", headers=api.headers())).json()
    assert sub["enabled"] is False and "whole retry window" in sub["disabled_reason"]
    on = await api.http.patch(f"/webhooks/subscriptions/{sid}", json={"enabled": True}, headers=api.headers())
    assert on.status_code == 200 and on.json()["enabled"] is True and on.json()["disabled_reason"] is None

    rotated = await api.http.post(
        f"/webhooks/subscriptions/{sid}/rotate-secret", json={"overlap_hours": 0}, headers=api.headers()
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret != created["secret"]

    receiver.reply = lambda _r: Reply(204)
    replay = await api.http.post(f"/webhooks/subscriptions/{sid}/replay", json={"failed": True}, headers=api.headers())
    assert replay.status_code == 202 and replay.json() == {"queued": 1}
    await api.until_attempts(attempts + 1)
    last: Received = receiver.requests[-1]
    headers = {k: v for k, v in last.headers.items() if k.startswith("webhook-")}
    assert Webhook(new_secret).verify(last.body, headers)["test"] is True
    assert headers["webhook-id"] == r.json()["webhook_id"]
    again = (await api.http.get(f"/webhooks/deliveries/{r.json()['id']}", headers=api.headers())).json()
    assert again["status"] == "delivered" and again["attempts"] == attempts + 1


async def test_subscriptions_belong_to_their_organisation_and_need_the_permission(api: Api, receiver: Receiver) -> None:
    created = await api.subscribe(f"http://127.0.0.1:{receiver.port}/erp")
    sid = created["id"]
    other = api.headers(OTHER_ORG)
    for method, path in [
        ("GET", f"/webhooks/subscriptions/{sid}"),
        ("PATCH", f"/webhooks/subscriptions/{sid}"),
        ("DELETE", f"/webhooks/subscriptions/{sid}"),
        ("POST", f"/webhooks/subscriptions/{sid}/test"),
        ("POST", f"/webhooks/subscriptions/{sid}/rotate-secret"),
        ("GET", f"/webhooks/subscriptions/{sid}/deliveries"),
        ("GET", f"/webhooks/subscriptions/{sid}/metrics"),
    ]:
        body = {"enabled": False} if method == "PATCH" else None
        _problem(await api.http.request(method, path, json=body, headers=other), 404)
    assert (await api.http.get("/webhooks/subscriptions", headers=other)).json() == []

    reader = api.headers(perms=("audit.read",))
    _problem(await api.http.get("/webhooks/subscriptions", headers=reader), 403)
    _problem(await api.http.get("/webhooks/subscriptions"), 401)

    # Disabled: a test event is refused; enabled again it is accepted. Deleted: gone.
    off = await api.http.patch(f"/webhooks/subscriptions/{sid}", json={"enabled": False}, headers=api.headers())
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert (await api.http.delete(f"/webhooks/subscriptions/{sid}", headers=api.headers())).status_code == 204
    _problem(await api.http.get(f"/webhooks/subscriptions/{sid}", headers=api.headers()), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://10.0.0.5/hook"},
        {"url": "http://[::ffff:169.254.169.254]/latest/meta-data"},
        {"url": "http://metadata.google.internal/"},
        {"url": "ftp://127.0.0.1/hook"},
        {"event_types": ["invoice.teleported"]},
        {"client_nips": ["123"]},
    ],
)
async def test_bad_subscriptions_are_problems_and_nothing_is_stored(
    api: Api, receiver: Receiver, body: dict[str, Any]
) -> None:
    payload = {
        "url": f"http://127.0.0.1:{receiver.port}/erp",
        "event_types": ["invoice.fetched"],
        "contact_email": "erp@example.com",
        **body,
    }
    problem = _problem(await api.http.post("/webhooks/subscriptions", json=payload, headers=api.headers()), 422)
    assert problem["detail"]
    assert (await api.http.get("/webhooks/subscriptions", headers=api.headers())).json() == []
    assert receiver.connections == 0


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed(api: Api) -> None:
    huge = {"url": "https://erp.example/hook", "event_types": ["*"], "contact_email": "erp@example.com"}
    huge["description"] = "x" * 100_000
    _problem(await api.http.post("/webhooks/subscriptions", json=huge, headers=api.headers()), 413)


async def test_the_catalogue_is_public() -> None:
    # Served without a token: a receiver's developer reads it before having an account.
    app = create_app(NotifySettings(messaging=MessagingSettings(transport="inprocess")), bus=InProcessBus())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as http:
        types = await http.get("/webhooks/event-types")
        spec = await http.get("/webhooks/asyncapi.json")
    assert types.status_code == 200 and spec.status_code == 200
    names = {t["type"] for t in types.json()}
    assert {"invoice.fetched", "month.approved", "webhook.subscription_disabled"} <= names
    assert spec.json()["asyncapi"].startswith("3.")
