"""The harness fixture: every test in the contract suite runs over both transports."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, insert
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.messaging.dispatch import DLT_SUFFIX, PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.tables import MessagingTables
from platform_common.messaging.transport import InProcessBus
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings, ServiceSettings
from platform_common.testing.contract import MAX_ATTEMPTS, Harness, create_schema, make_schema


@pytest.fixture(params=["inprocess", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.postgres])])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind: str = request.param
    suffix = uuid.uuid4().hex[:10]
    topic = f"contract.{suffix}"
    if kind == "kafka":
        urls = {"producer": request.getfixturevalue("pg_url")}
        urls["consumer"] = urls["producer"]  # one database, two schemas, as in dev and CI
        kafka = KafkaSettings(bootstrap_servers=request.getfixturevalue("kafka_bootstrap"), topic_partitions=3)
    else:
        urls = {n: f"sqlite+aiosqlite:///{tmp_path / n}.db" for n in ("producer", "consumer")}
        kafka = KafkaSettings()
    messaging = MessagingSettings(
        transport="kafka" if kind == "kafka" else "inprocess",
        max_attempts=MAX_ATTEMPTS,
        retry_initial_backoff_s=0.01,
        retry_max_backoff_s=0.05,
        relay_poll_interval_s=0.05,
    )
    bus = InProcessBus()
    p_meta, p_tables, _ = make_schema(f"producer_{suffix}")
    c_meta, c_tables, applied = make_schema(f"consumer_{suffix}")
    calls: Counter[uuid.UUID] = Counter()
    dlt_seen: list[uuid.UUID] = []

    async def handle(session: AsyncSession, event: Envelope) -> None:
        calls[event.id] += 1
        payload = event.payload
        if payload.get("permanent"):
            raise PermanentFailure("the invoice is not for this client")
        if payload.get("fail_times", 0) == -1 or calls[event.id] <= payload.get("fail_times", 0):
            raise RuntimeError(f"handler exploded on attempt {calls[event.id]}")
        await session.execute(
            insert(applied).values(event_id=event.id, key=event.key, idx=payload["idx"], subscription="main")
        )

    async def watch_dlt(session: AsyncSession, event: Envelope) -> None:
        dlt_seen.append(event.id)

    def subscriptions(_rt: ServiceRuntime) -> list[Subscription]:
        return [Subscription("main", topic, handle), Subscription("dlt-watch", topic + DLT_SUFFIX, watch_dlt)]

    def runtime(name: str, meta: MetaData, tables: MessagingTables, subs: Any) -> ServiceRuntime:
        definition = ServiceDefinition(
            name=f"{name}-{suffix}",
            schema=meta.schema or "",
            metadata=meta,
            tables=tables,
            migrations="",
            subscriptions=subs,
        )
        settings = ServiceSettings(db=DatabaseSettings(url=urls[name]), kafka=kafka, messaging=messaging)
        return ServiceRuntime(definition, settings, bus=bus)

    producer = runtime("producer", p_meta, p_tables, lambda _rt: ())
    consumer = runtime("consumer", c_meta, c_tables, subscriptions)
    if kind == "kafka":
        # The producer must know the test topic too, so that it exists before anything is sent to it.
        producer.transport._extra_topics.add(topic)  # type: ignore[attr-defined]
    for rt in (producer, consumer):
        await create_schema(rt)
    await consumer.start()
    await producer.start()
    try:
        yield Harness(kind, topic, producer, consumer, applied, calls, dlt_seen)
    finally:
        await producer.stop()
        await consumer.stop()
