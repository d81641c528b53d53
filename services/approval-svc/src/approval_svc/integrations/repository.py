"""Every query of the integrations capability; the caller's session, never a commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from approval_svc.db import integration


class IntegrationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    def _select(self, *, lock: bool) -> Any:
        stmt = select(integration)
        # The row lock serialises two changes of one integration (a consent racing a revoke) on PostgreSQL;
        # SQLite serialises writers anyway.
        return stmt.with_for_update() if lock and self.s.bind.dialect.name == "postgresql" else stmt

    async def get(self, integration_id: uuid.UUID, *, lock: bool = False) -> Row[Any] | None:
        stmt = self._select(lock=lock).where(integration.c.id == integration_id)
        return (await self.s.execute(stmt)).first()

    async def of_pair(self, office_id: uuid.UUID, client_nip: str, *, lock: bool = False) -> Row[Any] | None:
        stmt = self._select(lock=lock).where(
            integration.c.office_id == office_id, integration.c.client_nip == client_nip
        )
        return (await self.s.execute(stmt)).first()

    async def by_consent_token(self, token_hash: str, *, lock: bool = False) -> Row[Any] | None:
        stmt = self._select(lock=lock).where(integration.c.consent_token_hash == token_hash)
        return (await self.s.execute(stmt)).first()

    async def of_office(self, office_id: uuid.UUID) -> Sequence[Row[Any]]:
        stmt = (
            select(integration)
            .where(integration.c.office_id == office_id)
            .order_by(integration.c.requested_at.desc(), integration.c.id)
        )
        return (await self.s.execute(stmt)).all()

    async def of_client(self, client_nip: str) -> Sequence[Row[Any]]:
        stmt = select(integration).where(integration.c.client_nip == client_nip).order_by(integration.c.office_name)
        return (await self.s.execute(stmt)).all()

    async def overdue(self, now: datetime, limit: int) -> Sequence[Row[Any]]:
        """Requests whose link, and consents whose code, ran out unused: the oldest first."""
        stmt = (
            select(integration.c.id)
            .where(
                or_(
                    and_(integration.c.state == "requested", integration.c.consent_expires_at <= now),
                    and_(integration.c.state == "consented", integration.c.code_expires_at <= now),
                )
            )
            .order_by(integration.c.updated_at)
            .limit(limit)
        )
        return (await self.s.execute(stmt)).all()

    async def add(self, values: dict[str, Any]) -> None:
        await self.s.execute(insert(integration).values(**values))

    async def change(self, integration_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.s.execute(update(integration).where(integration.c.id == integration_id).values(**values))

    async def set_access(self, client_nip: str, office_nip: str | None, values: dict[str, Any]) -> int:
        """The gateway's report of KSeF access for a client (for one office with ``grant``, else every office)."""
        stmt = update(integration).where(integration.c.client_nip == client_nip)
        if office_nip is not None:
            stmt = stmt.where(integration.c.office_nip == office_nip)
        result = await self.s.execute(stmt.values(**values))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
