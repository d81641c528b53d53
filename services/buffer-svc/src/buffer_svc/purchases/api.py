"""The purchase buffer over HTTP: the client's decisions, the office's list, booking gate, import and archive,
the ERP hand-off (JSON, CSV), the month summary, the communication log and the access ledger.

Every route names the client in its path and goes through ``require(perm, client_nip_param="nip")``: the client's
own people, or an office whose integration with that client is active *now*; anyone else gets 404.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from buffer_svc.communication.service import to_csv
from buffer_svc.purchases.domain import DECISION_LABELS, MAX_BULK, SORTS, BufferError, Decision
from buffer_svc.purchases.repository import EntryFilter
from buffer_svc.purchases.service import DecisionChange, EntryView, Outcome, PurchaseBuffer
from buffer_svc.wiring import Buffer
from platform_common.auth import Principal, require
from platform_common.auth.dependencies import path_client_nip
from platform_common.contracts.invoices import KSEF_NUMBER_PATTERN
from platform_common.contracts.months import PERIOD_PATTERN
from platform_common.problems import Problem

router = APIRouter(tags=["purchase buffer"])

Reader = Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]
Decider = Annotated[Principal, Depends(require("buffer.decide", client_nip_param="nip"))]
Importer = Annotated[Principal, Depends(require("buffer.import", client_nip_param="nip"))]
LedgerReader = Annotated[Principal, Depends(require("audit.read", client_nip_param="nip"))]


def _buffer(request: Request) -> PurchaseBuffer:
    return Buffer.of(request.app.state.runtime).purchases


BufferDep = Annotated[PurchaseBuffer, Depends(_buffer)]


def _problem(exc: BufferError) -> Problem:
    titles = {404: "Not Found", 409: "Conflict", 422: "Unprocessable Content"}
    return Problem(exc.status, titles.get(exc.status, "Refused"), str(exc), code=exc.code)


# --- schemas ---------------------------------------------------------------------------------------------------


class Seller(BaseModel):
    nip: str | None
    name: str | None


class SuggestionOut(BaseModel):
    decision: Decision
    description: str | None
    based_on_ksef_number: str = Field(description="The same seller's invoice this client decided last")
    based_on_invoice_number: str
    decided_at: datetime


class Entry(BaseModel):
    id: uuid.UUID
    ksef_number: str
    period: str = Field(description="YYYY-MM of the issue date (P_1)")
    invoice_number: str = Field(description="P_2")
    issue_date: date
    acquisition_date: datetime = Field(description="KSeF's receipt date")
    seller: Seller
    invoice_type: str
    currency: str
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    vat_amount_pln: Decimal | None
    corrected_ksef_number: str | None
    corrected_invoice_number: str | None
    corrects_entry_id: uuid.UUID | None = Field(description="The corrected invoice's entry, when it is here too")
    corrections: list[uuid.UUID] = Field(description="Entries correcting this one (on a single entry's read)")
    decision: Decision
    decision_label: dict[str, str]
    description: str | None
    decided_at: datetime | None = Field(description="'data zmiany statusu'")
    decided_by: str | None
    decided_by_side: str | None
    suggestion: SuggestionOut | None = Field(description="Offered from this client's history; never applied by itself")
    imported_at: datetime | None
    imported_by: str | None
    archived_at: datetime | None
    late_arrival: bool
    month_approved: bool
    invoice_hash: str
    xml_ref: str
    received_at: datetime
    revision: int


def _entry(view: EntryView) -> Entry:
    r = view.row
    s = view.suggestion
    return Entry(
        id=r.id,
        ksef_number=r.ksef_number,
        period=r.period,
        invoice_number=r.invoice_number,
        issue_date=r.issue_date,
        acquisition_date=r.acquisition_date,
        seller=Seller(nip=r.seller_nip, name=r.seller_name),
        invoice_type=r.invoice_type,
        currency=r.currency,
        net_amount=r.net_amount,
        vat_amount=r.vat_amount,
        gross_amount=r.gross_amount,
        vat_amount_pln=r.vat_amount_pln,
        corrected_ksef_number=r.corrected_ksef_number,
        corrected_invoice_number=r.corrected_invoice_number,
        corrects_entry_id=view.corrects_entry_id,
        corrections=[c for c, _n in view.corrections],
        decision=Decision(r.decision),
        decision_label=DECISION_LABELS[Decision(r.decision)],
        description=r.description,
        decided_at=r.decided_at,
        decided_by=r.decided_by,
        decided_by_side=r.decided_by_side,
        suggestion=None if s is None else SuggestionOut(**s.__dict__),
        imported_at=r.imported_at,
        imported_by=r.imported_by,
        archived_at=r.archived_at,
        late_arrival=r.late_arrival,
        month_approved=view.month_locked,
        invoice_hash=r.invoice_hash,
        xml_ref=r.xml_ref,
        received_at=r.received_at,
        revision=r.revision,
    )


class EntryPage(BaseModel):
    items: list[Entry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; none on the last page")


class OutcomeOut(BaseModel):
    entry_id: uuid.UUID | None
    ksef_number: str | None
    result: Literal["changed", "unchanged", "refused", "not_found", "imported", "already_imported"]
    code: str | None = None
    message: str | None = None
    reason: dict[str, str] | None = Field(default=None, description="The booking gate's reason, in pl and en")


class Outcomes(BaseModel):
    results: list[OutcomeOut]
    changed: int
    refused: int


def _outcomes(outcomes: list[Outcome]) -> Outcomes:
    ok = {"changed", "imported"}
    return Outcomes(
        results=[OutcomeOut(**o.__dict__) for o in outcomes],
        changed=sum(o.result in ok for o in outcomes),
        refused=sum(o.result in ("refused", "not_found") for o in outcomes),
    )


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision | None = None
    description: str | None = Field(default=None, max_length=2000, description="'Opis'; an empty string clears it")


class BulkDecisionBody(DecisionBody):
    entry_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_BULK)


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry_ids: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_BULK)
    ksef_numbers: list[Annotated[str, Field(pattern=KSEF_NUMBER_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_BULK
    )


def _change(body: DecisionBody) -> DecisionChange:
    given = body.model_fields_set
    return DecisionChange(decision=body.decision, description=body.description, set_description="description" in given)


# --- routes ----------------------------------------------------------------------------------------------------

SortName = Literal["issue_date", "-issue_date", "acquired", "-acquired", "gross", "-gross"]
assert set(SortName.__args__) == set(SORTS)  # type: ignore[attr-defined]


@router.get("/clients/{nip}/purchases", response_model=EntryPage, summary="The purchase buffer, filtered and paged")
async def list_entries(
    nip: str,
    principal: Reader,
    buffer: BufferDep,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
    decision: Decision | None = None,
    seller: Annotated[str | None, Query(max_length=200, description="Seller NIP, or a part of its name")] = None,
    gross_min: Decimal | None = None,
    gross_max: Decimal | None = None,
    issued_from: date | None = None,
    issued_to: date | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Invoice/KSeF number, seller or description")] = None,
    imported: bool | None = None,
    archived: Annotated[bool, Query(description="The archive instead of the buffer")] = False,
    sort: SortName = "-issue_date",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> EntryPage:
    nip = path_client_nip(nip)
    where = EntryFilter(
        period=period,
        decision=decision,
        seller=seller,
        gross_min=gross_min,
        gross_max=gross_max,
        text=q,
        imported=imported,
        archived=archived,
        issued_from=issued_from,
        issued_to=issued_to,
    )
    try:
        page = await buffer.page(principal, nip, where, sort=sort, cursor=cursor, limit=limit)
    except BufferError as exc:
        raise _problem(exc) from None
    return EntryPage(items=[_entry(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/clients/{nip}/purchases/{entry_id}", response_model=Entry, summary="One purchase invoice in the buffer")
async def get_entry(nip: str, entry_id: uuid.UUID, principal: Reader, buffer: BufferDep) -> Entry:
    try:
        return _entry(await buffer.one(principal, path_client_nip(nip), entry_id))
    except BufferError as exc:
        raise _problem(exc) from None


@router.patch(
    "/clients/{nip}/purchases/{entry_id}",
    response_model=Entry,
    summary="Decide (Księguj / Nie księguj) and describe one invoice; by the office, an override",
)
async def decide_one(nip: str, entry_id: uuid.UUID, body: DecisionBody, principal: Decider, buffer: BufferDep) -> Entry:
    nip = path_client_nip(nip)
    try:
        (outcome,) = await buffer.decide(principal, nip, [entry_id], _change(body))
        if outcome.result == "not_found":
            raise BufferError("not-found", "The invoice is not in this client's buffer.", status=404)
        if outcome.result == "refused":
            raise BufferError(outcome.code or "refused", outcome.message or "Refused.")
        return _entry(await buffer.one(principal, nip, entry_id))
    except BufferError as exc:
        raise _problem(exc) from None


@router.post(
    "/clients/{nip}/purchases/decisions",
    response_model=Outcomes,
    summary="The same decision and/or description on a selection; the outcome per invoice",
)
async def decide_many(nip: str, body: BulkDecisionBody, principal: Decider, buffer: BufferDep) -> Outcomes:
    try:
        return _outcomes(await buffer.decide(principal, path_client_nip(nip), body.entry_ids, _change(body)))
    except BufferError as exc:
        raise _problem(exc) from None


@router.post(
    "/clients/{nip}/purchases/imports",
    response_model=Outcomes,
    summary="Import ('realizacja') through the booking gate; idempotent, the outcome per invoice",
)
async def import_entries(nip: str, body: ImportBody, principal: Importer, buffer: BufferDep) -> Outcomes:
    try:
        outcomes = await buffer.import_entries(
            principal, path_client_nip(nip), entry_ids=body.entry_ids, ksef_numbers=body.ksef_numbers
        )
    except BufferError as exc:
        raise _problem(exc) from None
    return _outcomes(outcomes)


@router.post(
    "/clients/{nip}/purchases/{entry_id}/archive", response_model=Entry, summary="Archive a 'Nie księguj' invoice"
)
async def archive(nip: str, entry_id: uuid.UUID, principal: Importer, buffer: BufferDep) -> Entry:
    try:
        return _entry(await buffer.archive(principal, path_client_nip(nip), entry_id, restore=False))
    except BufferError as exc:
        raise _problem(exc) from None


@router.post(
    "/clients/{nip}/purchases/{entry_id}/restore",
    response_model=Entry,
    summary="Bring an invoice back from the archive",
)
async def restore(nip: str, entry_id: uuid.UUID, principal: Importer, buffer: BufferDep) -> Entry:
    try:
        return _entry(await buffer.archive(principal, path_client_nip(nip), entry_id, restore=True))
    except BufferError as exc:
        raise _problem(exc) from None


class ReadyEntry(BaseModel):
    entry_id: uuid.UUID
    ksef_number: str
    invoice_number: str
    issue_date: date
    acquisition_date: datetime
    seller_nip: str | None
    seller_name: str | None
    currency: str
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    invoice_type: str
    description: str | None
    invoice_hash: str
    imported_at: datetime | None


def _ready(r: Row[Any]) -> ReadyEntry:
    return ReadyEntry(
        entry_id=r.id,
        ksef_number=r.ksef_number,
        invoice_number=r.invoice_number,
        issue_date=r.issue_date,
        acquisition_date=r.acquisition_date,
        seller_nip=r.seller_nip,
        seller_name=r.seller_name,
        currency=r.currency,
        net_amount=r.net_amount,
        vat_amount=r.vat_amount,
        gross_amount=r.gross_amount,
        invoice_type=r.invoice_type,
        description=r.description,
        invoice_hash=r.invoice_hash,
        imported_at=r.imported_at,
    )


PeriodQuery = Annotated[str | None, Query(pattern=PERIOD_PATTERN)]


@router.get("/clients/{nip}/ready", response_model=list[ReadyEntry], summary="Ready to book: for the ERP, as JSON")
async def ready_json(
    nip: str, principal: Reader, buffer: BufferDep, period: PeriodQuery = None, include_imported: bool = False
) -> list[ReadyEntry]:
    rows = await buffer.ready(principal, path_client_nip(nip), period, include_imported=include_imported, fmt="json")
    return [_ready(r) for r in rows]


@router.get(
    "/clients/{nip}/ready.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Ready to book: for the ERP, as CSV (UTF-8, comma-separated, header row)",
)
async def ready_csv(
    nip: str, principal: Reader, buffer: BufferDep, period: PeriodQuery = None, include_imported: bool = False
) -> Response:
    nip = path_client_nip(nip)
    rows = await buffer.ready(principal, nip, period, include_imported=include_imported, fmt="csv")
    out = io.StringIO()
    columns = list(ReadyEntry.model_fields)
    writer = csv.writer(out)
    writer.writerow(columns)
    for r in rows:
        data = _ready(r).model_dump(mode="json")
        writer.writerow(["" if data[c] is None else data[c] for c in columns])
    name = f"ready-{nip}-{period or 'all'}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


class MonthSummary(BaseModel):
    period: str
    entries: int = Field(description="In the buffer (archived ones apart)")
    unverified: int
    book: int
    dont_book: int
    archived: int
    imported: int
    late_arrivals: int
    approved: bool = Field(description="Approved by the client, and so closed for its edits")
    approval_changed_at: datetime | None


@router.get("/clients/{nip}/months", response_model=list[MonthSummary], summary="The client's months: counts and lock")
async def months(nip: str, principal: Reader, buffer: BufferDep) -> list[MonthSummary]:
    return [MonthSummary(**m) for m in await buffer.months(principal, path_client_nip(nip))]


class LogLine(BaseModel):
    id: int
    at: datetime
    kind: str
    entry_id: uuid.UUID | None
    ksef_number: str | None
    actor: str | None
    actor_side: str | None
    detail: dict[str, Any]


class LogPage(BaseModel):
    items: list[LogLine]
    next_after: int | None


def _log_line(r: Row[Any]) -> LogLine:
    return LogLine(
        id=r.id,
        at=r.at,
        kind=r.kind,
        entry_id=r.entry_id,
        ksef_number=r.ksef_number,
        actor=r.actor,
        actor_side=r.actor_side,
        detail=r.detail,
    )


@router.get(
    "/clients/{nip}/communication-log",
    response_model=LogPage,
    summary="Rejestr komunikacji: what happened to the buffer (or to one entry), oldest first",
)
async def communication_log(
    nip: str,
    principal: Reader,
    buffer: BufferDep,
    entry_id: uuid.UUID | None = None,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> LogPage:
    rows = await buffer.communication(principal, path_client_nip(nip), entry_id=entry_id, after=after, limit=limit)
    return LogPage(items=[_log_line(r) for r in rows], next_after=rows[-1].id if len(rows) == limit else None)


@router.get(
    "/clients/{nip}/communication-log.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Rejestr komunikacji as CSV (up to 10 000 lines after `after`)",
)
async def communication_log_csv(
    nip: str,
    principal: Reader,
    buffer: BufferDep,
    entry_id: uuid.UUID | None = None,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    nip = path_client_nip(nip)
    rows = await buffer.communication(principal, nip, entry_id=entry_id, after=after, limit=10_000)
    return Response(
        to_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="communication-log-{nip}.csv"'},
    )


class LedgerLine(BaseModel):
    id: int
    at: datetime
    principal_id: str
    principal_type: str
    org_id: uuid.UUID | None
    org_kind: str | None
    action: str
    target: str | None
    items: int


class LedgerPage(BaseModel):
    items: list[LedgerLine]
    next_before: int | None


@router.get(
    "/clients/{nip}/access-ledger",
    response_model=LedgerPage,
    summary="Who read my invoices: every read by another organisation, newest first (the client's owner only)",
)
async def access_ledger(
    nip: str,
    principal: LedgerReader,
    buffer: BufferDep,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> LedgerPage:
    try:
        rows = await buffer.access_ledger(principal, path_client_nip(nip), before=before, limit=limit)
    except BufferError as exc:
        raise _problem(exc) from None
    items = [
        LedgerLine(
            id=r.id,
            at=r.at,
            principal_id=r.principal_id,
            principal_type=r.principal_type,
            org_id=r.org_id,
            org_kind=r.org_kind,
            action=r.action,
            target=r.target,
            items=r.items,
        )
        for r in rows
    ]
    return LedgerPage(items=items, next_before=rows[-1].id if len(rows) == limit else None)
