"""The started communication log writes calls in batches, never loses what was recorded before a read or a stop,
and keeps their order; a write failing does not stop it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import event, func, select

from ksef_gateway.communication.service import CommunicationLog
from ksef_gateway.db import communication_log
from ksef_gateway.ksef.client import CallRecord
from ksef_gateway.testing import valid_nips
from platform_common.db import Database
from platform_common.settings import DatabaseSettings

MigratedDb = Callable[[str], Awaitable[Database]]
(NIP,) = valid_nips(1, start=914_000_000)


def _call(i: int) -> CallRecord:
    return CallRecord(
        environment="sim",
        context_nip=NIP,
        operation=f"op.{i}",
        http_status=200,
        outcome="ok",
        reference_numbers=(f"ref-{i}",),
        error_codes=(),
        description=None,
        duration_ms=1,
        attempts=1,
        at=datetime(2026, 12, 6, tzinfo=UTC) + timedelta(milliseconds=i),
    )


def _count_commits(db: Database) -> list[int]:
    commits = [0]

    def on_commit(_conn: object) -> None:
        commits[0] += 1

    event.listen(db.engine.sync_engine, "commit", on_commit)
    return commits


async def test_concurrent_calls_are_written_in_few_transactions_and_read_back_in_order(
    migrated_db: MigratedDb, db_url: str
) -> None:
    db = await migrated_db(db_url)
    log = CommunicationLog(db, "replica-w")
    await log.start(retention=timedelta(days=90), interval_s=3600)
    commits = _count_commits(db)
    try:
        await asyncio.gather(*(log.record(_call(i)) for i in range(300)))
        entries = await log.entries(NIP, limit=500)  # waits for this replica's queue
        assert [e.operation for e in reversed(entries)] == [f"op.{i}" for i in range(300)]
        assert [e.reference_numbers for e in entries[-2:]] == [["ref-1"], ["ref-0"]]
        assert commits[0] < 300 / 10, commits[0]  # batches, not a transaction per call
    finally:
        await log.stop()
        await db.dispose()


async def test_stop_writes_what_is_still_queued(migrated_db: MigratedDb, db_url: str) -> None:
    db = await migrated_db(db_url)
    log = CommunicationLog(db, "replica-w")
    await log.start(retention=timedelta(days=90), interval_s=3600)
    for i in range(50):
        await log.record(_call(i))
    await log.stop()
    async with db.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(communication_log)) == 50
    await db.dispose()


async def test_a_failed_write_is_logged_and_the_writer_keeps_going(tmp_path: Path) -> None:
    broken = Database(DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")), "gateway")
    log = CommunicationLog(broken, "r")
    await log.start(retention=timedelta(days=90), interval_s=3600)
    try:
        await log.record(_call(1))
        await asyncio.wait_for(log.flush(), timeout=10)  # settles although the table is missing
        await log.record(_call(2))
        await asyncio.wait_for(log.flush(), timeout=10)  # a dead writer would never settle this one
    finally:
        await log.stop()
        await broken.dispose()
