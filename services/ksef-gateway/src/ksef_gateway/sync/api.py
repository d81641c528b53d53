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

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from ksef_gateway.deps import GatewayDep, KsefReader, client_nip
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.sync.service import CredentialNotActive, SyncStatus, UnknownClient
from platform_common.auth import not_found, require
from platform_common.auth.principal import Principal
from platform_common.problems import Problem

router = APIRouter(tags=["purchase-sync"])

SyncManager = Annotated[Principal, Depends(require("ksef.credentials.manage", client_nip_param="nip"))]


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


def _view(status: SyncStatus) -> SyncView:
    subjects = []
    for item in status.subjects:
        state = item.state
        subjects.append(
            SubjectSync(
                subject_type=item.subject_type,
                enabled=item.enabled,
                running=item.running,
                hwm=state.hwm if state else None,
                checkpoint=state.checkpoint if state else None,
                lag_seconds=round(item.lag.total_seconds(), 3) if item.lag is not None else None,
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
    return SyncView(
        client_nip=status.client_nip,
        credential_active=status.credential_active,
        month_close_day=status.preferences.month_close_day,
        backfill_months=status.preferences.backfill_months,
        fetch_requested_at=status.fetch_requested_at,
        invoices_stored=status.invoices_stored,
        subjects=subjects,
        rejected=[RejectedInvoice(**r.__dict__) for r in status.rejected],
        budget=status.budget,
    )


@router.get(
    "/clients/{nip}/sync",
    response_model=SyncView,
    summary="Purchase sync state per subject type: HWM, last and next run, lag, last error, budget left",
)
async def get_sync(nip: str, principal: KsefReader, gw: GatewayDep) -> SyncView:
    try:
        return _view(await gw.sync_service.status(client_nip(nip)))
    except UnknownClient:
        raise not_found() from None


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
    try:
        queued = await gw.sync_service.fetch_now(nip, requested_by=f"{principal.ptype}:{principal.id}")
    except UnknownClient:
        raise not_found() from None
    except CredentialNotActive:
        raise Problem(
            409,
            "No usable credential",
            "The client's KSeF credential is not active (invalid, expired or without InvoiceRead); fix it first.",
            code="credential-not-active",
        ) from None
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
    try:
        return _view(await gw.sync_service.set_preferences(client_nip(nip), body.model_dump(exclude_unset=True)))
    except UnknownClient:
        raise not_found() from None
