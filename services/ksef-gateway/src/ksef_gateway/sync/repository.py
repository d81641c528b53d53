"""Every query of the purchase sync: per-client sync settings, per-subject sync state, rejected invoices.

Each function runs inside the caller's transaction; ``sync.service`` decides where transactions begin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import sync_client, sync_rejection, sync_state
from ksef_gateway.sync.domain import SubjectType

# --- per-client settings ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSync:
    client_nip: str
    month_close_day: int | None
    backfill_months: int | None
    fetch_requested_at: datetime | None
    fetch_requested_by: str | None


def _client(row: Any) -> ClientSync:
    return ClientSync(
        client_nip=row.client_nip,
        month_close_day=row.month_close_day,
        backfill_months=row.backfill_months,
        fetch_requested_at=row.fetch_requested_at,
        fetch_requested_by=row.fetch_requested_by,
    )


async def load_client(session: AsyncSession, nip: str) -> ClientSync | None:
    row = (await session.execute(select(sync_client).where(sync_client.c.client_nip == nip))).one_or_none()
    return _client(row) if row is not None else None


async def load_clients(session: AsyncSession, nips: Iterable[str]) -> dict[str, ClientSync]:
    wanted = list(nips)
    if not wanted:
        return {}
    rows = (await session.execute(select(sync_client).where(sync_client.c.client_nip.in_(wanted)))).all()
    return {row.client_nip: _client(row) for row in rows}


async def client_nips_after(session: AsyncSession, after: str | None, limit: int) -> list[str]:
    """The first ``limit`` NIPs with sync settings or sync state above ``after``, in NIP order (keyset paging)."""
    queries = []
    for column in (sync_client.c.client_nip, sync_state.c.client_nip):
        query = select(column.label("nip")).distinct()
        if after is not None:
            query = query.where(column > after)
        queries.append(query.order_by(column).limit(limit))
    nips: set[str] = set()
    for query in queries:
        nips.update((await session.execute(query)).scalars())
    return sorted(nips)[:limit]


async def upsert_client(session: AsyncSession, nip: str, now: datetime, **values: Any) -> ClientSync:
    existing = await load_client(session, nip)
    if existing is None:
        base: dict[str, Any] = {
            "client_nip": nip,
            "month_close_day": None,
            "backfill_months": None,
            "fetch_requested_at": None,
            "fetch_requested_by": None,
        }
        await session.execute(insert(sync_client).values({**base, **values, "updated_at": now}))
    elif values:
        await session.execute(
            update(sync_client).where(sync_client.c.client_nip == nip).values(**values, updated_at=now)
        )
    client = await load_client(session, nip)
    assert client is not None
    return client


async def clear_fetch_request(session: AsyncSession, nip: str, requested_at: datetime, now: datetime) -> None:
    """Only the request that was served: one made while the run was going stays queued."""
    await session.execute(
        update(sync_client)
        .where(sync_client.c.client_nip == nip, sync_client.c.fetch_requested_at <= requested_at)
        .values(fetch_requested_at=None, fetch_requested_by=None, updated_at=now)
    )


# --- per-subject state -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncState:
    client_nip: str
    subject_type: SubjectType
    checkpoint: datetime | None
    hwm: datetime | None
    backfilled: bool
    last_delta: int | None
    last_run_at: datetime | None
    last_success_at: datetime | None
    next_run_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    export_reference: str | None
    export_started_at: datetime | None
    export_window_start: datetime | None
    export_window_end: datetime | None
    export_key: bytes | None


def _state(row: Any) -> SyncState:
    return SyncState(
        client_nip=row.client_nip,
        subject_type=SubjectType(row.subject_type),
        checkpoint=row.checkpoint,
        hwm=row.hwm,
        backfilled=row.backfilled,
        last_delta=row.last_delta,
        last_run_at=row.last_run_at,
        last_success_at=row.last_success_at,
        next_run_at=row.next_run_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        consecutive_failures=row.consecutive_failures,
        export_reference=row.export_reference,
        export_started_at=row.export_started_at,
        export_window_start=row.export_window_start,
        export_window_end=row.export_window_end,
        export_key=row.export_key,
    )


def _state_key(nip: str, subject: SubjectType) -> Any:
    return and_(sync_state.c.client_nip == nip, sync_state.c.subject_type == subject.value)


async def load_state(session: AsyncSession, nip: str, subject: SubjectType) -> SyncState | None:
    row = (await session.execute(select(sync_state).where(_state_key(nip, subject)))).one_or_none()
    return _state(row) if row is not None else None


async def load_states(session: AsyncSession, nip: str) -> list[SyncState]:
    rows = (
        await session.execute(
            select(sync_state).where(sync_state.c.client_nip == nip).order_by(sync_state.c.subject_type)
        )
    ).all()
    return [_state(row) for row in rows]


async def load_states_of(session: AsyncSession, nips: Sequence[str]) -> list[SyncState]:
    if not nips:
        return []
    rows = (await session.execute(select(sync_state).where(sync_state.c.client_nip.in_(list(nips))))).all()
    return [_state(row) for row in rows]


async def ensure_states(session: AsyncSession, pairs: Iterable[tuple[str, SubjectType]], now: datetime) -> None:
    """A state row per (client, subject) the scheduler looks after; new ones are due at once."""
    wanted = list(pairs)
    if not wanted:
        return
    existing = {
        (row.client_nip, row.subject_type)
        for row in (
            await session.execute(
                select(sync_state.c.client_nip, sync_state.c.subject_type).where(
                    tuple_(sync_state.c.client_nip, sync_state.c.subject_type).in_([(n, s.value) for n, s in wanted])
                )
            )
        ).all()
    }
    missing = [(n, s) for n, s in wanted if (n, s.value) not in existing]
    if missing:
        await session.execute(
            insert(sync_state),
            [
                {
                    "client_nip": nip,
                    "subject_type": subject.value,
                    "checkpoint": None,
                    "hwm": None,
                    "backfilled": False,
                    "last_delta": None,
                    "last_run_at": None,
                    "last_success_at": None,
                    "next_run_at": now,
                    "last_error": None,
                    "last_error_at": None,
                    "consecutive_failures": 0,
                    "export_reference": None,
                    "export_started_at": None,
                    "export_window_start": None,
                    "export_window_end": None,
                    "export_key": None,
                    "updated_at": now,
                }
                for nip, subject in missing
            ],
        )


async def update_state(session: AsyncSession, nip: str, subject: SubjectType, now: datetime, **values: Any) -> None:
    await session.execute(update(sync_state).where(_state_key(nip, subject)).values(**values, updated_at=now))


async def due_states(session: AsyncSession, nips: Sequence[str], now: datetime) -> list[SyncState]:
    if not nips:
        return []
    rows = (
        await session.execute(
            select(sync_state).where(
                sync_state.c.client_nip.in_(list(nips)),
                or_(sync_state.c.next_run_at.is_(None), sync_state.c.next_run_at <= now),
            )
        )
    ).all()
    return [_state(row) for row in rows]


async def next_run_after(session: AsyncSession, nips: Sequence[str], now: datetime) -> datetime | None:
    """The earliest ``next_run_at`` of these clients' subjects that is still ahead of ``now``."""
    if not nips:
        return None
    found: datetime | None = (
        await session.execute(
            select(func.min(sync_state.c.next_run_at)).where(
                sync_state.c.client_nip.in_(list(nips)), sync_state.c.next_run_at > now
            )
        )
    ).scalar_one_or_none()
    return found


# --- rejections --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    ksef_number: str
    subject_type: str
    reason: str
    detail: str
    attempts: int
    given_up: bool
    first_seen_at: datetime
    last_seen_at: datetime


async def record_rejection(
    session: AsyncSession,
    *,
    nip: str,
    ksef_number: str,
    subject: SubjectType,
    reason: str,
    detail: str,
    now: datetime,
    max_attempts: int,
) -> Rejection:
    row = (
        await session.execute(
            select(sync_rejection).where(
                sync_rejection.c.client_nip == nip, sync_rejection.c.ksef_number == ksef_number
            )
        )
    ).one_or_none()
    attempts = (row.attempts if row is not None else 0) + 1
    given_up = attempts >= max_attempts
    values = {
        "subject_type": subject.value,
        "reason": reason,
        "detail": detail,
        "attempts": attempts,
        "given_up": given_up,
        "last_seen_at": now,
    }
    if row is None:
        await session.execute(
            insert(sync_rejection).values(client_nip=nip, ksef_number=ksef_number, first_seen_at=now, **values)
        )
        first_seen = now
    else:
        await session.execute(
            update(sync_rejection)
            .where(sync_rejection.c.client_nip == nip, sync_rejection.c.ksef_number == ksef_number)
            .values(**values)
        )
        first_seen = row.first_seen_at
    return Rejection(ksef_number, subject.value, reason, detail, attempts, given_up, first_seen, now)


async def clear_rejections(session: AsyncSession, nip: str, numbers: Sequence[str]) -> None:
    if numbers:
        await session.execute(
            delete(sync_rejection).where(
                sync_rejection.c.client_nip == nip, sync_rejection.c.ksef_number.in_(list(numbers))
            )
        )


async def list_rejections(session: AsyncSession, nip: str, limit: int = 100) -> list[Rejection]:
    rows = (
        await session.execute(
            select(sync_rejection)
            .where(sync_rejection.c.client_nip == nip)
            .order_by(sync_rejection.c.last_seen_at.desc())
            .limit(limit)
        )
    ).all()
    return [
        Rejection(
            r.ksef_number, r.subject_type, r.reason, r.detail, r.attempts, r.given_up, r.first_seen_at, r.last_seen_at
        )
        for r in rows
    ]
