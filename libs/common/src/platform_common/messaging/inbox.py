"""Idempotent consumers: the inbox row and the handler's effect commit in one transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


async def claim(session: AsyncSession, inbox: Table, *, consumer: str, event_id: uuid.UUID, topic: str) -> bool:
    """Record that ``consumer`` processes ``event_id``; False if it already did (a redelivery).

    ON CONFLICT DO NOTHING rather than check-then-insert: two concurrent deliveries of one event race on the
    primary key, and the loser blocks until the winner commits, then sees the conflict.
    """
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = (
        insert(inbox)
        .values(consumer=consumer, event_id=event_id, topic=topic, processed_at=datetime.now(UTC))
        .on_conflict_do_nothing()
        .returning(inbox.c.event_id)
    )
    return (await session.execute(stmt)).first() is not None
