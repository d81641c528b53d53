"""The operators' overview: ``GET /ops/clients`` (a page of the clients the gateway knows), ``GET /ops/clients/{nip}``
(one), and ``GET /ops/ksef-calls`` (KSeF calls and 429s per hour, for a trend chart).

Platform operators only (``ops``, as ``GET /ops/vault``): the overview spans every tenant's clients. It holds
states, counts, times and KSeF reference numbers, never a secret or invoice content. Served from the gateway's own
records and memory: reading it never calls KSeF.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from ksef_gateway.deps import GatewayDep, client_nip
from ksef_gateway.operations.domain import MAX_PAGE, MAX_SERIES_HOURS, SyncOutcome
from ksef_gateway.operations.service import ClientOverview, KsefState, UnknownClient
from ksef_gateway.sync.domain import SubjectType
from platform_common.auth import not_found, require
from platform_common.auth.principal import Principal

router = APIRouter(tags=["operations"])

Operator = Annotated[Principal, Depends(require("ops"))]
NIP_PATTERN = r"^\d{10}$"


class SubjectSyncOverview(BaseModel):
    subject_type: SubjectType
    enabled: bool
    outcome: SyncOutcome = Field(
        description="The latest run: never, running, ok, rejected_invoices (finished, some invoices rejected), "
        "failed, deferred (gave way to the budget, a lost lease or credential; rescheduled)."
    )
    last_run_at: datetime | None = Field(description="When the latest run started.")
    finished_at: datetime | None = Field(description="When the run the outcome describes ended.")
    last_error: str | None
    consecutive_failures: int
    hwm: datetime | None = Field(description="KSeF's permanent-storage HWM the data here is complete up to.")
    lag_seconds: float | None = Field(description="Now minus the HWM (as GET /clients/{nip}/sync computes it).")
    next_run_at: datetime | None


class ExportInFlight(BaseModel):
    subject_type: SubjectType
    reference_number: str
    started_at: datetime | None


class SyncOverview(BaseModel):
    credential_active: bool
    subjects: list[SubjectSyncOverview]
    max_lag_seconds: float | None = Field(description="The largest lag of the client's subject types.")
    exports_in_flight: list[ExportInFlight] = Field(description="Exports started in KSeF and not yet downloaded.")


class HourWindow(BaseModel):
    limit: int = Field(description="The usable hourly limit (KSeF's times budget.usable_fraction).")
    used: int
    remaining: int
    blocked_for_s: float = Field(description="How long a 429 of KSeF still blocks the group.")


class KsefTraffic(BaseModel):
    calls_last_hour: int = Field(description="KSeF calls in the client's context over the last 60 minutes.")
    rate_limited_last_hour: int = Field(description="Of those, answered 429 by KSeF.")
    budget_this_hour: dict[str, HourWindow] | None = Field(
        description="Per endpoint group, the sliding 60-minute window of the rate budget (this replica's view); "
        "none when the budget is off."
    )


class OnlineSessionOut(BaseModel):
    reference_number: str
    form_code: str
    valid_until: datetime


class SessionsOverview(BaseModel):
    authenticated: bool = Field(description="This replica holds an access token for the context.")
    online: list[OnlineSessionOut] = Field(description="Online sessions this replica keeps open in the context.")


class SalesOverview(BaseModel):
    by_status: dict[str, int]
    stuck_in_processing: int = Field(description="Sending or submitted without a final status for too long.")
    stuck_after_minutes: float
    stuck_since: datetime | None = Field(description="The oldest stuck invoice's last transition.")
    offline_queue: int = Field(description="Issued offline, not yet in KSeF (held, queued, sending, submitted).")
    offline_nearest_deadline: date | None = Field(description="The nearest legal deadline among them.")
    offline_awaiting_deadline: int = Field(description="Of them, without a deadline until their outage ends.")


class ClientOverviewOut(BaseModel):
    client_nip: str
    held_by_this_replica: bool = Field(
        description="This replica holds the context's lease: its in-memory figures (budget, sessions) are complete."
    )
    sync: SyncOverview
    ksef: KsefTraffic
    sessions: SessionsOverview
    sales: SalesOverview


class OutageOut(BaseModel):
    kind: str
    source: str
    started_at: datetime
    message: str | None


class KsefAvailability(BaseModel):
    available: bool = Field(description="As GET /ksef/availability: false while any outage is open.")
    open: list[OutageOut]


class ClientsPage(BaseModel):
    as_of: datetime
    replica_id: str = Field(description="The replica that answered (its in-memory view).")
    availability: KsefAvailability
    items: list[ClientOverviewOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; none on the last page.")


class ClientOverviewView(ClientOverviewOut):
    availability: KsefAvailability


class CallsHour(BaseModel):
    start: datetime
    calls: int
    rate_limited: int


class KsefCallsSeries(BaseModel):
    client_nip: str | None = Field(description="The context counted; none: every context and public calls.")
    hours: list[CallsHour] = Field(description="Clock hours (UTC), oldest first; the last is the current hour so far.")
    total_calls: int
    total_rate_limited: int


def _seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds(), 3) if value is not None else None


def _client(o: ClientOverview, stuck_after: timedelta) -> ClientOverviewOut:
    stuck_after_minutes = stuck_after.total_seconds() / 60
    return ClientOverviewOut(
        client_nip=o.client_nip,
        held_by_this_replica=o.held_by_this_replica,
        sync=SyncOverview(
            credential_active=o.credential_active,
            subjects=[
                SubjectSyncOverview(
                    subject_type=s.subject_type,
                    enabled=s.enabled,
                    outcome=s.last_sync.outcome,
                    last_run_at=s.last_run_at,
                    finished_at=s.last_sync.finished_at,
                    last_error=s.last_error,
                    consecutive_failures=s.consecutive_failures,
                    hwm=s.hwm,
                    lag_seconds=_seconds(s.lag),
                    next_run_at=s.next_run_at,
                )
                for s in o.subjects
            ],
            max_lag_seconds=_seconds(o.max_lag),
            exports_in_flight=[ExportInFlight(**e.__dict__) for e in o.exports_in_flight],
        ),
        ksef=KsefTraffic(
            calls_last_hour=o.ksef_calls_last_hour,
            rate_limited_last_hour=o.rate_limited_last_hour,
            budget_this_hour=(
                {g: HourWindow(**b.__dict__) for g, b in o.budget_this_hour.items()}
                if o.budget_this_hour is not None
                else None
            ),
        ),
        sessions=SessionsOverview(
            authenticated=o.authenticated, online=[OnlineSessionOut(**s.__dict__) for s in o.online_sessions]
        ),
        sales=SalesOverview(
            by_status=o.sales.by_status,
            stuck_in_processing=o.sales.stuck,
            stuck_after_minutes=stuck_after_minutes,
            stuck_since=o.sales.stuck_since,
            offline_queue=o.sales.offline_queued,
            offline_nearest_deadline=o.sales.offline_nearest_deadline,
            offline_awaiting_deadline=o.sales.offline_awaiting_deadline,
        ),
    )


def _availability(state: KsefState) -> KsefAvailability:
    return KsefAvailability(available=state.available, open=[OutageOut(**o.__dict__) for o in state.open_outages])


@router.get(
    "/ops/clients",
    response_model=ClientsPage,
    summary="Operators' overview: per client NIP, sync, KSeF calls and budget, sessions, sales backlog",
)
async def clients(
    _operator: Operator,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(pattern=NIP_PATTERN, description="The previous page's next_cursor.")] = None,
) -> ClientsPage:
    ops = gw.operations
    page = await ops.page(after=cursor, limit=limit)
    return ClientsPage(
        as_of=page.as_of,
        replica_id=page.replica_id,
        availability=_availability(page.ksef),
        items=[_client(o, ops.stuck_after) for o in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/ops/clients/{nip}",
    response_model=ClientOverviewView,
    summary="Operators' overview of one client NIP",
)
async def client(nip: str, _operator: Operator, gw: GatewayDep) -> ClientOverviewView:
    ops = gw.operations
    try:
        overview, state = await ops.client(client_nip(nip))
    except UnknownClient:
        raise not_found() from None
    out = _client(overview, ops.stuck_after)
    return ClientOverviewView(**out.model_dump(), availability=_availability(state))


@router.get(
    "/ops/ksef-calls",
    response_model=KsefCallsSeries,
    summary="KSeF calls and 429s per hour from the communication log, across the platform or for one context",
)
async def ksef_calls(
    _operator: Operator,
    gw: GatewayDep,
    hours: Annotated[int, Query(ge=1, le=MAX_SERIES_HOURS)] = 24,
    nip: Annotated[str | None, Query(pattern=NIP_PATTERN, description="One client context only.")] = None,
) -> KsefCallsSeries:
    series = await gw.operations.ksef_calls(hours, context_nip=client_nip(nip) if nip is not None else None)
    return KsefCallsSeries(
        client_nip=nip,
        hours=[CallsHour(start=h.start, calls=h.calls, rate_limited=h.rate_limited) for h in series],
        total_calls=sum(h.calls for h in series),
        total_rate_limited=sum(h.rate_limited for h in series),
    )
