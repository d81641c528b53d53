"""Every read of a client's invoice data (list, one entry, export, log) by a user or API key that is not the
client's own, and every operator action inside the tenant, is recorded; the client's owner reads the ledger.

A read is recorded in the same transaction that reads the data, before it is returned: a read the ledger could
not record is not served (the caller gets an error), because the client's trust depends on the ledger being
complete."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.ledger.repository import LedgerRepository
from platform_common.auth.principal import Principal
from platform_common.db import Database


def is_outsider(principal: Principal, client_nip: str) -> bool:
    """Reads by the client's own people are theirs; everyone else's (an office, an operator, a service acting
    for one) goes into the ledger."""
    return not (principal.org_kind == "client" and client_nip in principal.nips)


class AccessLedger:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        session: AsyncSession,
        principal: Principal,
        client_nip: str,
        action: str,
        at: datetime,
        *,
        target: str | None = None,
        items: int = 1,
    ) -> bool:
        if not is_outsider(principal, client_nip):
            return False
        await LedgerRepository(session).add(
            {
                "client_nip": client_nip,
                "principal_id": principal.id[:64],
                "principal_type": principal.ptype,
                "org_id": principal.org,
                "org_kind": principal.org_kind,
                "action": action,
                "target": None if target is None else target[:200],
                "items": items,
                "at": at,
            }
        )
        return True

    async def read(self, client_nip: str, *, before: int | None = None, limit: int = 100) -> Sequence[Row[Any]]:
        async with self._db.sessionmaker() as session:
            return await LedgerRepository(session).page(client_nip, before=before, limit=limit)
