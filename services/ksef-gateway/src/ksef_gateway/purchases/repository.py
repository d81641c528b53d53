"""Every query of the stored purchase invoices. Each function runs inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import purchase_invoice


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


# Built once and executed with bound parameters: ``insert().values(row)`` per invoice coerced and cache-keyed its
# ~35 values on every call, which was most of the cost of storing a window.
_INSERT_INVOICE = insert(purchase_invoice)


async def insert_invoices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """One executemany for a window's new invoices (every row carries every column)."""
    if rows:
        await session.execute(_INSERT_INVOICE, list(rows))


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
