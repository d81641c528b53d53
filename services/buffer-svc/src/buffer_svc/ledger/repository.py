"""Every query of the access ledger; the caller's session, never a commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.db import access_ledger


class LedgerRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, values: dict[str, Any]) -> None:
        await self.s.execute(insert(access_ledger).values(**values))

    async def page(self, client_nip: str, *, before: int | None, limit: int) -> Sequence[Row[Any]]:
        stmt = select(access_ledger).where(access_ledger.c.client_nip == client_nip)
        if before is not None:
            stmt = stmt.where(access_ledger.c.id < before)
        return (await self.s.execute(stmt.order_by(access_ledger.c.id.desc()).limit(limit))).all()
