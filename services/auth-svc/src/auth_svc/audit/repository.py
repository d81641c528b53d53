"""Queries of the audit log (entries are written by ``unit_of_work.Tx.audit`` in each action's transaction)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import audit_event


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def entries_of(
        self, org_id: uuid.UUID, *, event: str | None, before_id: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        stmt = select(audit_event).where(audit_event.c.organisation_id == org_id)
        if event:
            stmt = stmt.where(audit_event.c.event == event)
        if before_id is not None:
            stmt = stmt.where(audit_event.c.id < before_id)
        return (await self.s.execute(stmt.order_by(audit_event.c.id.desc()).limit(limit))).all()
