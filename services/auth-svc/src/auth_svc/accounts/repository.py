"""Queries of the accounts capability: the user's row, password-reset links, ending every session."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import password_reset, refresh_token


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def _one(self, stmt: Any) -> Row[Any] | None:
        return (await self.s.execute(stmt)).first()

    async def add_password_reset(self, **values: Any) -> None:
        await self.s.execute(insert(password_reset).values(**values))

    async def password_reset_by_hash(self, digest: str) -> Row[Any] | None:
        return await self._one(select(password_reset).where(password_reset.c.token_hash == digest))

    async def claim_password_reset(self, reset_id: uuid.UUID, now: datetime) -> bool:
        result = await self.s.execute(
            update(password_reset)
            .where(password_reset.c.id == reset_id, password_reset.c.used_at.is_(None))
            .values(used_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_refresh_tokens(self, user_id: uuid.UUID, now: datetime) -> None:
        await self.s.execute(
            update(refresh_token)
            .where(refresh_token.c.user_id == user_id, refresh_token.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
