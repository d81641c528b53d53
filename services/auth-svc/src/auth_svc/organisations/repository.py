"""Queries of the organisations capability."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import membership, organisation


class OrganisationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def organisation(self, org_id: uuid.UUID) -> Row[Any] | None:
        return (await self.s.execute(select(organisation).where(organisation.c.id == org_id))).first()

    async def organisation_by_nip(self, kind: str, nip: str) -> Row[Any] | None:
        stmt = select(organisation).where(organisation.c.kind == kind, organisation.c.nip == nip)
        return (await self.s.execute(stmt)).first()

    async def organisations(self, ids: Iterable[uuid.UUID] | None = None) -> Sequence[Row[Any]]:
        stmt = select(organisation).order_by(organisation.c.created_at, organisation.c.id)
        if ids is not None:
            stmt = stmt.where(organisation.c.id.in_(list(ids)))
        return (await self.s.execute(stmt)).all()

    async def member_organisation_ids(self, user_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await self.s.execute(
            select(membership.c.organisation_id).where(
                membership.c.user_id == user_id, membership.c.organisation_id.is_not(None)
            )
        )
        return [r.organisation_id for r in rows]

    async def add_organisation(self, **values: Any) -> None:
        await self.s.execute(insert(organisation).values(**values))

    async def rename_organisation(self, org_id: uuid.UUID, name: str) -> None:
        await self.s.execute(update(organisation).where(organisation.c.id == org_id).values(name=name))
