"""Transactional outbox: events are rows written in the same transaction as the state change.

The relay publishes pending rows through the transport and only then marks them published, so a crash
anywhere loses nothing: at worst a row is published twice, and every consumer's inbox absorbs the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from opentelemetry import metrics, propagate, trace
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from platform_common.db import Database
from platform_common.messaging.envelope import Envelope, EventContract
from platform_common.messaging.tables import OUTBOX_LANES, MessagingTables, lane_of
from platform_common.settings import MessagingSettings
from platform_common.tasks import finish_or_cancel

log = logging.getLogger(__name__)

_WAKE_KEY = "outbox_wake"


@dataclass(frozen=True)
class OutboundMessage:
    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    seq: int = 0


class Publisher(Protocol):
    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        """Return only when every message is durably accepted, in the given order per key; raise otherwise."""


def current_trace_context() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class Outbox:
    """Adds events to a service's outbox inside the caller's transaction."""

    def __init__(self, tables: MessagingTables, producer: str) -> None:
        self._table = tables.outbox
        # Built once: ``insert().values(...)`` per event coerces and cache-keys every value on each call, which
        # dominated bulk producers; bound parameters reuse one compiled statement (an executemany for a batch).
        self._insert = insert(self._table)
        self.producer = producer
        self._wake: list[asyncio.Event] = []

    def on_commit_wake(self, event: asyncio.Event) -> None:
        self._wake.append(event)

    async def add(self, session: AsyncSession, envelope: Envelope, *, topic: str) -> None:
        await self.add_many(session, (envelope,), topic=topic)

    async def add_many(self, session: AsyncSession, envelopes: Iterable[Envelope], *, topic: str) -> None:
        """Add several events to ``topic`` in one statement; they are published in the given order (per key)."""
        created_at = datetime.now(UTC)
        rows = [
            {
                "event_id": envelope.id,
                "topic": topic,
                "key": envelope.key,
                "lane": lane_of(envelope.key),
                "payload": envelope.model_dump_json(),
                "headers": {
                    "event_type": envelope.type,
                    "event_version": str(envelope.version),
                    **envelope.trace,
                },
                "created_at": created_at,
            }
            for envelope in envelopes
        ]
        if not rows:
            return
        # A list of parameter sets is an executemany: the rows are inserted in list order, so ``seq`` (the
        # relay's publishing order) follows it on SQLite and PostgreSQL alike.
        await session.execute(self._insert, rows)
        # Wake the relay as soon as this transaction commits rather than at its next poll.
        wake_after_commit(session, *self._wake)

    async def emit(
        self,
        session: AsyncSession,
        contract: EventContract,
        *,
        client_nip: str | None = None,
        tenant: str | None = None,
    ) -> Envelope:
        envelope = Envelope.wrap(
            contract,
            producer=self.producer,
            client_nip=client_nip,
            tenant=tenant,
            trace=current_trace_context(),
        )
        await self.add(session, envelope, topic=contract.topic)
        return envelope


def wake_after_commit(session: AsyncSession, *events: asyncio.Event) -> None:
    """Set ``events`` when ``session``'s transaction commits (not at all when it rolls back): a worker that polls
    for rows written here starts at once instead of at its next poll, and never before the rows are visible."""
    session.sync_session.info.setdefault(_WAKE_KEY, set()).update(events)


def _after_commit(session: Any) -> None:
    for event in session.info.pop(_WAKE_KEY, ()):
        event.set()


def _after_rollback(session: Any) -> None:
    session.info.pop(_WAKE_KEY, None)


def install_session_hooks() -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", lambda s, _t: _after_rollback(s))


install_session_hooks()


class OutboxRelay:
    """Publishes a service's outbox in order per key. Several relays may run against one PostgreSQL."""

    def __init__(
        self,
        db: Database,
        tables: MessagingTables,
        publisher: Publisher,
        settings: MessagingSettings,
        *,
        name: str,
        tracer: trace.Tracer | None = None,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._db = db
        self._t = tables
        self._publisher = publisher
        self._settings = settings
        self.name = name
        self._tracer = tracer or trace.get_tracer(__name__)
        meter = meter or metrics.NoOpMeter(__name__)
        self._published = meter.create_counter("ksef_hub.outbox.published", description="Outbox rows published")
        self._failures = meter.create_counter("ksef_hub.outbox.publish_failures", description="Failed publish batches")
        self.wake_event = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = datetime.min.replace(tzinfo=UTC)
        self.consecutive_failures = 0

    async def start(self) -> None:
        if not self._db.is_sqlite:
            await self._ensure_lanes()
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self.name}")

    async def stop(self) -> None:
        """Let the batch in flight finish (for the in-process transport it includes the other services'
        deliveries, each in its own transaction), then end the loop; cancel only after ``stop_grace_s``."""
        if self._task is None:
            return
        self._stopping.set()
        self.wake_event.set()
        await finish_or_cancel(self._task, grace_s=self._settings.stop_grace_s, what=f"outbox relay {self.name}")
        self._task = None

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _ensure_lanes(self) -> None:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        async with self._db.sessionmaker() as session, session.begin():
            await session.execute(
                pg_insert(self._t.outbox_lane)
                .values([{"lane": lane} for lane in range(OUTBOX_LANES)])
                .on_conflict_do_nothing()
            )

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                published = await self.publish_pending()
                self.consecutive_failures = 0
                await self._maybe_purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.consecutive_failures += 1
                backoff = min(
                    self._settings.retry_max_backoff_s,
                    self._settings.retry_initial_backoff_s * 2 ** min(self.consecutive_failures, 10),
                )
                log.exception("outbox relay %s failed; retrying in %.2fs", self.name, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                continue
            if published == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake_event.wait(), self._settings.relay_poll_interval_s)
                self.wake_event.clear()

    async def publish_pending(self) -> int:
        """Publish one batch; return how many rows were published."""
        if self._db.is_sqlite:
            return await self._publish_sqlite()
        return await self._publish_locked()

    async def drain(self) -> int:
        total = 0
        while n := await self.publish_pending():
            total += n
        return total

    async def _publish_locked(self) -> int:
        o, lanes = self._t.outbox, self._t.outbox_lane
        seqs: list[int] = []
        try:
            async with self._db.sessionmaker() as session, session.begin():
                pending_lanes = select(o.c.lane).where(o.c.published_at.is_(None)).distinct()
                claimed = (
                    await session.scalars(
                        select(lanes.c.lane)
                        .where(lanes.c.lane.in_(pending_lanes))
                        # Random order and a lane quota, so that concurrent relays share the lanes.
                        .order_by(func.random())
                        .limit(self._settings.relay_lanes_per_claim)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if not claimed:
                    return 0
                rows = (
                    await session.execute(
                        select(o.c.seq, o.c.topic, o.c.key, o.c.payload, o.c.headers)
                        .where(o.c.published_at.is_(None), o.c.lane.in_(claimed))
                        .order_by(o.c.seq)
                        .limit(self._settings.relay_batch_size)
                    )
                ).all()
                seqs = [r.seq for r in rows]
                await self._publish_rows(rows)
                await session.execute(self._mark_published(seqs, func.now()))
        except Exception as exc:
            # The claim transaction is rolled back (lanes released, nothing marked); count the attempt apart.
            if seqs:
                await self._record_failure(seqs, exc)
            raise
        return len(seqs)

    async def _publish_sqlite(self) -> int:
        # One process owns an SQLite file, so there is no competing relay to lock out; and holding a read
        # transaction across delivery would make the in-process handlers' writes to this file conflict.
        o = self._t.outbox
        async with self._db.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(o.c.seq, o.c.topic, o.c.key, o.c.payload, o.c.headers)
                    .where(o.c.published_at.is_(None))
                    .order_by(o.c.seq)
                    .limit(self._settings.relay_batch_size)
                )
            ).all()
        if not rows:
            return 0
        try:
            await self._publish_rows(rows)
        except Exception as exc:
            await self._record_failure([r.seq for r in rows], exc)
            raise
        async with self._db.sessionmaker() as session, session.begin():
            await session.execute(self._mark_published([r.seq for r in rows], datetime.now(UTC)))
        return len(rows)

    def _mark_published(self, seqs: list[int], now: Any) -> Executable:
        o = self._t.outbox
        if self._settings.outbox_retention_s == 0:
            return delete(o).where(o.c.seq.in_(seqs))
        return update(o).where(o.c.seq.in_(seqs)).values(published_at=now)

    async def _publish_rows(self, rows: Sequence[Row[Any]]) -> None:
        messages = [
            OutboundMessage(
                topic=r.topic,
                key=r.key,
                value=r.payload.encode(),
                headers=tuple((k, str(v).encode()) for k, v in (r.headers or {}).items()),
                seq=r.seq,
            )
            for r in rows
        ]
        with self._tracer.start_as_current_span(
            f"outbox publish ({len(messages)})",
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.batch.message_count": len(messages), "ksef_hub.relay": self.name},
        ):
            try:
                await self._publisher.publish(messages)
            except Exception:
                self._failures.add(1, {"relay": self.name})
                raise
        await self.after_publish(messages)
        self._published.add(len(messages), {"relay": self.name})

    async def after_publish(self, messages: Sequence[OutboundMessage]) -> None:
        """Hook between publishing and marking rows published (fault-injection point for tests)."""

    async def _record_failure(self, seqs: list[int], exc: BaseException) -> None:
        o = self._t.outbox
        async with self._db.sessionmaker() as session, session.begin():
            await session.execute(
                update(o).where(o.c.seq.in_(seqs)).values(attempts=o.c.attempts + 1, last_error=repr(exc)[:2000])
            )

    async def _maybe_purge(self) -> None:
        now = datetime.now(UTC)
        if now - self._last_purge < timedelta(seconds=self._settings.outbox_purge_interval_s):
            return
        self._last_purge = now
        await self.purge_published(now=now)

    async def purge_published(self, *, now: datetime | None = None) -> int:
        """Delete rows published more than the retention ago, one batch per transaction; return how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=self._settings.outbox_retention_s)
        o = self._t.outbox
        batch = self._settings.outbox_purge_batch_size
        # By seq through a subquery: DELETE ... LIMIT exists on neither PostgreSQL nor a default SQLite build.
        expired = (
            select(o.c.seq)
            .where(o.c.published_at.is_not(None), o.c.published_at < cutoff)
            .order_by(o.c.seq)
            .limit(batch)
        )
        total = 0
        while True:
            async with self._db.sessionmaker() as session, session.begin():
                result = cast("CursorResult[Any]", await session.execute(delete(o).where(o.c.seq.in_(expired))))
            deleted = int(result.rowcount)
            total += deleted
            if deleted < batch:
                return total

    async def pending_count(self) -> int:
        o = self._t.outbox
        async with self._db.sessionmaker() as session:
            return int(await session.scalar(select(func.count()).where(o.c.published_at.is_(None))) or 0)
