"""Every query of month approval; the caller's session, never a commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from approval_svc.db import month, month_entry
from approval_svc.months.domain import MonthCounts


class MonthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    @property
    def _postgres(self) -> bool:
        return self.s.bind.dialect.name == "postgresql"

    async def get(self, client_nip: str, period: str, *, lock: bool = False) -> Row[Any] | None:
        stmt = select(month).where(month.c.client_nip == client_nip, month.c.period == period)
        if lock and self._postgres:
            stmt = stmt.with_for_update()
        return (await self.s.execute(stmt)).first()

    async def ensure(self, client_nip: str, period: str, now: datetime) -> None:
        insert_ = pg_insert if self._postgres else sqlite_insert
        await self.s.execute(
            insert_(month)
            .values(client_nip=client_nip, period=period, state="open", revision=0, late_arrivals=0, updated_at=now)
            .on_conflict_do_nothing()
        )

    async def change(self, client_nip: str, period: str, values: dict[str, Any]) -> None:
        await self.s.execute(
            update(month).where(month.c.client_nip == client_nip, month.c.period == period).values(**values)
        )

    async def of_client(self, client_nip: str) -> Sequence[Row[Any]]:
        stmt = select(month).where(month.c.client_nip == client_nip).order_by(month.c.period.desc())
        return (await self.s.execute(stmt)).all()

    async def counts(self, client_nip: str, period: str) -> MonthCounts:
        return (await self._counts(client_nip, period)).get(period, MonthCounts())

    async def counts_by_period(self, client_nip: str) -> dict[str, MonthCounts]:
        return await self._counts(client_nip, None)

    async def _counts(self, client_nip: str, period: str | None) -> dict[str, MonthCounts]:
        stmt = (
            select(
                month_entry.c.period,
                month_entry.c.decision,
                month_entry.c.archived,
                func.count().label("n"),
                func.count().filter(month_entry.c.imported.is_(True)).label("imported"),
            )
            .where(month_entry.c.client_nip == client_nip)
            .group_by(month_entry.c.period, month_entry.c.decision, month_entry.c.archived)
        )
        if period is not None:
            stmt = stmt.where(month_entry.c.period == period)
        values: dict[str, dict[str, int]] = {}
        for r in (await self.s.execute(stmt)).all():
            v = values.setdefault(r.period, {"unverified": 0, "book": 0, "dont_book": 0, "imported": 0, "archived": 0})
            v["imported"] += r.imported
            if r.archived:
                v["archived"] += r.n
            else:
                v[r.decision] += r.n
        return {p: MonthCounts(**v) for p, v in values.items()}

    async def booked(self, client_nip: str, period: str) -> Sequence[str]:
        """The KSeF numbers marked to book in the month (not archived): the approval's document list."""
        stmt = (
            select(month_entry.c.ksef_number)
            .where(
                month_entry.c.client_nip == client_nip,
                month_entry.c.period == period,
                month_entry.c.decision == "book",
                month_entry.c.archived.is_(False),
            )
            .order_by(month_entry.c.ksef_number)
        )
        return list((await self.s.execute(stmt)).scalars())

    async def entry(self, client_nip: str, ksef_number: str) -> Row[Any] | None:
        stmt = select(month_entry).where(
            month_entry.c.client_nip == client_nip, month_entry.c.ksef_number == ksef_number
        )
        return (await self.s.execute(stmt)).first()

    async def add_entry(self, values: dict[str, Any]) -> None:
        await self.s.execute(insert(month_entry).values(**values))

    async def change_entry(self, client_nip: str, ksef_number: str, values: dict[str, Any]) -> None:
        await self.s.execute(
            update(month_entry)
            .where(month_entry.c.client_nip == client_nip, month_entry.c.ksef_number == ksef_number)
            .values(**values)
        )
