"""The communication log: every KSeF call per client context, for support and for the client's own audit.

A row holds the operation, HTTP status, outcome, KSeF reference numbers, KSeF exception codes with their generic
descriptions, duration and time. It is built from ``CallRecord``, which has no field that could carry a token,
a challenge, a key or invoice content; KSeF's free-text ``details`` (which may echo request values) are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ksef_gateway.communication import repository
from ksef_gateway.communication.repository import LogEntry
from ksef_gateway.ksef.client import CallRecord, Clock, system_clock
from platform_common.db import Database
from platform_common.tasks import finish_or_cancel

log = logging.getLogger(__name__)


# Calls recorded but not yet written, beyond which new ones are dropped (and counted) rather than held: the log is
# for support and audit, never worth the memory of a replica whose database is gone.
MAX_PENDING = 10_000
WRITE_BATCH = 500


@dataclass(frozen=True)
class HourOfCalls:
    start: datetime
    calls: int
    rate_limited: int  # of those, answered 429 by KSeF


class CommunicationLog:
    """The ``CallObserver`` of every ``KsefClient``, and the reader behind ``GET /clients/{nip}/communication-log``.

    Once started, ``record`` only queues the call; one writer task inserts what has queued up in one transaction
    (group commit: no fixed delay, a batch is whatever arrived while the previous one was written). A transaction
    per call cost about a seventh of the sync's time with many small clients (bench/bench_sync.py, part 2). A crash
    loses what was queued and not yet written (the calls of the last moments); ``entries`` first waits for this
    replica's queue, so a reader sees every call recorded before it asked. Not started (tests, tools), each call is
    written at once.
    """

    def __init__(self, db: Database, replica_id: str, clock: Clock = system_clock) -> None:
        self._db = db
        self._replica_id = replica_id
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._pending: list[CallRecord] = []
        self._queued = asyncio.Event()
        self._recorded = 0  # calls accepted into the queue
        self._settled = 0  # of those, written or given up on
        self._progress = asyncio.Condition()
        self.dropped = 0

    async def record(self, call: CallRecord) -> None:
        # Never the caller's transaction: the row must exist even when the caller's work rolls back, and a failing
        # write (database down, disk full) must not fail the KSeF call it describes: errors are logged, not raised.
        if self._writer is None:
            await self._write([call])
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("communication log queue full (%d): %d call(s) not logged so far", MAX_PENDING, self.dropped)
            return
        self._pending.append(call)
        self._recorded += 1
        self._queued.set()

    async def flush(self) -> None:
        """Return once every call recorded before this one is written (or its write has failed)."""
        target = self._recorded
        if self._writer is None or self._settled >= target:
            return
        async with self._progress:
            await self._progress.wait_for(lambda: self._settled >= target or self._writer is None)

    async def _write(self, calls: list[CallRecord]) -> None:
        try:
            async with self._db.engine.begin() as conn:
                await repository.append(conn, calls, self._replica_id)
        except Exception:
            first = calls[0]
            log.exception(
                "writing the communication log failed for %d call(s) (first: %s, %s)",
                len(calls),
                first.operation,
                first.context_nip,
            )

    async def _write_forever(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._pending:
                batch, self._pending = self._pending[:WRITE_BATCH], self._pending[WRITE_BATCH:]
                await self._write(batch)
                self._settled += len(batch)
                async with self._progress:
                    self._progress.notify_all()
            if self._stopping.is_set():
                return

    async def entries(self, context_nip: str, *, limit: int = 50, before_id: int | None = None) -> list[LogEntry]:
        """Newest first; ``before_id`` continues after the last entry of the previous page (keyset paging)."""
        await self.flush()
        async with self._db.engine.connect() as conn:
            return await repository.entries_of(conn, context_nip, limit=limit, before_id=before_id)

    async def call_counts(self, context_nips: Sequence[str], *, since: datetime) -> dict[str, tuple[int, int]]:
        """Per context: (KSeF calls, of them 429s) logged since ``since``; contexts without calls are left out."""
        if not context_nips:
            return {}
        await self.flush()
        async with self._db.engine.connect() as conn:
            return await repository.call_counts(conn, context_nips, since)

    async def hourly(self, hours: int, *, context_nip: str | None = None) -> list[HourOfCalls]:
        """KSeF calls and 429s per clock hour (UTC) over the last ``hours`` hours, oldest first, the current hour
        last (so far); across every context, or one. Reads every replica's rows, so it is the platform's figure."""
        await self.flush()
        now = self._clock()
        current = now.replace(minute=0, second=0, microsecond=0)
        starts = [current - timedelta(hours=hours - 1 - i) for i in range(hours)]
        async with self._db.engine.connect() as conn:
            counts = await repository.hourly_counts(conn, starts, context_nip)
        return [HourOfCalls(start, *counts.get(i, (0, 0))) for i, start in enumerate(starts)]

    async def purge(self, retention: timedelta) -> int:
        """Delete entries older than ``retention``; returns how many."""
        cutoff = self._clock() - retention
        async with self._db.engine.begin() as conn:
            return await repository.purge_older_than(conn, cutoff)

    async def _purge_forever(self, retention: timedelta, interval_s: float) -> None:
        while not self._stopping.is_set():
            try:
                purged = await self.purge(retention)
                if purged:
                    log.info("purged %d communication log entries older than %s", purged, retention)
            except Exception:
                log.exception("purging the communication log failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval_s)

    async def start(self, *, retention: timedelta, interval_s: float) -> None:
        self._stopping.clear()
        self._writer = asyncio.create_task(self._write_forever(), name="communication-log-writer")
        self._task = asyncio.create_task(self._purge_forever(retention, interval_s), name="communication-log-purge")

    async def stop(self) -> None:
        """What is queued is written first (the writer ends once the queue is empty)."""
        self._stopping.set()
        self._queued.set()
        if self._writer is not None:
            await finish_or_cancel(self._writer, what="communication log writer")
            self._writer = None
            async with self._progress:
                self._progress.notify_all()  # a flush waiting for calls that will not be written now
        if self._task is not None:
            await self._task
            self._task = None
