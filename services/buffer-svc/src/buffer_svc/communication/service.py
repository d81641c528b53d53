"""The communication log's use cases. A line is written inside the transaction of the change it records (an
entry changes and its line commits with it, or neither); reads are per client or per entry, as pages or CSV."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.communication.repository import LogRepository
from platform_common.db import Database

CSV_COLUMNS = ("id", "at", "kind", "ksef_number", "entry_id", "actor_side", "actor", "detail")


def line(
    client_nip: str,
    kind: str,
    at: datetime,
    *,
    entry_id: uuid.UUID | None = None,
    ksef_number: str | None = None,
    actor: str | None = None,
    actor_side: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One line of the log. ``kind``: invoice_received, late_arrival, decision_changed, override, imported,
    import_refused, archived, restored, month_approved, month_unlocked."""
    return {
        "client_nip": client_nip,
        "kind": kind,
        "at": at,
        "entry_id": entry_id,
        "ksef_number": ksef_number,
        "actor": None if actor is None else actor[:64],
        "actor_side": actor_side,
        "detail": detail or {},
    }


class CommunicationLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, session: AsyncSession, *lines: dict[str, Any]) -> None:
        if lines:
            await LogRepository(session).add(lines)

    async def read(
        self, client_nip: str, *, entry_id: uuid.UUID | None = None, after: int | None = None, limit: int = 100
    ) -> Sequence[Row[Any]]:
        async with self._db.sessionmaker() as session:
            return await LogRepository(session).page(client_nip, entry_id=entry_id, after=after, limit=limit)


def to_csv(rows: Sequence[Row[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.id,
                r.at.isoformat(),
                r.kind,
                r.ksef_number or "",
                r.entry_id or "",
                r.actor_side or "",
                r.actor or "",
                json.dumps(r.detail, ensure_ascii=False, sort_keys=True),
            ]
        )
    return out.getvalue()
