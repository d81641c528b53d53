"""Every query of the communication log; the caller's session, never a commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.db import communication_log as log_table


class LogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, lines: Sequence[dict[str, Any]]) -> None:
        await self.s.execute(insert(log_table), list(lines))

    async def page(
        self, client_nip: str, *, entry_id: uuid.UUID | None, after: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        stmt = select(log_table).where(log_table.c.client_nip == client_nip)
        if entry_id is not None:
            stmt = stmt.where(log_table.c.entry_id == entry_id)
        if after is not None:
            stmt = stmt.where(log_table.c.id > after)
        return (await self.s.execute(stmt.order_by(log_table.c.id).limit(limit))).all()
