"""Every query on ``ksef_outage``."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import ksef_outage
from ksef_gateway.outages.domain import OpenOutage
from platform_common.contracts.outages import OutageKind, OutageSource


def _outage(row: object) -> OpenOutage:
    return OpenOutage(
        id=str(row.id),  # type: ignore[attr-defined]
        kind=OutageKind(row.kind),  # type: ignore[attr-defined]
        source=OutageSource(row.source),  # type: ignore[attr-defined]
        started_at=row.started_at,  # type: ignore[attr-defined]
        latarnia_event_id=row.latarnia_event_id,  # type: ignore[attr-defined]
        message=row.message,  # type: ignore[attr-defined]
    )


class OutageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open(self) -> list[OpenOutage]:
        rows = await self.session.execute(select(ksef_outage).where(ksef_outage.c.open_slot.is_not(None)))
        return [_outage(r) for r in rows]

    async def start(
        self,
        kind: OutageKind,
        source: OutageSource,
        at: datetime,
        *,
        latarnia_event_id: int | None = None,
        message: str | None = None,
    ) -> OpenOutage | None:
        """Record an outage; None when one of this source is already open (another replica was first)."""
        outage_id = uuid.uuid4()
        try:
            async with self.session.begin_nested():
                await self.session.execute(
                    insert(ksef_outage).values(
                        id=outage_id,
                        kind=kind.value,
                        source=source.value,
                        latarnia_event_id=latarnia_event_id,
                        message=message,
                        started_at=at,
                        open_slot=source.value,
                    )
                )
        except IntegrityError:
            return None
        return OpenOutage(str(outage_id), kind, source, at, latarnia_event_id, message)

    async def end(self, outage_id: str, at: datetime) -> bool:
        """Close it; False when it was closed already (by another replica)."""
        result = await self.session.execute(
            update(ksef_outage)
            .where(ksef_outage.c.id == uuid.UUID(outage_id), ksef_outage.c.open_slot.is_not(None))
            .values(ended_at=at, open_slot=None)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def since(self, at: datetime, limit: int = 500) -> list[dict[str, object]]:
        """Outages open at or started after ``at``, newest first, as stored."""
        rows = await self.session.execute(
            select(ksef_outage)
            .where(or_(ksef_outage.c.ended_at.is_(None), ksef_outage.c.ended_at >= at))
            .order_by(ksef_outage.c.started_at.desc())
            .limit(limit)
        )
        return [dict(r._mapping) for r in rows]
