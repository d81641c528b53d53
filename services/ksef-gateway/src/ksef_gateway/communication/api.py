"""``GET /clients/{nip}/communication-log``: the client's KSeF calls, newest first.

Readable with ``ksef.read`` (office staff and the client's own people who may see KSeF data); the entries hold
operations, outcomes, reference numbers and KSeF codes only, never a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from ksef_gateway.communication.service import CommunicationLog
from ksef_gateway.wiring import Gateway
from platform_common.auth import require
from platform_common.auth.principal import Principal

router = APIRouter(tags=["communication-log"])

KsefReader = Annotated[Principal, Depends(require("ksef.read", client_nip_param="nip"))]


def get_communication_log(request: Request) -> CommunicationLog:
    return Gateway.of(request.app.state.runtime).communication_log


class CommunicationEntry(BaseModel):
    id: int
    operation: str = Field(description="The KSeF call, e.g. auth.ksef_token, invoices.export, invoices.download.")
    environment: str
    outcome: str = Field(description="ok, failed, auth_failed, unauthorized, forbidden, rate_limited, unavailable.")
    http_status: int | None = Field(description="KSeF's HTTP status; none when no answer came.")
    reference_numbers: list[str] = Field(description="KSeF reference numbers (auth, export, session) or KSeF numbers.")
    error_codes: list[int] = Field(description="KSeF exception codes, or the authentication status code.")
    description: str | None
    duration_ms: int
    attempts: int
    at: datetime


class CommunicationPage(BaseModel):
    items: list[CommunicationEntry]
    next_before_id: int | None = Field(description="Pass as before_id for the next (older) page; none at the end.")


@router.get("/clients/{nip}/communication-log", response_model=CommunicationPage)
async def communication_log_page(
    nip: Annotated[str, Field(pattern=r"^\d{10}$")],
    _principal: KsefReader,
    log: Annotated[CommunicationLog, Depends(get_communication_log)],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before_id: Annotated[int | None, Query(ge=1, description="Show entries older than this id.")] = None,
) -> CommunicationPage:
    entries = await log.entries(nip, limit=limit, before_id=before_id)
    items = [
        CommunicationEntry(
            id=e.id,
            operation=e.operation,
            environment=e.environment,
            outcome=e.outcome,
            http_status=e.http_status,
            reference_numbers=e.reference_numbers,
            error_codes=e.error_codes,
            description=e.description,
            duration_ms=e.duration_ms,
            attempts=e.attempts,
            at=e.at,
        )
        for e in entries
    ]
    return CommunicationPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)
