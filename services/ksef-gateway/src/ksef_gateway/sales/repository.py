"""Every query of the sales invoices; the caller owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import sales_auto_send, sales_invoice, sales_invoice_history
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

    # --- the operators' overview ----------------------------------------------------------------------------

    async def client_nips_after(self, after: str | None, limit: int) -> list[str]:
        """The first ``limit`` client NIPs with a sales invoice above ``after``, in NIP order (keyset paging)."""
        query = select(sales_invoice.c.client_nip).distinct()
        if after is not None:
            query = query.where(sales_invoice.c.client_nip > after)
        result = await self.session.execute(query.order_by(sales_invoice.c.client_nip).limit(limit))
        return list(result.scalars())

    async def counts_of(self, client_nips: Collection[str]) -> dict[str, dict[str, int]]:
        """Invoices per status, per client of ``client_nips``."""
        result = await self.session.execute(
            select(sales_invoice.c.client_nip, sales_invoice.c.status, func.count())
            .where(sales_invoice.c.client_nip.in_(list(client_nips)))
            .group_by(sales_invoice.c.client_nip, sales_invoice.c.status)
        )
        counts: dict[str, dict[str, int]] = {}
        for nip, status, n in result.tuples():
            counts.setdefault(nip, {})[status] = int(n)
        return counts

    async def stuck_of(self, client_nips: Collection[str], before: datetime) -> dict[str, tuple[int, datetime]]:
        """Per client: invoices in ``sending``/``submitted`` that have not moved since before ``before`` (the sender
        sets ``updated_at`` on each transition only; a status poll that finds KSeF still processing leaves it), and
        the oldest such move."""
        result = await self.session.execute(
            select(sales_invoice.c.client_nip, func.count(), func.min(sales_invoice.c.updated_at))
            .where(
                sales_invoice.c.client_nip.in_(list(client_nips)),
                sales_invoice.c.status.in_([SalesStatus.SENDING.value, SalesStatus.SUBMITTED.value]),
                sales_invoice.c.updated_at < before,
            )
            .group_by(sales_invoice.c.client_nip)
        )
        # min() takes its argument's type, so the oldest move comes back as an aware UTC datetime on SQLite too.
        return {nip: (int(n), oldest) for nip, n, oldest in result.tuples()}

    async def offline_queue_of(self, client_nips: Collection[str]) -> dict[str, tuple[int, date | None, int]]:
        """Per client: invoices issued offline still waiting to reach KSeF (held, queued, sending, submitted), their
        nearest legal deadline, and how many have no deadline yet (the outage they hang on has not ended)."""
        waiting = [SalesStatus.HELD, SalesStatus.QUEUED, SalesStatus.SENDING, SalesStatus.SUBMITTED]
        result = await self.session.execute(
            select(
                sales_invoice.c.client_nip,
                func.count(),
                func.min(sales_invoice.c.offline_deadline),
                func.sum(case((sales_invoice.c.offline_deadline.is_(None), 1), else_=0)),
            )
            .where(
                sales_invoice.c.client_nip.in_(list(client_nips)),
                sales_invoice.c.offline_mode.is_not(None),
                sales_invoice.c.status.in_([s.value for s in waiting]),
            )
            .group_by(sales_invoice.c.client_nip)
        )
        return {nip: (int(n), nearest, int(open_ or 0)) for nip, n, nearest, open_ in result.tuples()}

    # --- offline invoices and their deadlines ---------------------------------------------------------------

    async def offline_unsent(self, limit: int = 1000) -> Sequence[Row[Any]]:
        """Invoices issued offline that KSeF has not accepted yet (a rejected one waits for its correction)."""
        result = await self.session.execute(
            select(*_SUMMARY)
            .where(
                sales_invoice.c.offline_mode.is_not(None),
                sales_invoice.c.status.not_in([SalesStatus.ACCEPTED.value, SalesStatus.DUPLICATE.value]),
            )
            .order_by(sales_invoice.c.created_at)
            .limit(limit)
        )
        return result.all()

    async def set_offline_fields(self, invoice_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.session.execute(update(sales_invoice).where(sales_invoice.c.id == invoice_id).values(**values))

    async def corrections_of(self, invoice_id: uuid.UUID) -> Sequence[Row[Any]]:
        result = await self.session.execute(select(*_SUMMARY).where(sales_invoice.c.corrects_invoice_id == invoice_id))
        return result.all()

    # --- auto-send rules and held invoices ------------------------------------------------------------------

    async def rules(self, client_nip: str) -> Row[Any] | None:
        result = await self.session.execute(select(sales_auto_send).where(sales_auto_send.c.client_nip == client_nip))
        return result.first()

    async def put_rules(self, client_nip: str, rules: dict[str, Any], *, by: str, at: datetime) -> None:
        values = {"rules": rules, "updated_by": by, "updated_at": at}
        updated = await self.session.execute(
            update(sales_auto_send).where(sales_auto_send.c.client_nip == client_nip).values(**values)
        )
        if not getattr(updated, "rowcount", 0):
            await self.session.execute(sales_auto_send.insert().values(client_nip=client_nip, **values))

    async def clients_with_backfill(self) -> Sequence[Row[Any]]:
        return (await self.session.execute(select(sales_auto_send))).all()

    async def mark_backfilled(self, client_nip: str, month: str, previous: str | None) -> bool:
        """Record the month as backfilled, only from the state the caller saw (one replica runs each backfill)."""
        condition = (
            sales_auto_send.c.last_backfill_month.is_(None)
            if previous is None
            else sales_auto_send.c.last_backfill_month == previous
        )
        result = await self.session.execute(
            update(sales_auto_send)
            .where(sales_auto_send.c.client_nip == client_nip, condition)
            .values(last_backfill_month=month)
        )
        return bool(getattr(result, "rowcount", 0))

    async def held(
        self, client_nip: str, *, issued_from: date | None = None, issued_to: date | None = None
    ) -> Sequence[Row[Any]]:
        query = select(*_SUMMARY).where(
            sales_invoice.c.client_nip == client_nip, sales_invoice.c.status == SalesStatus.HELD.value
        )
        if issued_from is not None:
            query = query.where(sales_invoice.c.issue_date >= issued_from)
        if issued_to is not None:
            query = query.where(sales_invoice.c.issue_date <= issued_to)
        return (await self.session.execute(query.order_by(sales_invoice.c.created_at))).all()
