"""Webhooks end to end inside notify-svc, over SQLite and PostgreSQL: public events arrive through the dispatcher,
fan out to the subscriptions that may receive them, and reach a real HTTP receiver on loopback, where every
delivery is checked with the ``standardwebhooks`` verifier (an independent implementation), also across a secret
rotation. A receiver that is down for a while gets everything once it is back, in order per client, duplicates only
under the same ``webhook-id``; one failing for the whole window has its subscription disabled, its contact mailed
and the organisation's other subscriptions told. Replays by delivery, by subscription and by time range; a revoked
office hears nothing more."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notify_svc.main import DEFINITION
from notify_svc.settings import MailDeliverySettings, NotifySettings, SmtpSettings, WebhookSettings
from notify_svc.webhooks.domain import DeliveryStatus
from notify_svc.webhooks.repository import WebhookRepository
from notify_svc.webhooks.sender import WebhookSender
from notify_svc.webhooks.service import NewSubscription, SubscriptionChanges, WebhookSubscriptions
from notify_svc.wiring import webhook_sender, webhook_subscriptions
from platform_common.auth.principal import Principal
from platform_common.contracts import InvoiceFetched, Party
from platform_common.contracts.integrations import INTEGRATION_TOPIC, IntegrationActivated, IntegrationRevoked
from platform_common.messaging.envelope import Envelope, EventContract
from platform_common.problems import Problem
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, MessagingSettings, TelemetrySettings
from platform_common.telemetry import Telemetry, setup_telemetry
from platform_common.testing.http_receiver import Received, Receiver, Reply
from platform_common.testing.metrics import Scrape, parse
from platform_common.testing.smtp import SmtpCatcher

PRIVATE, _PUBLIC = generate_keypair()
CLIENT_A = "5260250274"
CLIENT_B = "7010002137"
OFFICE = uuid.uuid4()


def _settings(db_url: str, smtp_port: int, **hooks: Any) -> NotifySettings:
    return NotifySettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        seal_private_key=SecretStr(PRIVATE),
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, timeout_s=5),
        mail=MailDeliverySettings(retry_base_s=0.02, retry_max_s=0.1, poll_interval_s=0.5),
        # Attempts milliseconds apart: the tests wait for what arrives, never for a fixed time.
        webhooks=WebhookSettings(
            **{
                "require_https": False,
                "allowed_networks": ["127.0.0.0/8"],
                "retry_delays_s": [0.02, 0.05],
                "retry_jitter": 0.0,
                "poll_interval_s": 0.5,
                "read_timeout_s": 5.0,
                "give_up_after_s": 60.0,
                "api_base_url": "https://hub.example",
                **hooks,
            }
        ),
    )


@pytest.fixture
def catcher() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    running = await Receiver().start()
    yield running
    await running.close()


Runtime = Callable[..., Awaitable[ServiceRuntime]]


@pytest.fixture
async def runtime(db_url: str, catcher: SmtpCatcher) -> AsyncIterator[Runtime]:
    started: list[ServiceRuntime] = []

    async def start(telemetry: Telemetry | None = None, **hooks: Any) -> ServiceRuntime:
        rt = ServiceRuntime(
            DEFINITION, _settings(db_url, catcher.port, **hooks), telemetry=telemetry, migrate_on_start=True
        )
        await rt.start()
        started.append(rt)
        return rt

    yield start
    for rt in started:
        await rt.stop()


def _client(nip: str = CLIENT_A) -> Principal:
    return Principal(
        id="user-client",
        ptype="user",
        org=uuid.uuid5(uuid.NAMESPACE_URL, nip),
        org_kind="client",
        perms=frozenset({"webhooks.manage"}),
        nips=frozenset({nip}),
    )


def _office() -> Principal:
    return Principal(
        id="user-office",
        ptype="user",
        org=OFFICE,
        org_kind="office",
        perms=frozenset({"webhooks.manage"}),
        nips=frozenset({"*"}),
    )


_counter = iter(range(1, 10_000))


def _invoice(nip: str = CLIENT_A) -> tuple[Envelope, str]:
    n = next(_counter)
    ksef_number = f"{nip}-20261204-{n:012X}-7A"
    event = InvoiceFetched(
        ksef_number=ksef_number,
        client_nip=nip,
        seller=Party(nip="1111111111", name="Seller"),
        buyer=Party(nip=nip, name="Buyer"),
        p_1=date(2026, 12, 3),
        p_2=f"FV/{n}",
        net_amount=Decimal("100.00"),
        vat_amount=Decimal("23.00"),
        gross_amount=Decimal("123.00"),
        currency="PLN",
        invoice_type="VAT",
        acquisition_date=datetime.now(UTC),
        invoice_hash="n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
        xml_ref=f"gateway:{nip}/{ksef_number}",
    )
    return Envelope.wrap(event, producer="ksef-gateway", client_nip=nip), ksef_number


async def _publish(rt: ServiceRuntime, envelope: Envelope, topic: str = InvoiceFetched.topic) -> None:
    await rt.dispatcher.deliver(topic, envelope.key, envelope.to_bytes(), source="test")


def _integration(contract: type[IntegrationActivated | IntegrationRevoked], revision: int, state: str) -> Envelope:
    event: EventContract = contract(
        integration_id=uuid.uuid5(OFFICE, CLIENT_A),
        revision=revision,
        state=state,
        office_id=OFFICE,
        office_nip="9542751368",
        office_name="Biuro",
        client_nip=CLIENT_A,
        changed_at=datetime.now(UTC),
        changed_by_side="client",
    )
    return Envelope.wrap(event, producer="approval-svc", client_nip=CLIENT_A, tenant=str(OFFICE))


async def _until(sender: WebhookSender, check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Wait attempt by attempt until ``check`` holds (each ended attempt is a chance for it to)."""
    async with asyncio.timeout(timeout):
        while True:
            # Counted before the check: an attempt that ends while the check reads is not waited for again.
            ended = sender.attempts_ended
            if await check():
                return
            await sender.wait_for_attempts(ended + 1)


async def _statuses(rt: ServiceRuntime, subscription_id: uuid.UUID) -> list[str]:
    async with rt.db.sessionmaker() as session:
        found = await WebhookRepository(session).deliveries_of(
            subscription_id, status=None, before_seq=None, limit=1000
        )
    return [d.status for d in found]


def _all_delivered(rt: ServiceRuntime, subscription_id: uuid.UUID, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        statuses = await _statuses(rt, subscription_id)
        return len(statuses) == count and all(s == DeliveryStatus.DELIVERED for s in statuses)

    return check


def _headers(request: Received) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.startswith("webhook-")}


async def _subscribe(
    service: WebhookSubscriptions, principal: Principal, receiver: Receiver, *types: str, path: str = "/hook"
) -> tuple[uuid.UUID, str]:
    created, secret = await service.create(
        principal,
        NewSubscription(
            url=f"http://127.0.0.1:{receiver.port}{path}",
            event_types=list(types) or ["invoice.fetched"],
            contact_email="erp@example.com",
            language="en",
        ),
    )
    return created.id, secret


async def test_every_delivery_verifies_with_the_standard_webhooks_verifier_across_a_rotation(
    runtime: Runtime, receiver: Receiver
) -> None:
    rt = await runtime()
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    sid, first = await _subscribe(service, _client(), receiver)

    envelope, ksef_number = _invoice()
    await _publish(rt, envelope)
    await _until(sender, _all_delivered(rt, sid, 1))
    request = receiver.requests[-1]
    body = Webhook(first).verify(request.body, _headers(request))
    assert body["type"] == "invoice.fetched" and body["data"]["ksef_number"] == ksef_number
    assert "xml_ref" not in body["data"]  # published shape only; the XML is behind the link
    assert body["links"]["api"] == f"https://hub.example/gateway/clients/{CLIENT_A}/invoices/{ksef_number}/xml"

    # Rotated with an overlap: both signatures are sent, either secret verifies.
    _sub, second = await service.rotate_secret(_client(), sid, timedelta(hours=1))
    assert second != first
    await _publish(rt, _invoice()[0])
    await _until(sender, _all_delivered(rt, sid, 2))
    request = receiver.requests[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    Webhook(first).verify(request.body, _headers(request))
    Webhook(second).verify(request.body, _headers(request))

    # Rotated without an overlap: the old secret no longer verifies anything.
    _sub, third = await service.rotate_secret(_client(), sid, timedelta(0))
    await _publish(rt, _invoice()[0])
    await _until(sender, _all_delivered(rt, sid, 3))
    request = receiver.requests[-1]
    Webhook(third).verify(request.body, _headers(request))
    with pytest.raises(WebhookVerificationError):
        Webhook(second).verify(request.body, _headers(request))

    # The secret is stored encrypted, never as given.
    async with rt.db.sessionmaker() as session:
        held = await WebhookRepository(session).subscription(sid)
    assert held is not None and third not in held.secret_sealed and third[6:] not in held.secret_sealed


async def test_a_receiver_down_for_a_while_gets_everything_in_order_per_client(
    runtime: Runtime, receiver: Receiver
) -> None:
    rt = await runtime()
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    sid, secret = await _subscribe(service, _client(CLIENT_A), receiver)
    sid_b, secret_b = await _subscribe(service, _client(CLIENT_B), receiver)
    down = True
    receiver.reply = lambda _r: Reply(503, b"maintenance") if down else Reply(204)

    sent: dict[str, list[str]] = {CLIENT_A: [], CLIENT_B: []}
    for nip in (CLIENT_A, CLIENT_B, CLIENT_A, CLIENT_A, CLIENT_B, CLIENT_A):
        envelope, number = _invoice(nip)
        sent[nip].append(number)
        await _publish(rt, envelope)
    # A redelivered event (the broker's at-least-once) queues nothing twice.
    await _publish(rt, envelope)

    await sender.wait_for_attempts(6)  # failures, while the heads of both clients retry
    assert all(r.headers.get("webhook-id") for r in receiver.requests)
    down = False
    await _until(sender, _all_delivered(rt, sid, 4))
    await _until(sender, _all_delivered(rt, sid_b, 2))

    accepted: dict[str, list[str]] = {CLIENT_A: [], CLIENT_B: []}
    by_id: dict[str, bytes] = {}
    for request in receiver.requests:
        headers = _headers(request)
        # Every attempt of one delivery carries the same id and the same body: duplicates deduplicate.
        assert by_id.setdefault(headers["webhook-id"], request.body) == request.body
        key = secret if json.loads(request.body)["data"]["client_nip"] == CLIENT_A else secret_b
        data = Webhook(key).verify(request.body, headers)["data"]
        accepted[data["client_nip"]].append(data["ksef_number"])
    # Per client, the first arrival of each event is in the order the events were published.
    for nip, numbers in sent.items():
        first_seen = list(dict.fromkeys(accepted[nip]))
        assert first_seen == numbers
    assert len(by_id) == 6


async def test_a_subscription_failing_for_the_whole_window_is_disabled_mailed_and_announced(
    runtime: Runtime, receiver: Receiver, catcher: SmtpCatcher
) -> None:
    rt = await runtime(give_up_after_s=0.3)
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    failing = await Receiver(reply=lambda _r: Reply(500, b"broken")).start()
    try:
        sid, _secret = await _subscribe(service, _client(), failing)
        watcher, watcher_secret = await _subscribe(service, _client(), receiver, "webhook.subscription_disabled")
        await _publish(rt, _invoice()[0])

        async def disabled() -> bool:
            return not (await service.get(_client(), sid)).enabled

        await _until(sender, disabled)
        assert await _statuses(rt, sid) == [DeliveryStatus.FAILED]
        # The operators' per-client view counts the dead letter under its client, with when it last failed.
        (health,) = [h for h in await service.health_by_client(100) if h.client_nip == CLIENT_A]
        assert (health.failed, health.retrying, health.backlog) == (1, 0, 0)
        assert health.last_failure_at is not None and health.last_failure_at.tzinfo is not None
        mails = await catcher.wait_for_mails(1)
        assert mails[0].message["To"] == "erp@example.com" and "disabled" in mails[0].message["Subject"]
        # The organisation's other subscription hears of it, through the outbox and the fan-out.
        await _until(sender, _all_delivered(rt, watcher, 1))
        notice = Webhook(watcher_secret).verify(receiver.requests[-1].body, _headers(receiver.requests[-1]))
        assert notice["type"] == "webhook.subscription_disabled"
        assert notice["data"]["subscription_id"] == str(sid) and notice["data"]["attempts"] >= 2

        # Disabled: a new event is not queued for it. Fixed and replayed: the dead letter goes out.
        await _publish(rt, _invoice()[0])
        assert len(await _statuses(rt, sid)) == 1
        failing.reply = lambda _r: Reply(200, b"ok")
        await service.update(_client(), sid, SubscriptionChanges(enabled=True))
        assert await service.replay(_client(), sid, failed=True, event_types=None, start=None, end=None) == 1
        await _until(sender, _all_delivered(rt, sid, 1))
        assert CLIENT_A not in {h.client_nip for h in await service.health_by_client(100)}, "delivered: no failure"
    finally:
        await failing.close()


async def test_replay_by_delivery_by_subscription_and_by_time_range(runtime: Runtime, receiver: Receiver) -> None:
    rt = await runtime()
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    sid, _secret = await _subscribe(service, _client(), receiver)
    before = datetime.now(UTC) - timedelta(seconds=1)
    numbers = []
    for _ in range(3):
        envelope, number = _invoice()
        numbers.append(number)
        await _publish(rt, envelope)
    await _until(sender, _all_delivered(rt, sid, 3))

    # One delivery again: the same webhook-id.
    async with rt.db.sessionmaker() as session:
        first = (await WebhookRepository(session).deliveries_of(sid, status=None, before_seq=None, limit=10))[-1]
    seen = len(receiver.requests)
    assert await service.replay_delivery(_client(), first.id) == 1
    await _until(sender, _all_delivered(rt, sid, 3))
    await _until(sender, lambda: _true_when(len(receiver.requests) > seen))
    assert receiver.requests[-1].headers["webhook-id"] == f"msg_{first.id.hex}"

    # A subscription made after the events gets them by time range, only of the types asked for.
    late, late_secret = await _subscribe(
        service, _client(), receiver, "invoice.fetched", "month.approved", path="/late"
    )
    queued = await service.replay(
        _client(), late, failed=False, event_types=["invoice.fetched"], start=before, end=datetime.now(UTC)
    )
    assert queued == 3
    await _until(sender, _all_delivered(rt, late, 3))
    late_numbers = [
        Webhook(late_secret).verify(r.body, _headers(r))["data"]["ksef_number"]
        for r in receiver.requests
        if r.target == "/late"
    ]
    assert late_numbers == numbers
    # Another organisation's subscription is not there for it.
    with pytest.raises(Problem) as refused:
        await service.replay_delivery(_client(CLIENT_B), first.id)
    assert refused.value.status == 404


async def _true_when(value: bool) -> bool:
    return value


async def test_an_office_hears_of_its_client_only_while_the_integration_is_active(
    runtime: Runtime, receiver: Receiver
) -> None:
    rt = await runtime()
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    await _publish(rt, _integration(IntegrationActivated, 1, "active"), INTEGRATION_TOPIC)
    sid, secret = await _subscribe(service, _office(), receiver, "invoice.fetched", "integration.revoked")
    await _publish(rt, _invoice(CLIENT_A)[0])
    await _publish(rt, _invoice(CLIENT_B)[0])  # not the office's client: nothing
    await _until(sender, _all_delivered(rt, sid, 1))

    await _publish(rt, _integration(IntegrationRevoked, 2, "revoked"), INTEGRATION_TOPIC)
    await _publish(rt, _invoice(CLIENT_A)[0])
    # The revoke itself reaches the office (it must learn of it); the invoice after it does not.
    await _until(sender, _all_delivered(rt, sid, 2))
    last = Webhook(secret).verify(receiver.requests[-1].body, _headers(receiver.requests[-1]))
    assert last["type"] == "integration.revoked"
    assert len(receiver.requests) == 2


async def test_targets_inside_the_network_are_refused_when_subscribing(runtime: Runtime) -> None:
    rt = await runtime(allowed_networks=[])
    service = webhook_subscriptions(rt)
    for url in ("http://10.0.0.5/hook", "http://[::ffff:169.254.169.254]/", "http://127.0.0.1:9/", "http://0x7f.1/"):
        with pytest.raises(Problem) as refused:
            await service.create(
                _client(), NewSubscription(url=url, event_types=["invoice.fetched"], contact_email="erp@example.com")
            )
        assert refused.value.status == 422 and refused.value.code == "target-refused"
    with pytest.raises(Problem) as unknown:
        await service.create(
            _client(),
            NewSubscription(url="http://erp.example/", event_types=["user.invited"], contact_email="erp@example.com"),
        )
    assert unknown.value.code == "unknown-event"  # an event that only mails one person is not public


async def test_attempts_latency_and_backlog_are_opentelemetry_metrics_per_subscription(
    runtime: Runtime, receiver: Receiver
) -> None:
    reader = InMemoryMetricReader()
    telemetry = setup_telemetry(
        "notify-svc", TelemetrySettings(), span_exporter=InMemorySpanExporter(), metric_reader=reader
    )
    rt = await runtime(telemetry=telemetry)
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    receiver.reply = lambda r: Reply(503) if r.target == "/down" else Reply(200, b"ok")
    up, _ = await _subscribe(service, _client(), receiver, path="/up")
    down, _ = await _subscribe(service, _client(), receiver, path="/down")
    await _publish(rt, _invoice()[0])

    async def seen() -> bool:
        statuses = await _statuses(rt, down)
        return await _all_delivered(rt, up, 1)() and len(statuses) == 1 and sender.attempts_ended >= 3

    await _until(sender, seen)
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    attempts = {(p.attributes["subscription_id"], p.attributes["outcome"]): p.value for p in points["webhook.attempts"]}
    assert attempts[(str(up), "delivered")] == 1
    assert attempts[(str(down), "retry")] >= 2
    durations = {p.attributes["subscription_id"]: p.count for p in points["webhook.attempt.duration"]}
    assert durations[str(up)] == 1 and durations[str(down)] >= 2
    backlog = {p.attributes["subscription_id"]: p.value for p in points["webhook.backlog"]}
    assert backlog.get(str(down)) == 1 and backlog.get(str(up), 0) == 0


async def test_failing_deliveries_per_client_are_scraped_gauges(runtime: Runtime) -> None:
    telemetry = setup_telemetry("notify-svc", TelemetrySettings())
    registry = telemetry.metrics_registry
    assert registry is not None
    # Long enough a window that the retrying state is seen between two scrapes, short enough to end in the test.
    rt = await runtime(telemetry=telemetry, give_up_after_s=4)
    service, sender = webhook_subscriptions(rt), webhook_sender(rt)
    failing = await Receiver(reply=lambda _r: Reply(500, b"broken")).start()

    async def scraped() -> Scrape:
        await rt.gauges.refresh()
        return parse(generate_latest(registry).decode())

    try:
        await _subscribe(service, _client(), failing)
        await _publish(rt, _invoice()[0])

        async def retrying() -> bool:
            return (await scraped()).value("ksef_hub_webhooks_retrying", client_nip=CLIENT_A) == 1

        await _until(sender, retrying)

        async def given_up() -> bool:
            seen = await scraped()
            return seen.value("ksef_hub_webhooks_given_up", client_nip=CLIENT_A) == 1 and (
                seen.value("ksef_hub_webhooks_retrying", client_nip=CLIENT_A) is None
            )

        await _until(sender, given_up)
        assert (await scraped()).value("ksef_hub_webhooks_given_up", client_nip=CLIENT_B) is None
    finally:
        await failing.close()
