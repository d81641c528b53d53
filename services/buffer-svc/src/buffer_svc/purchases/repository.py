"""Every query of the purchase buffer; the caller's session, never a commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Row, and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.db import purchase_entry as entry
from buffer_svc.purchases.domain import SORTS, Decision


@dataclass(frozen=True)
class EntryFilter:
    period: str | None = None
    decision: Decision | None = None
    seller: str | None = None  # a seller NIP (exact) or a part of the seller's name
    gross_min: Decimal | None = None
    gross_max: Decimal | None = None
    text: str | None = None  # invoice number, KSeF number, seller name or description contains it
    imported: bool | None = None
    archived: bool = False
    issued_from: date | None = None
    issued_to: date | None = None


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class EntryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    @property
    def _postgres(self) -> bool:
        return self.s.bind.dialect.name == "postgresql"

    async def add(self, values: dict[str, Any]) -> bool:
        """Insert one entry; False when the client has it already (ON CONFLICT: concurrent deliveries of two
        events for one invoice race on the unique key and the loser sees the conflict)."""
        insert = pg_insert if self._postgres else sqlite_insert
        stmt = (
            insert(entry)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[entry.c.client_nip, entry.c.ksef_number])
            .returning(entry.c.id)
        )
        return (await self.s.execute(stmt)).first() is not None

    def _select(self, *, lock: bool) -> Any:
        stmt = select(entry)
        return stmt.with_for_update() if lock and self._postgres else stmt

    async def get(self, client_nip: str, entry_id: uuid.UUID, *, lock: bool = False) -> Row[Any] | None:
        stmt = self._select(lock=lock).where(entry.c.client_nip == client_nip, entry.c.id == entry_id)
        return (await self.s.execute(stmt)).first()

    async def by_ksef_number(self, client_nip: str, ksef_number: str) -> Row[Any] | None:
        stmt = select(entry).where(entry.c.client_nip == client_nip, entry.c.ksef_number == ksef_number)
        return (await self.s.execute(stmt)).first()

    async def many(
        self,
        client_nip: str,
        *,
        ids: Iterable[uuid.UUID] = (),
        ksef_numbers: Iterable[str] = (),
        lock: bool = False,
    ) -> Sequence[Row[Any]]:
        ids, numbers = list(ids), list(ksef_numbers)
        if not ids and not numbers:
            return []
        stmt = self._select(lock=lock).where(
            entry.c.client_nip == client_nip, or_(entry.c.id.in_(ids), entry.c.ksef_number.in_(numbers))
        )
        return (await self.s.execute(stmt.order_by(entry.c.issue_date, entry.c.id))).all()

    async def change(self, entry_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.s.execute(
            update(entry).where(entry.c.id == entry_id).values(**values, revision=entry.c.revision + 1)
        )

    async def page(
        self, client_nip: str, where: EntryFilter, *, sort: str, after: tuple[Any, str] | None, limit: int
    ) -> Sequence[Row[Any]]:
        """One page in ``sort`` order, after the (value, id) a previous page ended at: keyset pagination, so a
        page costs the same at any depth and entries arriving meanwhile neither repeat nor vanish."""
        column_name, descending = SORTS[sort]
        column = entry.c[column_name]
        stmt = select(entry).where(entry.c.client_nip == client_nip, *self._conditions(where))
        if after is not None:
            value, last_id = after
            last = uuid.UUID(last_id)
            if descending:
                stmt = stmt.where(or_(column < value, and_(column == value, entry.c.id < last)))
            else:
                stmt = stmt.where(or_(column > value, and_(column == value, entry.c.id > last)))
        order = (column.desc(), entry.c.id.desc()) if descending else (column.asc(), entry.c.id.asc())
        return (await self.s.execute(stmt.order_by(*order).limit(limit))).all()

    def _conditions(self, where: EntryFilter) -> list[Any]:
        c = entry.c
        conditions: list[Any] = [c.archived_at.is_not(None) if where.archived else c.archived_at.is_(None)]
        if where.period is not None:
            conditions.append(c.period == where.period)
        if where.decision is not None:
            conditions.append(c.decision == where.decision.value)
        if where.seller:
            seller = where.seller.strip()
            conditions.append(
                c.seller_nip == seller if seller.isdigit() else func.lower(c.seller_name).like(_like(seller), "\\")
            )
        if where.gross_min is not None:
            conditions.append(c.gross_amount >= where.gross_min)
        if where.gross_max is not None:
            conditions.append(c.gross_amount <= where.gross_max)
        if where.issued_from is not None:
            conditions.append(c.issue_date >= where.issued_from)
        if where.issued_to is not None:
            conditions.append(c.issue_date <= where.issued_to)
        if where.imported is not None:
            conditions.append(c.imported_at.is_not(None) if where.imported else c.imported_at.is_(None))
        if where.text:
            pattern = _like(where.text.strip())
            conditions.append(
                or_(
                    func.lower(c.invoice_number).like(pattern, "\\"),
                    func.lower(c.ksef_number).like(pattern, "\\"),
                    func.lower(c.seller_name).like(pattern, "\\"),
                    func.lower(c.description).like(pattern, "\\"),
                )
            )
        return conditions

    async def last_decisions(self, client_nip: str, seller_nips: Iterable[str]) -> dict[str, Row[Any]]:
        """Per seller, this client's most recent decided entry: the basis of a suggestion. One query for a whole
        page (a window function), and only this client's rows: a suggestion never comes from another client."""
        sellers = sorted(set(seller_nips))
        if not sellers:
            return {}
        ranked = (
            select(
                entry.c.seller_nip,
                entry.c.ksef_number,
                entry.c.invoice_number,
                entry.c.decision,
                entry.c.description,
                entry.c.decided_at,
                func.row_number()
                .over(partition_by=entry.c.seller_nip, order_by=(entry.c.decided_at.desc(), entry.c.id.desc()))
                .label("rank"),
            )
            .where(
                entry.c.client_nip == client_nip,
                entry.c.seller_nip.in_(sellers),
                entry.c.decision != Decision.UNVERIFIED.value,
                entry.c.decided_at.is_not(None),
            )
            .subquery()
        )
        rows = (await self.s.execute(select(ranked).where(ranked.c.rank == 1))).all()
        return {r.seller_nip: r for r in rows}

    async def ready(self, client_nip: str, period: str | None, *, include_imported: bool) -> Sequence[Row[Any]]:
        """What the office may take: marked to book, not archived (not yet imported unless asked)."""
        stmt = select(entry).where(
            entry.c.client_nip == client_nip,
            entry.c.decision == Decision.BOOK.value,
            entry.c.archived_at.is_(None),
        )
        if period is not None:
            stmt = stmt.where(entry.c.period == period)
        if not include_imported:
            stmt = stmt.where(entry.c.imported_at.is_(None))
        return (await self.s.execute(stmt.order_by(entry.c.issue_date, entry.c.id))).all()

    async def corrections_of(self, client_nip: str, ksef_number: str) -> Sequence[Row[Any]]:
        stmt = select(entry.c.id, entry.c.ksef_number, entry.c.invoice_number).where(
            entry.c.client_nip == client_nip, entry.c.corrected_ksef_number == ksef_number
        )
        return (await self.s.execute(stmt.order_by(entry.c.issue_date))).all()

    async def month_counts(self, client_nip: str) -> Sequence[Row[Any]]:
        """Per month and decision: entries, imported ones, late arrivals (archived entries counted apart)."""
        stmt = (
            select(
                entry.c.period,
                entry.c.decision,
                (entry.c.archived_at.is_not(None)).label("archived"),
                func.count().label("entries"),
                func.count(entry.c.imported_at).label("imported"),
                func.sum(func.cast(entry.c.late_arrival, Integer)).label("late"),
            )
            .where(entry.c.client_nip == client_nip)
            .group_by(entry.c.period, entry.c.decision, entry.c.archived_at.is_not(None))
            .order_by(entry.c.period)
        )
        return (await self.s.execute(stmt)).all()
