"""The operators' messaging endpoints of every service (``platform_common.messaging.ops_api``), on a real app.

One service built by ``create_service_app`` that consumes its own topic: over the in-process bus on SQLite and
PostgreSQL (``db_url``), and over Kafka with PostgreSQL for the consumer group's offsets.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pydantic
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.app import create_service_app
from platform_common.auth import Authenticator, install_authenticator
from platform_common.db import make_metadata
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.tables import add_messaging_tables
from platform_common.messaging.transport import KafkaTransport
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.settings import (
    DatabaseSettings,
    KafkaSettings,
    MessagingSettings,
    ServiceSettings,
    TelemetrySettings,
)
from platform_common.testing import wait_until
from platform_common.testing.auth import TokenFactory
from platform_common.testing.contract import create_schema
from platform_common.testing.metrics import scrape

PROBLEM = "application/problem+json"
SCRAPE_TOKEN = "scrape-token-for-tests"


class _Invoice(pydantic.BaseModel):
    amount: int


@dataclass
class Behaviour:
    """What the handler does with the next events: fail for good, block until released, or apply."""

    fail: bool = False
    invalid: bool = False
    block: bool = False
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Service:
    app: FastAPI
    runtime: ServiceRuntime
    client: httpx.AsyncClient
    behaviour: Behaviour
    topic: str
    ops: dict[str, str]
    tenant: dict[str, str]

    async def emit(self, n: int = 0) -> Envelope:
        envelope = Envelope(type="test.ping", version=1, producer="t", client_nip="5260250274", payload={"n": n})
        async with self.runtime.db.sessionmaker() as session, session.begin():
            await self.runtime.outbox.add(session, envelope, topic=self.topic)
        return envelope

    async def state(self) -> dict[str, Any]:
        response = await self.client.get("/ops/messaging", headers=self.ops)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def letters(self, **params: Any) -> list[dict[str, Any]]:
        response = await self.client.get("/ops/dead-letters", params=params, headers=self.ops)
        assert response.status_code == 200, response.text
        body: list[dict[str, Any]] = response.json()
        return body


@asynccontextmanager
async def open_service(
    db_url: str,
    *,
    kafka_bootstrap: str | None = None,
    outbox_retention_s: float = 24 * 3600,
    metrics_token: str | None = None,
) -> AsyncIterator[Service]:
    suffix = uuid.uuid4().hex[:10]
    topic = f"ops.{suffix}"
    metadata = make_metadata(f"ops_{suffix}")
    behaviour = Behaviour()

    async def handle(session: AsyncSession, event: Envelope) -> None:
        if behaviour.fail:
            raise PermanentFailure("the invoice is not for this client")
        if behaviour.invalid:
            _Invoice.model_validate({"amount": "SECRET-CLIENT-VALUE"})
        if behaviour.block:
            behaviour.entered.set()
            await behaviour.release.wait()

    definition = ServiceDefinition(
        name=f"ops-{suffix}",
        schema=metadata.schema or "",
        metadata=metadata,
        tables=add_messaging_tables(metadata),
        migrations="",
        subscriptions=lambda _rt: [Subscription("main", topic, handle)],
    )
    messaging = MessagingSettings(
        transport="kafka" if kafka_bootstrap else "inprocess",
        max_attempts=1,
        relay_poll_interval_s=0.05,
        outbox_retention_s=outbox_retention_s,
    )
    settings = ServiceSettings(
        db=DatabaseSettings(url=db_url),
        messaging=messaging,
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap or "127.0.0.1:1", topic_partitions=2),
        telemetry=TelemetrySettings(metrics_token=metrics_token),
    )
    app = create_service_app(definition, settings)
    runtime: ServiceRuntime = app.state.runtime
    if isinstance(runtime.transport, KafkaTransport):
        runtime.transport.declare_topics(topic)
    tokens = TokenFactory()
    install_authenticator(
        app,
        Authenticator(
            tokens.settings(), service_name=definition.name, clock=tokens.clock, transport=tokens.transport()
        ),
    )
    await create_schema(runtime)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc.test") as client,
    ):
        try:
            yield Service(
                app,
                runtime,
                client,
                behaviour,
                topic,
                ops={"Authorization": f"Bearer {tokens.mint(perms=['ops'], org=None, org_kind=None)}"},
                tenant={"Authorization": f"Bearer {tokens.mint(perms=['ksef.read', 'buffer.read'])}"},
            )
        finally:
            behaviour.release.set()


@pytest.fixture
async def svc(db_url: str) -> AsyncIterator[Service]:
    async with open_service(db_url) as service:
        yield service


class TestMessagingState:
    async def test_an_idle_service_reports_its_subscriptions_and_nothing_pending(self, svc: Service) -> None:
        assert await svc.state() == {
            "service": svc.runtime.definition.name,
            "outbox": {"pending": 0, "oldest_pending_age_s": None, "published_last_hour": 0},
            "consumers": [{"name": "main", "topic": svc.topic, "processed": 0, "last_processed_at": None, "lag": None}],
            "lag": {
                "transport": "inprocess",
                "messages": None,
                "oldest_pending_age_s": None,
                "partitions": [],
                "unavailable": None,
            },
            "dead_letters": {"pending": 0},
        }

    async def test_an_event_is_pending_while_delivered_then_published_and_processed(self, svc: Service) -> None:
        svc.behaviour.block = True
        await svc.emit()
        # In-process, the relay delivers before it marks the row: while the handler runs, the row is pending.
        await asyncio.wait_for(svc.behaviour.entered.wait(), timeout=30)
        during = await svc.state()
        assert during["outbox"]["pending"] == 1
        assert during["outbox"]["oldest_pending_age_s"] >= 0
        assert during["lag"]["oldest_pending_age_s"] is not None
        assert during["consumers"][0]["processed"] == 0  # its inbox row commits with the handler

        svc.behaviour.release.set()

        async def drained() -> dict[str, Any] | None:
            state = await svc.state()
            return state if state["outbox"]["pending"] == 0 and state["consumers"][0]["processed"] == 1 else None

        after = await wait_until(drained, what="the event to be published and processed")
        assert after["outbox"] == {"pending": 0, "oldest_pending_age_s": None, "published_last_hour": 1}
        assert after["consumers"][0]["last_processed_at"] is not None
        assert after["lag"]["oldest_pending_age_s"] is None

    async def test_published_last_hour_is_unknown_when_rows_are_kept_less_than_an_hour(self, db_url: str) -> None:
        async with open_service(db_url, outbox_retention_s=600) as svc:
            assert (await svc.state())["outbox"]["published_last_hour"] is None


class TestDeadLetters:
    async def test_a_dead_letter_is_listed_replayed_once_and_then_unknown(self, svc: Service) -> None:
        svc.behaviour.fail = True
        envelope = await svc.emit()

        async def one_pending() -> bool:
            return bool((await svc.state())["dead_letters"]["pending"] == 1)

        await wait_until(one_pending, what="a dead letter")
        [letter] = await svc.letters()
        assert letter.keys() == {
            "id",
            "consumer",
            "topic",
            "event_id",
            "key",
            "reason",
            "attempts",
            "source",
            "created_at",
            "replayed_at",
            "payload_bytes",
        }
        assert letter["consumer"] == "main"
        assert letter["topic"] == svc.topic
        assert letter["event_id"] == str(envelope.id)
        assert letter["key"] == envelope.key
        assert letter["reason"] == "permanent failure: PermanentFailure: the invoice is not for this client"
        assert letter["attempts"] == 1
        assert letter["replayed_at"] is None
        assert letter["payload_bytes"] == len(envelope.model_dump_json().encode())

        svc.behaviour.fail = False  # the cause is fixed
        replayed = await svc.client.post(f"/ops/dead-letters/{letter['id']}/replay", headers=svc.ops)
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {"id": letter["id"], "outcome": "applied", "dead_letter_id": None}

        state = await svc.state()
        assert state["dead_letters"] == {"pending": 0}
        assert state["consumers"][0]["processed"] == 1
        [after] = await svc.letters()
        assert after["replayed_at"] is not None

        again = await svc.client.post(f"/ops/dead-letters/{letter['id']}/replay", headers=svc.ops)
        assert again.status_code == 404
        assert again.headers["content-type"] == PROBLEM
        assert again.json()["type"].endswith("/no-dead-letter")
        unknown = await svc.client.post("/ops/dead-letters/999999/replay", headers=svc.ops)
        assert unknown.status_code == 404

    async def test_a_replay_that_fails_again_names_the_new_letter(self, svc: Service) -> None:
        svc.behaviour.fail = True
        await svc.emit()

        async def letters() -> list[dict[str, Any]]:
            return await svc.letters()

        [first] = await wait_until(letters, what="a dead letter")
        replayed = await svc.client.post(f"/ops/dead-letters/{first['id']}/replay", headers=svc.ops)
        assert replayed.status_code == 200
        body = replayed.json()
        assert body["outcome"] == "dead_lettered"
        newest = await svc.letters()
        assert [letter["id"] for letter in newest] == [body["dead_letter_id"], first["id"]]
        assert newest[0]["source"] == f"replay:{first['id']}"
        assert (await svc.state())["dead_letters"] == {"pending": 1}

    async def test_values_quoted_from_the_event_are_redacted_from_the_reason(self, svc: Service) -> None:
        svc.behaviour.invalid = True
        await svc.emit()

        async def letters() -> list[dict[str, Any]]:
            return await svc.letters()

        [letter] = await wait_until(letters, what="a dead letter")
        assert "ValidationError" in letter["reason"]
        assert "SECRET-CLIENT-VALUE" not in letter["reason"]
        assert "input_value=<redacted>" in letter["reason"]

    async def test_pages_newest_first_with_a_bounded_limit(self, svc: Service) -> None:
        svc.behaviour.fail = True
        for n in range(3):
            await svc.emit(n)

        async def three() -> bool:
            return len(await svc.letters()) == 3

        await wait_until(three, what="three dead letters")
        ids = [letter["id"] for letter in await svc.letters()]
        assert ids == sorted(ids, reverse=True)
        first = await svc.letters(limit=2)
        assert [letter["id"] for letter in first] == ids[:2]
        rest = await svc.letters(limit=2, before=first[-1]["id"])
        assert [letter["id"] for letter in rest] == ids[2:]
        assert await svc.letters(before=ids[-1]) == []
        for bad in ({"limit": 0}, {"limit": 501}, {"before": 0}):
            response = await svc.client.get("/ops/dead-letters", params=bad, headers=svc.ops)
            assert response.status_code == 422, bad
            assert response.headers["content-type"] == PROBLEM


class TestOperatorsOnly:
    ENDPOINTS = (("GET", "/ops/messaging"), ("GET", "/ops/dead-letters"), ("POST", "/ops/dead-letters/1/replay"))

    async def test_a_principal_without_ops_gets_403_and_no_credential_401(self, svc: Service) -> None:
        for method, path in self.ENDPOINTS:
            forbidden = await svc.client.request(method, path, headers=svc.tenant)
            assert forbidden.status_code == 403, path
            assert forbidden.headers["content-type"] == PROBLEM
            assert forbidden.json()["permission"] == "ops"
            anonymous = await svc.client.request(method, path)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["content-type"] == PROBLEM
            assert "www-authenticate" in anonymous.headers


@pytest.mark.kafka
@pytest.mark.postgres
async def test_kafka_lag_is_the_groups_committed_offsets_against_the_partition_ends(
    pg_url: str, kafka_bootstrap: str
) -> None:
    async with open_service(pg_url, kafka_bootstrap=kafka_bootstrap, metrics_token=SCRAPE_TOKEN) as svc:
        assert isinstance(svc.runtime.transport, KafkaTransport)
        transport = svc.runtime.transport
        await wait_until(transport.positioned, what="the consumer to join its group")
        svc.behaviour.block = True
        await svc.emit()
        await asyncio.wait_for(svc.behaviour.entered.wait(), timeout=30)

        # Received and not yet committed: the group is one message behind on the event's partition.
        during = await svc.state()
        assert during["lag"]["transport"] == "kafka"
        assert during["lag"]["unavailable"] is None
        partitions = during["lag"]["partitions"]
        assert {(p["topic"], p["partition"]) for p in partitions} == {(svc.topic, 0), (svc.topic, 1)}
        [busy] = [p for p in partitions if p["end"] == 1]
        assert busy["committed"] in (None, 0)

        svc.behaviour.release.set()

        async def caught_up() -> dict[str, Any] | None:
            state = await svc.state()
            return state if state["lag"]["messages"] == 0 else None

        after = await wait_until(caught_up, what="the group's offset to be committed")
        [committed] = [p for p in after["lag"]["partitions"] if p["end"] == 1]
        assert committed == {**busy, "committed": 1, "lag": 0}
        assert after["consumers"] == [
            {
                "name": "main",
                "topic": svc.topic,
                "processed": 1,
                "last_processed_at": after["consumers"][0]["last_processed_at"],
                "lag": 0,
            }
        ]
        # The same figure on /metrics, per partition of the group.
        metrics = await scrape(svc.client, SCRAPE_TOKEN)
        group = svc.runtime.definition.name
        lag = metrics.find("ksef_hub_consumer_lag", group=group, topic=svc.topic, partition=str(committed["partition"]))
        assert [s.value for s in lag] == [0]


class TestMetrics:
    """``GET /metrics`` (platform_common.metrics) on the same service: the token, then what it shows."""

    async def test_without_a_configured_token_the_endpoint_is_not_there(self, svc: Service) -> None:
        response = await svc.client.get("/metrics", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["type"].endswith("/metrics-disabled")

    async def test_only_the_scrape_token_is_admitted(self, db_url: str) -> None:
        async with open_service(db_url, metrics_token=SCRAPE_TOKEN) as svc:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {SCRAPE_TOKEN}"}, svc.ops):
                refused = await svc.client.get("/metrics", headers=headers)
                assert refused.status_code == 401, headers
                assert refused.headers["content-type"] == PROBLEM
                assert refused.headers["www-authenticate"] == "Bearer"
                assert SCRAPE_TOKEN not in refused.text
            assert (await scrape(svc.client, SCRAPE_TOKEN)).names

    async def test_requests_events_outbox_and_dead_letters_are_measured(self, db_url: str) -> None:
        async with open_service(db_url, metrics_token=SCRAPE_TOKEN) as svc:
            svc.behaviour.block = True
            await svc.emit()
            await asyncio.wait_for(svc.behaviour.entered.wait(), timeout=30)
            during = await scrape(svc.client, SCRAPE_TOKEN)
            assert during.value("ksef_hub_outbox_pending") == 1
            assert (during.value("ksef_hub_outbox_oldest_pending_age_seconds") or 0) >= 0
            assert during.value("ksef_hub_dead_letters_pending") == 0

            svc.behaviour.release.set()
            svc.behaviour.block = False
            svc.behaviour.fail = True
            await svc.emit(1)

            async def settled() -> Any:
                now = await scrape(svc.client, SCRAPE_TOKEN)
                return (
                    now
                    if now.value("ksef_hub_outbox_pending") == 0 and now.value("ksef_hub_dead_letters_pending") == 1
                    else None
                )

            after = await wait_until(settled, what="both events to be handled")
            assert after.value("ksef_hub_events_consumed_total", subscription="main", outcome="applied") == 1
            assert after.value("ksef_hub_events_consumed_total", subscription="main", outcome="dead_lettered") == 1
            assert after.value("ksef_hub_outbox_published_total") == 2

            # RED per endpoint, by route template (one series per route, whatever the id), status and method.
            for dead_letter_id in (98765, 98766):
                missing = await svc.client.post(f"/ops/dead-letters/{dead_letter_id}/replay", headers=svc.ops)
                assert missing.status_code == 404
            red = await scrape(svc.client, SCRAPE_TOKEN)
            route = "/ops/dead-letters/{dead_letter_id}/replay"
            assert red.value("http_server_duration_milliseconds_count", http_target=route, http_status_code="404") == 2
            assert not [s for s in red.samples if "98765" in s.labels.get("http_target", "")]
            # Scrapes and probes are not traffic.
            await svc.client.get("/healthz")
            probes = await scrape(svc.client, SCRAPE_TOKEN)
            assert not probes.find("http_server_duration_milliseconds_count", http_target="/healthz")
            assert not probes.find("http_server_duration_milliseconds_count", http_target="/metrics")
