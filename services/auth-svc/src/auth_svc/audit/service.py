"""Reading an organisation's audit log: its own admins (``audit.read``) and platform operators; anyone else
gets 404 for another tenant's log and 403 inside their own without the permission."""

from __future__ import annotations

import uuid
from typing import Any

from auth_svc.audit.repository import AuditRepository
from auth_svc.organisations.service import Organisations
from auth_svc.principal import Principal
from auth_svc.roles import Perm
from auth_svc.unit_of_work import UnitOfWork


class AuditLog:
    def __init__(self, uow: UnitOfWork, organisations: Organisations) -> None:
        self._uow = uow
        self._organisations = organisations

    async def entries(
        self, actor: Principal, org_id: uuid.UUID, *, event: str | None, before_id: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first; page with ``before_id`` (the last id of the previous page)."""
        async with self._uow.begin() as tx:
            await self._organisations.access(tx, actor, org_id, Perm.AUDIT_READ)
            rows = await AuditRepository(tx.session).entries_of(org_id, event=event, before_id=before_id, limit=limit)
            return [
                {
                    "id": r.id,
                    "occurred_at": r.occurred_at,
                    "event": r.event,
                    "actor_type": r.actor_type,
                    "actor_id": r.actor_id,
                    "operator": bool(r.details.get("operator", False)),
                    "subject_id": r.subject_id,
                    "ip": r.ip,
                    "details": r.details,
                }
                for r in rows
            ]
