"""Every query of the month locks; the caller's session, never a commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.db import month_lock

APPROVED, OPEN = "approved", "open"


class MonthRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def locked(self, client_nip: str, periods: set[str]) -> set[str]:
        if not periods:
            return set()
        stmt = select(month_lock.c.period).where(
            month_lock.c.client_nip == client_nip,
            month_lock.c.period.in_(sorted(periods)),
            month_lock.c.state == APPROVED,
        )
        return {r.period for r in (await self.s.execute(stmt)).all()}

    async def of_client(self, client_nip: str) -> dict[str, Row[Any]]:
        stmt = select(month_lock).where(month_lock.c.client_nip == client_nip).order_by(month_lock.c.period)
        return {r.period: r for r in (await self.s.execute(stmt)).all()}

    async def put_if_newer(
        self, client_nip: str, period: str, state: str, revision: int, changed_at: datetime, changed_by: str | None
    ) -> bool:
        values = {
            "client_nip": client_nip,
            "period": period,
            "state": state,
            "revision": revision,
            "changed_at": changed_at,
            "changed_by": changed_by,
        }
        insert = pg_insert if self.s.bind.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(month_lock).values(**values)
        upsert = stmt.on_conflict_do_update(
            index_elements=[month_lock.c.client_nip, month_lock.c.period],
            set_={k: stmt.excluded[k] for k in ("state", "revision", "changed_at", "changed_by")},
            where=month_lock.c.revision < stmt.excluded.revision,
        ).returning(month_lock.c.period)
        return (await self.s.execute(upsert)).first() is not None
