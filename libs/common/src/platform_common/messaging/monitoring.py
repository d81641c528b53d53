"""What a platform operator sees of one service's messaging: outbox depth, consumers' progress, dead letters.

Read-only queries on the service's own messaging tables (``tables.MessagingTables``), each answered from an
index the relay or the dispatcher already needs: the pending-outbox partial index, ``published_at``, the inbox
primary key (consumer first) and the dead letters' primary key. Payloads are never read: they may carry client
data, so a dead letter is described by its size only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import LargeBinary, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from platform_common.db import Database
from platform_common.messaging.tables import MessagingTables

PUBLISHED_WINDOW = timedelta(hours=1)

# Pydantic's messages quote the rejected input ("input_value='...'"): an event's field, possibly client data.
_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=|\]|$)")


@dataclass(frozen=True)
class OutboxDepth:
    pending: int
    oldest_pending_age_s: float | None
    # None when published rows are kept less than the window (outbox_retention_s): the count would be too low.
    published_last_hour: int | None


@dataclass(frozen=True)
class ConsumerProgress:
    name: str
    processed: int
    last_processed_at: datetime | None


@dataclass(frozen=True)
class DeadLetterView:
    id: int
    consumer: str
    topic: str
    event_id: uuid.UUID | None
    key: str | None
    reason: str
    attempts: int
    source: str | None
    created_at: datetime
    replayed_at: datetime | None
    payload_bytes: int


def utc(value: datetime) -> datetime:
    """SQLite hands the messaging tables' timestamps back naive; they are UTC by construction."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def redact_reason(reason: str) -> str:
    return _INPUT_VALUE.sub("input_value=<redacted>", reason)


class MessagingMonitor:
    def __init__(self, db: Database, tables: MessagingTables, *, outbox_retention_s: float) -> None:
        self._db = db
        self._t = tables
        self._retention = timedelta(seconds=outbox_retention_s)

    async def outbox(self, *, now: datetime | None = None) -> OutboxDepth:
        now = now or datetime.now(UTC)
        o = self._t.outbox
        async with self._db.sessionmaker() as session:
            pending, oldest = (
                await session.execute(select(func.count(), func.min(o.c.created_at)).where(o.c.published_at.is_(None)))
            ).one()
            published: int | None = None
            if self._retention >= PUBLISHED_WINDOW:
                published = int(
                    await session.scalar(select(func.count()).where(o.c.published_at >= now - PUBLISHED_WINDOW)) or 0
                )
        age = max(0.0, (now - utc(oldest)).total_seconds()) if oldest is not None else None
        return OutboxDepth(pending=int(pending), oldest_pending_age_s=age, published_last_hour=published)

    async def consumers(self) -> list[ConsumerProgress]:
        """Every inbox identity this service has recorded, subscribed now or not."""
        i = self._t.inbox
        async with self._db.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(i.c.consumer, func.count(), func.max(i.c.processed_at))
                    .group_by(i.c.consumer)
                    .order_by(i.c.consumer)
                )
            ).all()
        return [
            ConsumerProgress(name=name, processed=int(n), last_processed_at=utc(last) if last is not None else None)
            for name, n, last in rows
        ]

    async def pending_dead_letters(self) -> int:
        d = self._t.dead_letter
        async with self._db.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).where(d.c.replayed_at.is_(None))) or 0)

    async def dead_letters(self, *, limit: int, before: int | None = None) -> Sequence[DeadLetterView]:
        """Newest first (by id), replayed ones included; the next page starts ``before`` the last id."""
        d = self._t.dead_letter
        query = (
            select(
                d.c.id,
                d.c.consumer,
                d.c.topic,
                d.c.event_id,
                d.c.message_key,
                d.c.reason,
                d.c.attempts,
                d.c.source,
                d.c.created_at,
                d.c.replayed_at,
                self._byte_length(d.c.payload).label("payload_bytes"),
            )
            .order_by(d.c.id.desc())
            .limit(limit)
        )
        if before is not None:
            query = query.where(d.c.id < before)
        async with self._db.sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [
            DeadLetterView(
                id=r.id,
                consumer=r.consumer,
                topic=r.topic,
                event_id=r.event_id,
                key=r.message_key,
                reason=redact_reason(r.reason),
                attempts=r.attempts,
                source=r.source,
                created_at=utc(r.created_at),
                replayed_at=utc(r.replayed_at) if r.replayed_at is not None else None,
                payload_bytes=int(r.payload_bytes or 0),
            )
            for r in rows
        ]

    async def pending_letter_of(self, consumer: str, event_id: uuid.UUID) -> int | None:
        """The pending letter of one event for one consumer (at most one: ``uq_dead_letter_pending``)."""
        d = self._t.dead_letter
        async with self._db.sessionmaker() as session:
            found = await session.scalar(
                select(d.c.id).where(d.c.consumer == consumer, d.c.event_id == event_id, d.c.replayed_at.is_(None))
            )
        return int(found) if found is not None else None

    async def letter_identity(self, dead_letter_id: int) -> tuple[str, uuid.UUID | None] | None:
        d = self._t.dead_letter
        async with self._db.sessionmaker() as session:
            row = (await session.execute(select(d.c.consumer, d.c.event_id).where(d.c.id == dead_letter_id))).first()
        return (row.consumer, row.event_id) if row is not None else None

    def _byte_length(self, column: ColumnElement[str]) -> ColumnElement[int]:
        # The size in bytes of the stored text, computed by the database so that the payload never leaves it.
        if self._db.is_sqlite:
            return func.length(cast(column, LargeBinary))
        return func.octet_length(column)
