"""Per-client purchase sync: state per subject type, "fetch now", and the client's sync preferences.

Reading needs ``ksef.read`` (the closest permission auth-svc has for seeing a client's KSeF data); so does
"fetch now", which only queues a run that still waits for the minimum poll interval and the rate-limit budget.
Changing the preferences (month-close day, backfill depth) is integration set-up: ``ksef.credentials.manage``.
Which subject types are synced is a property of the credential (``sync_subject3``, ``sync_subject_authorized``
in the credentials API), read here from the vault.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ksef_gateway import purchases
from ksef_gateway.api.nip import client_nip
from ksef_gateway.budget import EndpointGroup
from ksef_gateway.domain.sync import SubjectType, enabled_subjects, lag
from ksef_gateway.sync import request_fetch_now
from ksef_gateway.vault import ActiveContext
from ksef_gateway.wiring import Gateway
from platform_common.auth import not_found, require
from platform_common.auth.principal import Principal
from platform_common.problems import Problem

router = APIRouter(tags=["purchase-sync"])

KsefReader = Annotated[Principal, Depends(require("ksef.read", client_nip_param="nip"))]
SyncManager = Annotated[Principal, Depends(require("ksef.credentials.manage", client_nip_param="nip"))]

# The groups a sync spends; "budget left" shows these for the client's context.
SYNC_GROUPS = (EndpointGroup.INVOICE_EXPORT, EndpointGroup.INVOICE_METADATA, EndpointGroup.INVOICE_DOWNLOAD)


def gateway(request: Request) -> Gateway:
    return Gateway.of(request.app.state.runtime)


GatewayDep = Annotated[Gateway, Depends(gateway)]


class ExportInFlight(BaseModel):
    reference_number: str
    started_at: datetime | None


class SubjectSync(BaseModel):
    subject_type: SubjectType
    enabled: bool = Field(description="Synced now (Subject2 always; the others per the credential's flags).")
    running: bool
    hwm: datetime | None = Field(description="KSeF's permanent-storage HWM we are complete up to.")
    checkpoint: datetime | None = Field(description="Where the next window starts.")
    lag_seconds: float | None = Field(description="How far the data held here trails now.")
    backfilled: bool
    last_run_at: datetime | None
    last_success_at: datetime | None
    next_run_at: datetime | None
    invoices_last_run: int | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    export_in_flight: ExportInFlight | None


class RejectedInvoice(BaseModel):
    ksef_number: str
    subject_type: str
    reason: str = Field(description="hash_mismatch: the bytes did not match KSeF's hash; malformed: unreadable.")
    detail: str
    attempts: int
    given_up: bool = Field(description="No longer retried; the sync moved past it (it stays listed here).")
    first_seen_at: datetime
    last_seen_at: datetime


class SyncView(BaseModel):
    client_nip: str
    credential_active: bool
    month_close_day: int
    backfill_months: int
    fetch_requested_at: datetime | None
    invoices_stored: int
    subjects: list[SubjectSync]
    rejected: list[RejectedInvoice]
    budget: dict[str, Any] | None = Field(
        description="Rate-limit budget left for this context per endpoint group (this replica's view)."
    )


async def _active(gw: Gateway, nip: str) -> ActiveContext | None:
    return next((c for c in await gw.vault.active_contexts() if c.nip == nip), None)


def _subjects_of(context: ActiveContext | None) -> list[SubjectType]:
    if context is None:
        return []
    return enabled_subjects(
        {SubjectType.SUBJECT3: context.subject3, SubjectType.SUBJECT_AUTHORIZED: context.subject_authorized}
    )


async def sync_view(gw: Gateway, nip: str) -> SyncView:
    context = await _active(gw, nip)
    enabled = _subjects_of(context)
    async with gw.runtime.db.sessionmaker() as session:
        client = await purchases.load_client(session, nip)
        states = await purchases.load_states(session, nip)
        stored = await purchases.count_invoices(session, nip)
        rejections = await purchases.list_rejections(session, nip)
    if context is None and client is None and not states and await gw.vault.status(nip) is None:
        raise not_found()
    prefs = gw.sync_engine.resolve(client)
    now = gw.sync_engine.now()
    by_subject = {s.subject_type: s for s in states}
    subjects = []
    for subject in SubjectType:
        state = by_subject.get(subject)
        if state is None and subject not in enabled:
            continue
        subjects.append(
            SubjectSync(
                subject_type=subject,
                enabled=subject in enabled,
                running=gw.sync.is_running(nip, subject),
                hwm=state.hwm if state else None,
                checkpoint=state.checkpoint if state else None,
                lag_seconds=(round(d.total_seconds(), 3) if state and (d := lag(now, state.hwm)) is not None else None),
                backfilled=state.backfilled if state else False,
                last_run_at=state.last_run_at if state else None,
                last_success_at=state.last_success_at if state else None,
                next_run_at=state.next_run_at if state else None,
                invoices_last_run=state.last_delta if state else None,
                last_error=state.last_error if state else None,
                last_error_at=state.last_error_at if state else None,
                consecutive_failures=state.consecutive_failures if state else 0,
                export_in_flight=(
                    ExportInFlight(reference_number=state.export_reference, started_at=state.export_started_at)
                    if state and state.export_reference
                    else None
                ),
            )
        )
    remaining = getattr(gw.budget, "remaining", None)
    budget = {group.value: remaining(nip, group) for group in SYNC_GROUPS} if callable(remaining) else None
    return SyncView(
        client_nip=nip,
        credential_active=context is not None,
        month_close_day=prefs.month_close_day,
        backfill_months=prefs.backfill_months,
        fetch_requested_at=client.fetch_requested_at if client else None,
        invoices_stored=stored,
        subjects=subjects,
        rejected=[RejectedInvoice(**r.__dict__) for r in rejections],
        budget=budget,
    )


@router.get(
    "/clients/{nip}/sync",
    response_model=SyncView,
    summary="Purchase sync state per subject type: HWM, last and next run, lag, last error, budget left",
)
async def get_sync(nip: str, principal: KsefReader, gw: GatewayDep) -> SyncView:
    return await sync_view(gw, client_nip(nip))


class FetchNowAccepted(BaseModel):
    client_nip: str
    requested_at: datetime
    runs_at: dict[SubjectType, datetime] = Field(
        description="When each subject type will run: now, or once the minimum poll interval since its last run "
        "has passed (KSeF asks for at most one poll per 15 minutes). The rate-limit budget applies on top."
    )


@router.post(
    "/clients/{nip}/sync/fetch-now",
    status_code=202,
    response_model=FetchNowAccepted,
    summary="Queue a sync run now (respects the minimum poll interval and KSeF's limits)",
)
async def fetch_now(nip: str, principal: KsefReader, gw: GatewayDep) -> FetchNowAccepted:
    nip = client_nip(nip)
    context = await _active(gw, nip)
    if context is None:
        if await gw.vault.status(nip) is None:
            raise not_found()
        raise Problem(
            409,
            "No usable credential",
            "The client's KSeF credential is not active (invalid, expired or without InvoiceRead); fix it first.",
            code="credential-not-active",
        )
    now = gw.sync_engine.now()
    async with gw.runtime.db.sessionmaker() as session, session.begin():
        queued = await request_fetch_now(
            session,
            nip,
            subjects=_subjects_of(context),
            settings=gw.settings.sync,
            requested_by=f"{principal.ptype}:{principal.id}",
            now=now,
        )
    gw.sync.wake()
    return FetchNowAccepted(client_nip=nip, requested_at=queued.requested_at, runs_at=queued.runs_at)


class SyncPreferences(BaseModel):
    model_config = ConfigDict(extra="forbid")

    month_close_day: int | None = Field(
        default=None,
        ge=1,
        le=31,
        description="Day of the month the office closes the client's books; nearer deadlines are synced first. "
        "31 means the last day of each month.",
    )
    backfill_months: int | None = Field(
        default=None, ge=0, le=120, description="How far back the first sync reaches (applies before it has run)."
    )


@router.patch(
    "/clients/{nip}/sync",
    response_model=SyncView,
    summary="Set the client's month-close day and backfill depth (fields left out stay as they are)",
)
async def patch_sync(nip: str, body: SyncPreferences, principal: SyncManager, gw: GatewayDep) -> SyncView:
    nip = client_nip(nip)
    if await gw.vault.status(nip) is None:
        async with gw.runtime.db.sessionmaker() as session:
            known = await purchases.load_client(session, nip) is not None or bool(
                await purchases.load_states(session, nip)
            )
        if not known:
            raise not_found()
    changes = body.model_dump(exclude_unset=True)
    async with gw.runtime.db.sessionmaker() as session, session.begin():
        await purchases.upsert_client(session, nip, gw.sync_engine.now(), **changes)
    return await sync_view(gw, nip)
