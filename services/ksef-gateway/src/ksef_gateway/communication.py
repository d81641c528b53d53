"""The communication log: every KSeF call per client context, for support and for the client's own audit.

A row holds the operation, HTTP status, outcome, KSeF reference numbers, KSeF exception codes with their generic
descriptions, duration and time. It is built from ``CallRecord``, which has no field that could carry a token,
a challenge, a key or invoice content; KSeF's free-text ``details`` (which may echo request values) are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, select

from ksef_gateway.db import communication_log
from ksef_gateway.ksef.client import CallRecord, Clock, system_clock
from platform_common.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogEntry:
    id: int
    context_nip: str | None
    environment: str
    operation: str
    http_status: int | None
    outcome: str
    reference_numbers: list[str]
    error_codes: list[int]
    description: str | None
    duration_ms: int
    attempts: int
    replica_id: str
    at: datetime


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
                await conn.execute(
                    insert(communication_log).values(
                        context_nip=call.context_nip,
                        environment=call.environment,
                        operation=call.operation,
                        http_status=call.http_status,
                        outcome=call.outcome,
                        reference_numbers=list(call.reference_numbers),
                        error_codes=list(call.error_codes),
                        description=call.description[:500] if call.description else None,
                        duration_ms=call.duration_ms,
                        attempts=call.attempts,
                        replica_id=self._replica_id,
                        at=call.at,
                    )
                )
        except Exception:
            log.exception("writing the communication log failed for %s (%s)", call.operation, call.context_nip)

    async def entries(self, context_nip: str, *, limit: int = 50, before_id: int | None = None) -> list[LogEntry]:
        """Newest first; ``before_id`` continues after the last entry of the previous page (keyset paging)."""
        table = communication_log
        condition: Any = table.c.context_nip == context_nip
        if before_id is not None:
            condition = and_(condition, table.c.id < before_id)
        query = select(table).where(condition).order_by(table.c.id.desc()).limit(limit)
        async with self._db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            LogEntry(
                id=row["id"],
                context_nip=row["context_nip"],
                environment=row["environment"],
                operation=row["operation"],
                http_status=row["http_status"],
                outcome=row["outcome"],
                reference_numbers=list(row["reference_numbers"] or []),
                error_codes=[int(c) for c in row["error_codes"] or []],
                description=row["description"],
                duration_ms=row["duration_ms"],
                attempts=row["attempts"],
                replica_id=row["replica_id"],
                at=row["at"],
            )
            for row in rows
        ]

    async def purge(self, retention: timedelta) -> int:
        """Delete entries older than ``retention``; returns how many."""
        cutoff = self._clock() - retention
        async with self._db.engine.begin() as conn:
            result = await conn.execute(delete(communication_log).where(communication_log.c.at < cutoff))
        return int(result.rowcount or 0)

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
