"""``GET /organisations/{org_id}/audit``: the organisation's audit log for its admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from auth_svc.dependencies import CurrentPrincipal, Service

router = APIRouter(tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    occurred_at: datetime
    event: str
    actor_type: str | None
    actor_id: str | None
    # A platform operator did it (support acting inside the tenant).
    operator: bool
    subject_id: str | None
    ip: str | None
    details: dict[str, Any]


@router.get("/organisations/{org_id}/audit", response_model=list[AuditEntry])
async def audit_log(
    org_id: uuid.UUID,
    principal: CurrentPrincipal,
    service: Service,
    event: str | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Security events and operator actions of the organisation, newest first; page with ``before_id``."""
    return await service.audit.entries(principal, org_id, event=event, before_id=before_id, limit=limit)
