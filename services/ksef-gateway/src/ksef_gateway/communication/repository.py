"""Every query of the communication log. Each function runs on the caller's connection and transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ksef_gateway.db import communication_log
from ksef_gateway.ksef.client import CallRecord


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


def _row(call: CallRecord, replica_id: str) -> dict[str, Any]:
    return {
        "context_nip": call.context_nip,
        "environment": call.environment,
        "operation": call.operation,
        "http_status": call.http_status,
        "outcome": call.outcome,
        "reference_numbers": list(call.reference_numbers),
        "error_codes": list(call.error_codes),
        "description": call.description[:500] if call.description else None,
        "duration_ms": call.duration_ms,
        "attempts": call.attempts,
        "replica_id": replica_id,
        "at": call.at,
    }


async def append(conn: AsyncConnection, calls: Sequence[CallRecord], replica_id: str) -> None:
    """One multi-row statement for a batch of calls, in their order (ids follow it)."""
    if calls:
        await conn.execute(insert(communication_log), [_row(call, replica_id) for call in calls])


async def entries_of(conn: AsyncConnection, context_nip: str, *, limit: int, before_id: int | None) -> list[LogEntry]:
    """Newest first; ``before_id`` continues after the last entry of the previous page (keyset paging)."""
    table = communication_log
    condition: Any = table.c.context_nip == context_nip
    if before_id is not None:
        condition = and_(condition, table.c.id < before_id)
    query = select(table).where(condition).order_by(table.c.id.desc()).limit(limit)
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


def _rate_limited() -> Any:
    # KSeF's 429: never retried inside one logged call (ksef/client.py), so every 429 KSeF gave is one row.
    return func.sum(case((communication_log.c.http_status == 429, 1), else_=0))


async def call_counts(
    conn: AsyncConnection, context_nips: Sequence[str], since: datetime
) -> dict[str, tuple[int, int]]:
    """Per context of ``context_nips``: KSeF calls logged since ``since`` and how many KSeF answered with 429."""
    table = communication_log
    query = (
        select(table.c.context_nip, func.count(), _rate_limited())
        .where(table.c.context_nip.in_(list(context_nips)), table.c.at >= since)
        .group_by(table.c.context_nip)
    )
    rows = (await conn.execute(query)).tuples()
    return {nip: (int(calls), int(limited or 0)) for nip, calls, limited in rows}


async def hourly_counts(
    conn: AsyncConnection, starts: Sequence[datetime], context_nip: str | None
) -> dict[int, tuple[int, int]]:
    """Calls and 429s per bucket ``[starts[i], starts[i + 1])`` (the last one open-ended), keyed by ``i``; empty
    buckets are left out. The bucket is a CASE over bound instants, so the one query reads the ``at`` index range on
    SQLite and PostgreSQL alike (no dialect's date functions)."""
    table = communication_log
    bucket = case(*[(table.c.at >= start, index) for index, start in reversed(list(enumerate(starts)))])
    inner = select(bucket.label("bucket"), table.c.http_status).where(table.c.at >= starts[0])
    if context_nip is not None:
        inner = inner.where(table.c.context_nip == context_nip)
    sub = inner.subquery()
    query = select(sub.c.bucket, func.count(), func.sum(case((sub.c.http_status == 429, 1), else_=0))).group_by(
        sub.c.bucket
    )
    rows = (await conn.execute(query)).tuples()
    return {int(index): (int(calls), int(limited or 0)) for index, calls, limited in rows}


async def purge_older_than(conn: AsyncConnection, cutoff: datetime) -> int:
    """Delete the entries before ``cutoff``; returns how many."""
    result = await conn.execute(delete(communication_log).where(communication_log.c.at < cutoff))
    return int(result.rowcount or 0)
