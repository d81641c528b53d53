"""Queries of sessions: the user's login state, refresh tokens, the login throttle."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import login_throttle, refresh_token


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def _one(self, stmt: Any) -> Row[Any] | None:
        return (await self.s.execute(stmt)).first()

    # refresh tokens

    async def add_refresh_token(self, **values: Any) -> None:
        await self.s.execute(insert(refresh_token).values(**values))

    async def refresh_token_by_hash(self, digest: str) -> Row[Any] | None:
        return await self._one(select(refresh_token).where(refresh_token.c.token_hash == digest))

    async def use_refresh_token(self, digest: str, now: datetime) -> bool:
        """Atomically mark a live token used; False if it was already used, revoked, expired or unknown."""
        result = await self.s.execute(
            update(refresh_token)
            .where(
                refresh_token.c.token_hash == digest,
                refresh_token.c.used_at.is_(None),
                refresh_token.c.revoked_at.is_(None),
                refresh_token.c.expires_at > now,
            )
            .values(used_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> None:
        await self.s.execute(
            update(refresh_token)
            .where(refresh_token.c.family_id == family_id, refresh_token.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    # login throttle

    async def throttle(self, key: str) -> Row[Any] | None:
        return await self._one(select(login_throttle).where(login_throttle.c.key == key).with_for_update())

    async def add_throttle(self, key: str, now: datetime) -> None:
        await self.s.execute(insert(login_throttle).values(key=key, window_started_at=now, attempts=1))

    async def set_throttle(self, key: str, window_started_at: datetime, attempts: int) -> None:
        await self.s.execute(
            update(login_throttle)
            .where(login_throttle.c.key == key)
            .values(window_started_at=window_started_at, attempts=attempts)
        )

    async def purge_throttles(self, started_before: datetime) -> int:
        """Rows whose window started at or before ``started_before``; returns how many went."""
        result = await self.s.execute(
            delete(login_throttle).where(login_throttle.c.window_started_at <= started_before)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
