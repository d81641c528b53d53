"""One transaction per use case, and the audit entries written inside it.

Every capability's service opens its transaction with ``UnitOfWork.begin()`` and builds its own repository
on ``tx.session``; a use case that needs another capability passes its ``Tx`` along, so the whole use case
commits or rolls back as one. The audit entry of an action is written in the action's transaction: an
action without its entry cannot commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_svc.clock import Clock
from auth_svc.db import audit_event
from auth_svc.principal import Principal

log = logging.getLogger("auth_svc.audit")


@dataclass
class Tx:
    session: AsyncSession
    clock: Clock

    async def audit(
        self,
        event: str,
        *,
        orgs: Iterable[uuid.UUID | None],
        actor: Principal | None = None,
        subject: str | None = None,
        ip: str | None = None,
        **details: Any,
    ) -> None:
        """One entry per organisation concerned (``None``: platform level). Never pass a secret in details.

        An action of a platform operator is marked ``operator: true``: inside a tenant it is support acting on
        the tenant's behalf, and the tenant's admins read it in their own log."""
        if actor is not None and actor.is_ops:
            details["operator"] = True
        now = self.clock()
        rows = [
            {
                "occurred_at": now,
                "organisation_id": org,
                "event": event,
                "actor_type": actor.ptype if actor else None,
                "actor_id": actor.sub if actor else None,
                "subject_id": subject,
                "ip": ip,
                "details": details,
            }
            for org in dict.fromkeys(orgs)
        ]
        if rows:
            await self.session.execute(insert(audit_event).values(rows))
        log.info("audit %s subject=%s actor=%s", event, subject, actor.sub if actor else None)


class UnitOfWork:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self.sessionmaker = sessionmaker
        self.clock = clock

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Tx]:
        async with self.sessionmaker() as session, session.begin():
            # The clock is read through the unit of work, so a test replacing it reaches open transactions too.
            yield Tx(session, lambda: self.clock())
