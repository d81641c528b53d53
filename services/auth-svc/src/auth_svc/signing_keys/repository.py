"""Queries of the signing keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import signing_key


class SigningKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def newest_current(self) -> Row[Any] | None:
        stmt = (
            select(signing_key.c.kid, signing_key.c.private_key_enc)
            .where(signing_key.c.retired_at.is_(None), signing_key.c.private_key_enc.is_not(None))
            .order_by(signing_key.c.created_at.desc())
            .limit(1)
        )
        return (await self.s.execute(stmt)).first()

    async def add(self, values: dict[str, Any]) -> None:
        await self.s.execute(signing_key.insert().values(**values))

    async def retire_current(self, now: datetime) -> None:
        await self.s.execute(update(signing_key).where(signing_key.c.retired_at.is_(None)).values(retired_at=now))

    async def erase_private_keys_retired_before(self, cutoff: datetime) -> None:
        await self.s.execute(
            update(signing_key)
            .where(signing_key.c.retired_at < cutoff, signing_key.c.private_key_enc.is_not(None))
            .values(private_key_enc=None)
        )

    async def published(self, retired_since: datetime) -> Sequence[Row[Any]]:
        stmt = (
            select(signing_key.c.kid, signing_key.c.public_jwk, signing_key.c.algorithm)
            .where(or_(signing_key.c.retired_at.is_(None), signing_key.c.retired_at >= retired_since))
            .order_by(signing_key.c.created_at.desc())
        )
        return (await self.s.execute(stmt)).all()

    async def overview(self) -> Sequence[Row[Any]]:
        stmt = select(signing_key.c.kid, signing_key.c.created_at, signing_key.c.retired_at).order_by(
            signing_key.c.created_at.desc()
        )
        return (await self.s.execute(stmt)).all()

    async def public(self, kid: str) -> Row[Any] | None:
        stmt = select(signing_key.c.public_jwk, signing_key.c.retired_at).where(signing_key.c.kid == kid)
        return (await self.s.execute(stmt)).first()
