"""The buffer's side of month approval. approval-svc owns the approval (who, when, the counts it announced); the
buffer follows its ``month.approved`` / ``month.unlocked`` events and enforces them on every client edit.

Each event carries approval-svc's revision of the month and a lock changes only for a newer one, so a redelivered
approval never re-locks a month unlocked after it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.communication.service import CommunicationLog, line
from buffer_svc.months.repository import APPROVED, OPEN, MonthRepository

__all__ = ["APPROVED", "OPEN", "MonthLocks"]


class MonthLocks:
    def __init__(self, log: CommunicationLog) -> None:
        self._log = log

    async def locked(self, session: AsyncSession, client_nip: str, periods: set[str]) -> set[str]:
        return await MonthRepository(session).locked(client_nip, periods)

    async def of_client(self, session: AsyncSession, client_nip: str) -> dict[str, Row[Any]]:
        return await MonthRepository(session).of_client(client_nip)

    async def follow(
        self,
        session: AsyncSession,
        client_nip: str,
        period: str,
        *,
        approved: bool,
        revision: int,
        changed_at: datetime,
        changed_by: str | None,
    ) -> bool:
        """Apply approval-svc's change when newer than the one held; True when it changed the lock."""
        state = APPROVED if approved else OPEN
        changed = await MonthRepository(session).put_if_newer(
            client_nip, period, state, revision, changed_at, changed_by
        )
        if changed:
            kind = "month_approved" if approved else "month_unlocked"
            await self._log.record(
                session,
                line(client_nip, kind, changed_at, actor=changed_by, actor_side="client", detail={"period": period}),
            )
        return changed
