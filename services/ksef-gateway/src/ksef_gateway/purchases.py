"""Queries of the purchase sync: stored invoices, per-client settings, per-subject sync state, rejections.

Each function runs inside the caller's transaction; the sync engine and the API decide where transactions begin.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import purchase_invoice, sync_client, sync_rejection, sync_state
from ksef_gateway.domain.fa_header import InvoiceHeader
from ksef_gateway.domain.sync import SubjectType

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


# --- invoices ----------------------------------------------------------------------------------------------------


async def stored_numbers(session: AsyncSession, nip: str, numbers: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for offset in range(0, len(numbers), 500):
        chunk = list(numbers[offset : offset + 500])
        rows = await session.execute(
            select(purchase_invoice.c.ksef_number).where(
                purchase_invoice.c.client_nip == nip, purchase_invoice.c.ksef_number.in_(chunk)
            )
        )
        found.update(rows.scalars())
    return found


def _party_json(identifier_type: str, value: str | None, name: str | None) -> dict[str, Any]:
    return {"identifier": {"type": identifier_type, "value": value}, "name": name}


def invoice_row(
    *,
    nip: str,
    ksef_number: str,
    subject: SubjectType,
    header: InvoiceHeader,
    xml: bytes,
    invoice_hash: str,
    acquisition_date: datetime,
    permanent_storage_date: datetime | None,
    invoicing_date: datetime | None,
    fetched_at: datetime,
    fetched_via: str,
    event_id: uuid.UUID,
) -> dict[str, Any]:
    return {
        "client_nip": nip,
        "ksef_number": ksef_number,
        "subject_type": subject.value,
        "form": header.form,
        "invoice_number": header.invoice_number,
        "issue_date": header.issue_date,
        "seller_nip": header.seller_nip,
        "seller_name": header.seller_name,
        "buyer_identifier_type": header.buyer.type,
        "buyer_identifier": header.buyer.value,
        "buyer_name": header.buyer_name,
        "third_subjects": [
            {**_party_json(t.identifier.type, t.identifier.value, t.name), "role": t.role, "other_role": t.other_role}
            for t in header.third_subjects
        ],
        "currency": header.currency,
        "net_amount": header.net_amount,
        "vat_amount": header.vat_amount,
        "gross_amount": header.gross_amount,
        "vat_amount_pln": header.vat_amount_pln,
        "invoice_type": header.invoice_type,
        "corrected_ksef_number": header.corrected_ksef_number,
        "corrected_invoice_number": header.corrected_invoice_number,
        "corrected_invoices": [
            {
                "invoice_number": c.invoice_number,
                "issue_date": c.issue_date.isoformat() if c.issue_date else None,
                "ksef_number": c.ksef_number,
            }
            for c in header.corrected_invoices
        ],
        "invoice_hash": invoice_hash,
        "xml": xml,
        "xml_size": len(xml),
        "acquisition_date": acquisition_date,
        "permanent_storage_date": permanent_storage_date,
        "invoicing_date": invoicing_date,
        "fetched_at": fetched_at,
        "fetched_via": fetched_via,
        "event_id": event_id,
    }


# Built once and executed with bound parameters: ``insert().values(row)`` per invoice coerced and cache-keyed its
# ~35 values on every call, which was most of the cost of storing a window.
_INSERT_INVOICE = insert(purchase_invoice)


async def insert_invoices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany for a window's new invoices (every row carries every column)."""
    if rows:
        await session.execute(_INSERT_INVOICE, list(rows))


async def insert_invoice(session: AsyncSession, row: dict[str, Any]) -> None:
    await insert_invoices(session, [row])


@dataclass(frozen=True)
class StoredInvoice:
    client_nip: str
    ksef_number: str
    subject_type: str
    form: str
    invoice_number: str
    issue_date: date
    seller_nip: str
    seller_name: str | None
    buyer_identifier_type: str
    buyer_identifier: str | None
    buyer_name: str | None
    third_subjects: list[dict[str, Any]]
    currency: str
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    vat_amount_pln: Decimal
    invoice_type: str
    corrected_ksef_number: str | None
    corrected_invoice_number: str | None
    corrected_invoices: list[dict[str, Any]]
    invoice_hash: str
    xml_size: int
    acquisition_date: datetime
    permanent_storage_date: datetime | None
    invoicing_date: datetime | None
    fetched_at: datetime
    fetched_via: str


_METADATA_COLUMNS = [c for c in purchase_invoice.c if c.name not in ("xml", "event_id")]


def _stored(row: Any) -> StoredInvoice:
    values = dict(row._mapping)
    for name in ("net_amount", "vat_amount", "gross_amount", "vat_amount_pln"):
        # SQLite hands back floats-as-Decimal with the scale lost; money is two decimals everywhere.
        values[name] = Decimal(values[name]).quantize(Decimal("0.01"))
    return StoredInvoice(**values)


async def list_invoices(
    session: AsyncSession,
    nip: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None,
    acquired_from: datetime | None = None,
    acquired_to: datetime | None = None,
) -> list[StoredInvoice]:
    """Keyset pages in acquisition order (the legal receipt date), stable while new invoices arrive."""
    query = select(*_METADATA_COLUMNS).where(purchase_invoice.c.client_nip == nip)
    if acquired_from is not None:
        query = query.where(purchase_invoice.c.acquisition_date >= acquired_from)
    if acquired_to is not None:
        query = query.where(purchase_invoice.c.acquisition_date < acquired_to)
    if after is not None:
        at, number = after
        query = query.where(
            or_(
                purchase_invoice.c.acquisition_date > at,
                and_(purchase_invoice.c.acquisition_date == at, purchase_invoice.c.ksef_number > number),
            )
        )
    query = query.order_by(purchase_invoice.c.acquisition_date, purchase_invoice.c.ksef_number).limit(limit)
    return [_stored(row) for row in (await session.execute(query)).all()]


async def count_invoices(session: AsyncSession, nip: str) -> int:
    total = await session.scalar(
        select(func.count()).select_from(purchase_invoice).where(purchase_invoice.c.client_nip == nip)
    )
    return int(total or 0)


async def load_invoice(session: AsyncSession, nip: str, ksef_number: str) -> StoredInvoice | None:
    row = (
        await session.execute(
            select(*_METADATA_COLUMNS).where(
                purchase_invoice.c.client_nip == nip, purchase_invoice.c.ksef_number == ksef_number
            )
        )
    ).one_or_none()
    return _stored(row) if row is not None else None


async def load_invoice_xml(session: AsyncSession, nip: str, ksef_number: str) -> tuple[bytes, str] | None:
    row = (
        await session.execute(
            select(purchase_invoice.c.xml, purchase_invoice.c.invoice_hash).where(
                purchase_invoice.c.client_nip == nip, purchase_invoice.c.ksef_number == ksef_number
            )
        )
    ).one_or_none()
    return (bytes(row.xml), row.invoice_hash) if row is not None else None


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
