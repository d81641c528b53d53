"""A two-service harness (producer and consumer) over either transport, for transport contract tests."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.db import make_metadata
from platform_common.messaging.dispatch import DLT_SUFFIX, PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.tables import MessagingTables, add_messaging_tables
from platform_common.messaging.transport import InProcessBus, KafkaTransport
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings, ServiceSettings

MAX_ATTEMPTS = 3


def make_schema(name: str) -> tuple[MetaData, MessagingTables, Table]:
    metadata = make_metadata(name)
    tables = add_messaging_tables(metadata)
    applied = Table(
        "applied",
        metadata,
        Column("n", Integer, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False),
        Column("key", String(200), nullable=False),
        Column("idx", Integer, nullable=False),
        Column("subscription", String(200), nullable=False),
    )
    return metadata, tables, applied


@dataclass
class Harness:
    kind: str
    topic: str
    producer: ServiceRuntime
    consumer: ServiceRuntime
    applied_table: Table
    calls: Counter[uuid.UUID] = field(default_factory=Counter)
    dlt_seen: list[uuid.UUID] = field(default_factory=list)

    async def emit(self, items: list[tuple[str, dict[str, Any]]]) -> list[Envelope]:
        """Write events to the producer's outbox in one transaction, as a use case would."""
        envelopes = []
        async with self.producer.db.sessionmaker() as session, session.begin():
            for key, payload in items:
                env = Envelope(type="test.ping", version=1, producer="producer", client_nip=key, payload=payload)
                await self.producer.outbox.add(session, env, topic=self.topic)
                envelopes.append(env)
        return envelopes

    async def applied(self) -> list[Any]:
        async with self.consumer.db.sessionmaker() as session:
            t = self.applied_table
            return list((await session.execute(select(t).order_by(t.c.n))).all())

    async def applied_count(self) -> int:
        async with self.consumer.db.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).select_from(self.applied_table)) or 0)

    async def dead_letters(self, consumer: str = "main") -> list[Any]:
        t = self.consumer.definition.tables.dead_letter
        async with self.consumer.db.sessionmaker() as session:
            query = select(t).where(t.c.consumer == consumer).order_by(t.c.id)
            return list((await session.execute(query)).all())

    async def pending_outbox(self) -> int:
        t = self.producer.definition.tables.outbox
        async with self.producer.db.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).where(t.c.published_at.is_(None))) or 0)


async def create_schema(runtime: ServiceRuntime) -> None:
    async with runtime.db.engine.begin() as conn:
        if not runtime.db.is_sqlite:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{runtime.definition.schema}"'))
        await conn.run_sync(runtime.definition.metadata.create_all)


@asynccontextmanager
async def open_harness(
    kind: str, producer_url: str, consumer_url: str, *, kafka_bootstrap: str | None = None, partitions: int = 3
) -> AsyncIterator[Harness]:
    """A started producer and consumer service over ``kind`` ("kafka" or "inprocess"), stopped on exit."""
    suffix = uuid.uuid4().hex[:10]
    topic = f"contract.{suffix}"
    urls = {"producer": producer_url, "consumer": consumer_url}
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap or "127.0.0.1:1", topic_partitions=partitions)
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
    if isinstance(producer.transport, KafkaTransport):
        # The producer declares the test topic too, so that it exists before anything is sent to it.
        producer.transport.declare_topics(topic)
    for rt in (producer, consumer):
        await create_schema(rt)
    await consumer.start()
    await producer.start()
    try:
        yield Harness(kind, topic, producer, consumer, applied, calls, dlt_seen)
    finally:
        await producer.stop()
        await consumer.stop()
