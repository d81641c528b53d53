"""A two-service harness (producer and consumer) over either transport, for transport contract tests."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, func, select, text

from platform_common.db import make_metadata
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.tables import MessagingTables, add_messaging_tables
from platform_common.runtime import ServiceRuntime

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
