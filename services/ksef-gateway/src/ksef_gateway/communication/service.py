"""The communication log: every KSeF call per client context, for support and for the client's own audit.

A row holds the operation, HTTP status, outcome, KSeF reference numbers, KSeF exception codes with their generic
descriptions, duration and time. It is built from ``CallRecord``, which has no field that could carry a token,
a challenge, a key or invoice content; KSeF's free-text ``details`` (which may echo request values) are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from ksef_gateway.communication import repository
from ksef_gateway.communication.repository import LogEntry
from ksef_gateway.ksef.client import CallRecord, Clock, system_clock
from platform_common.db import Database

log = logging.getLogger(__name__)


class CommunicationLog:
    """The ``CallObserver`` of every ``KsefClient``, and the reader behind ``GET /clients/{nip}/communication-log``."""

    def __init__(self, db: Database, replica_id: str, clock: Clock = system_clock) -> None:
        self._db = db
        self._replica_id = replica_id
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def record(self, call: CallRecord) -> None:
        # Its own short transaction, never the caller's: the row must exist even when the caller's work rolls
        # back, and a failing write (database down, disk full) must not fail the KSeF call it describes, so the
        # error is logged and swallowed here.
        try:
            async with self._db.engine.begin() as conn:
                await repository.append(conn, call, self._replica_id)
        except Exception:
            log.exception("writing the communication log failed for %s (%s)", call.operation, call.context_nip)

    async def entries(self, context_nip: str, *, limit: int = 50, before_id: int | None = None) -> list[LogEntry]:
        """Newest first; ``before_id`` continues after the last entry of the previous page (keyset paging)."""
        async with self._db.engine.connect() as conn:
            return await repository.entries_of(conn, context_nip, limit=limit, before_id=before_id)

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
        self._task = asyncio.create_task(self._purge_forever(retention, interval_s), name="communication-log-purge")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
