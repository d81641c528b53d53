"""Every query of the sales invoices; the caller owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import sales_invoice, sales_invoice_history
from ksef_gateway.sales.domain import SalesStatus

# Columns of a list: everything but the documents, which are read one at a time.
_SUMMARY = [c for c in sales_invoice.c if c.name not in ("xml", "upo")]


class SalesRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, values: dict[str, Any], *, at: datetime, detail: dict[str, Any]) -> None:
        await self.session.execute(sales_invoice.insert().values(**values))
        await self.history(values["id"], values["status"], at, detail)

    async def history(self, invoice_id: uuid.UUID, status: str, at: datetime, detail: dict[str, Any]) -> None:
        await self.session.execute(
            sales_invoice_history.insert().values(invoice_id=invoice_id, at=at, status=status, detail=detail)
        )

    async def by_key(self, client_nip: str, key: str) -> Row[Any] | None:
        result = await self.session.execute(
            select(*_SUMMARY).where(sales_invoice.c.client_nip == client_nip, sales_invoice.c.idempotency_key == key)
        )
        return result.first()

    async def get(self, client_nip: str, invoice_id: uuid.UUID, *, documents: bool = False) -> Row[Any] | None:
        columns = list(sales_invoice.c) if documents else _SUMMARY
        result = await self.session.execute(
            select(*columns).where(sales_invoice.c.client_nip == client_nip, sales_invoice.c.id == invoice_id)
        )
        return result.first()

    async def lock(self, invoice_id: uuid.UUID) -> Row[Any] | None:
        """The row with its XML, locked for this transaction on PostgreSQL (SQLite serialises writers anyway)."""
        result = await self.session.execute(
            select(sales_invoice).where(sales_invoice.c.id == invoice_id).with_for_update()
        )
        return result.first()

    async def update(self, invoice_id: uuid.UUID, expected: str, values: dict[str, Any]) -> bool:
        """Move the invoice on only from the state the caller saw: a second worker's stale move changes nothing."""
        result = await self.session.execute(
            update(sales_invoice)
            .where(sales_invoice.c.id == invoice_id, sales_invoice.c.status == expected)
            .values(**values)
        )
        return bool(getattr(result, "rowcount", 0))

    async def page(
        self,
        client_nip: str,
        *,
        status: str | None,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        query = select(*_SUMMARY).where(sales_invoice.c.client_nip == client_nip)
        if status is not None:
            query = query.where(sales_invoice.c.status == status)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    sales_invoice.c.created_at < created,
                    and_(sales_invoice.c.created_at == created, sales_invoice.c.id < last_id),
                )
            )
        query = query.order_by(sales_invoice.c.created_at.desc(), sales_invoice.c.id.desc()).limit(limit)
        return (await self.session.execute(query)).all()

    async def events(self, invoice_id: uuid.UUID) -> Sequence[Row[Any]]:
        result = await self.session.execute(
            select(sales_invoice_history)
            .where(sales_invoice_history.c.invoice_id == invoice_id)
            .order_by(sales_invoice_history.c.id)
        )
        return result.all()

    async def contexts_with_work(self, now: datetime) -> list[str]:
        """Client NIPs with an invoice to send, reconcile or poll now."""
        result = await self.session.execute(
            select(sales_invoice.c.client_nip)
            .where(
                sales_invoice.c.status.in_(
                    [SalesStatus.QUEUED.value, SalesStatus.SENDING.value, SalesStatus.SUBMITTED.value]
                ),
                or_(sales_invoice.c.next_attempt_at.is_(None), sales_invoice.c.next_attempt_at <= now),
            )
            .group_by(sales_invoice.c.client_nip)
        )
        return [r.client_nip for r in result]

    async def due(self, client_nip: str, status: SalesStatus, now: datetime, limit: int) -> Sequence[Row[Any]]:
        """The context's invoices in ``status`` whose next attempt is due, oldest first (the queue's order)."""
        result = await self.session.execute(
            select(*_SUMMARY)
            .where(
                sales_invoice.c.client_nip == client_nip,
                sales_invoice.c.status == status.value,
                or_(sales_invoice.c.next_attempt_at.is_(None), sales_invoice.c.next_attempt_at <= now),
            )
            .order_by(sales_invoice.c.created_at, sales_invoice.c.id)
            .limit(limit)
        )
        return result.all()

    async def references_in(self, client_nip: str, session_reference: str) -> set[str]:
        """KSeF references of the session's sends already tied to an invoice of ours."""
        result = await self.session.execute(
            select(sales_invoice.c.invoice_reference).where(
                sales_invoice.c.client_nip == client_nip,
                sales_invoice.c.session_reference == session_reference,
                sales_invoice.c.invoice_reference.is_not(None),
            )
        )
        return {r.invoice_reference for r in result}

    async def next_due(self, *, excluding: Collection[str] = ()) -> datetime | None:
        """The earliest scheduled attempt of any unfinished invoice outside ``excluding``: when the sender's loop
        must look again."""
        query = select(func.min(sales_invoice.c.next_attempt_at)).where(
            sales_invoice.c.status.in_(
                [SalesStatus.QUEUED.value, SalesStatus.SENDING.value, SalesStatus.SUBMITTED.value]
            )
        )
        if excluding:
            query = query.where(sales_invoice.c.client_nip.not_in(list(excluding)))
        result = await self.session.execute(query)
        due: datetime | None = result.scalar()
        return due

    async def accepted_with_hash(self, client_nip: str, invoice_hash: str) -> Row[Any] | None:
        result = await self.session.execute(
            select(*_SUMMARY)
            .where(
                sales_invoice.c.client_nip == client_nip,
                sales_invoice.c.invoice_hash == invoice_hash,
                sales_invoice.c.status.in_([SalesStatus.ACCEPTED.value, SalesStatus.DUPLICATE.value]),
            )
            .limit(1)
        )
        return result.first()

    async def counts(self, client_nip: str) -> dict[str, int]:
        result = await self.session.execute(
            select(sales_invoice.c.status, func.count())
            .where(sales_invoice.c.client_nip == client_nip)
            .group_by(sales_invoice.c.status)
        )
        return {status: int(n) for status, n in result.tuples()}
