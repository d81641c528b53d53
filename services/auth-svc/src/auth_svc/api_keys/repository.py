"""Queries of API keys."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import api_key


class ApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add_api_key(self, **values: Any) -> None:
        await self.s.execute(insert(api_key).values(**values))

    async def api_key(self, key_id: str) -> Row[Any] | None:
        return (await self.s.execute(select(api_key).where(api_key.c.id == key_id))).first()

    async def api_keys_of(self, org_id: uuid.UUID) -> Sequence[Row[Any]]:
        stmt = select(api_key).where(api_key.c.organisation_id == org_id).order_by(api_key.c.created_at, api_key.c.id)
        return (await self.s.execute(stmt)).all()

    async def update_api_key(self, key_id: str, **values: Any) -> None:
        await self.s.execute(update(api_key).where(api_key.c.id == key_id).values(**values))
