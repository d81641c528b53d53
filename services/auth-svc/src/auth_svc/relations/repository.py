"""Queries of the office-client relations (and of which clients an accountant is assigned to)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import membership, membership_client, office_client, organisation


class RelationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def relation(self, office_id: uuid.UUID, client_id: uuid.UUID) -> Row[Any] | None:
        stmt = select(office_client).where(
            office_client.c.office_id == office_id, office_client.c.client_id == client_id
        )
        return (await self.s.execute(stmt)).first()

    async def add_relation(self, **values: Any) -> None:
        await self.s.execute(insert(office_client).values(**values))

    async def set_relation_state(self, office_id: uuid.UUID, client_id: uuid.UUID, state: str, now: datetime) -> None:
        await self.s.execute(
            update(office_client)
            .where(office_client.c.office_id == office_id, office_client.c.client_id == client_id)
            .values(state=state, updated_at=now)
        )

    async def follow(self, office_id: uuid.UUID, client_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.s.execute(
            update(office_client)
            .where(office_client.c.office_id == office_id, office_client.c.client_id == client_id)
            .values(**values)
        )

    async def clients_of(self, office_id: uuid.UUID, only: Iterable[uuid.UUID] | None = None) -> Sequence[Row[Any]]:
        stmt = (
            select(
                organisation.c.id,
                organisation.c.name,
                organisation.c.nip,
                office_client.c.state,
                office_client.c.created_at,
                office_client.c.updated_at,
            )
            .join(office_client, office_client.c.client_id == organisation.c.id)
            .where(office_client.c.office_id == office_id)
            .order_by(organisation.c.name, organisation.c.id)
        )
        if only is not None:
            stmt = stmt.where(organisation.c.id.in_(list(only)))
        return (await self.s.execute(stmt)).all()

    async def assigned_clients(self, user_id: uuid.UUID, office_id: uuid.UUID) -> set[uuid.UUID] | None:
        """The clients an office member is limited to; None when not limited (or not a member)."""
        m = (
            await self.s.execute(
                select(membership.c.id, membership.c.restricted).where(
                    membership.c.user_id == user_id, membership.c.organisation_id == office_id
                )
            )
        ).first()
        if m is None or not m.restricted:
            return None
        rows = await self.s.execute(
            select(membership_client.c.client_id).where(membership_client.c.membership_id == m.id)
        )
        return {r.client_id for r in rows}
