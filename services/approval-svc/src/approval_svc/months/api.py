"""Month approval over HTTP: the client approves ("Zatwierdź miesiąc") and unlocks ("Odblokuj miesiąc"); the client
and its active offices read a month's state and counts.

Every route names the client in its path and goes through ``require(perm, client_nip_param="nip")``: the client's
own people, or an office whose integration with that client is active now (this service's projection of its own
integration events); anyone else gets 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from approval_svc.months.domain import MonthError
from approval_svc.months.service import MonthApprovals
from approval_svc.wiring import Approval
from platform_common.auth import Principal, require
from platform_common.auth.dependencies import path_client_nip
from platform_common.contracts.months import PERIOD_PATTERN
from platform_common.problems import Problem

router = APIRouter(tags=["month approval"])

Reader = Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]
Approver = Annotated[Principal, Depends(require("month.approve", client_nip_param="nip"))]
Period = Annotated[str, Path(pattern=PERIOD_PATTERN, description="YYYY-MM of the invoices' issue date (P_1)")]


def _months(request: Request) -> MonthApprovals:
    return Approval.of(request.app.state.runtime).months


MonthsDep = Annotated[MonthApprovals, Depends(_months)]


def _problem(exc: MonthError) -> Problem:
    titles = {403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    return Problem(exc.status, titles.get(exc.status, "Refused"), str(exc), code=exc.code)


class MonthCountsOut(BaseModel):
    unverified: int
    book: int
    dont_book: int
    imported: int = Field(description="Entries the office has imported (booked) from the month")
    archived: int = Field(description="dont_book entries the office moved to the archive; outside the other counts")
    entries: int = Field(description="unverified + book + dont_book")


class Blocked(BaseModel):
    code: str
    detail: str


class Month(BaseModel):
    client_nip: str
    period: str
    state: Literal["open", "approved"]
    revision: int = Field(description="Grows with every approval and unlock; the month events carry it")
    counts: MonthCountsOut
    late_arrivals: int = Field(description="Invoices of the month that arrived after the approval in force")
    approved_at: datetime | None
    approved_by: str | None
    unlocked_at: datetime | None
    unlocked_by: str | None
    can_approve: bool
    can_unlock: bool
    blocked_by: Blocked | None = Field(description="Why the next step (approve or unlock) is refused now")


@router.get("/clients/{nip}/months", response_model=list[Month], summary="The client's months, newest first")
async def months(nip: str, principal: Reader, service: MonthsDep) -> Any:
    return await service.months(path_client_nip(nip))


@router.get("/clients/{nip}/months/{period}", response_model=Month, summary="One month: state, counts, who approved")
async def month(nip: str, period: Period, principal: Reader, service: MonthsDep) -> Any:
    return await service.month(path_client_nip(nip), period)


@router.post(
    "/clients/{nip}/months/{period}/approve",
    response_model=Month,
    summary="Zatwierdź miesiąc: lock the month's decisions and tell the office what to book (client only)",
)
async def approve(nip: str, period: Period, principal: Approver, service: MonthsDep) -> Any:
    try:
        return await service.approve(principal, path_client_nip(nip), period)
    except MonthError as exc:
        raise _problem(exc) from None


@router.post(
    "/clients/{nip}/months/{period}/unlock",
    response_model=Month,
    summary="Odblokuj miesiąc: reopen an approved month until the office imports from it (client only)",
)
async def unlock(nip: str, period: Period, principal: Approver, service: MonthsDep) -> Any:
    try:
        return await service.unlock(principal, path_client_nip(nip), period)
    except MonthError as exc:
        raise _problem(exc) from None
