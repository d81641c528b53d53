"""Session views shared by online and batch sessions: ``GET /sessions``, ``GET /sessions/{ref}``, the invoice
lists and statuses, and the UPO downloads (REFERENCE.md §6). Also the helpers the two sending routers share
(session lookup and visibility, recording an invoice outcome, lazy UPO generation).

A UPO is generated and signed once, on first need, and stored: every download of it (API or pre-signed link) serves
the same signed bytes, and ``x-ms-meta-hash`` is their SHA-256."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel

from ksef_sim.clock import iso
from ksef_sim.crypto import sha256_b64
from ksef_sim.deps import access
from ksef_sim.domain import upo
from ksef_sim.domain.acceptance import Verdict
from ksef_sim.domain.certificates import SimCa
from ksef_sim.domain.fa import find_form
from ksef_sim.domain.sessions import (
    INVOICE_DESCRIPTIONS,
    Session,
    SessionInvoice,
    UpoPage,
    common_status,
    counts,
    date_closed,
    decode_continuation,
    encode_continuation,
    session_invoices,
    session_status,
)
from ksef_sim.errors import KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.records import StoredInvoice
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Caller
from ksef_sim.state import Sim, get_sim

router = APIRouter()

READ_PERMISSIONS = ("InvoiceWrite", "Introspection", "PefInvoiceWrite", "EnforcementOperations")
UPO_MEDIA_TYPE = "application/xml"


# ---------------------------------------------------------------------------------------------------- helpers


def sees_all_sessions(caller: Caller) -> bool:
    """§6: Introspection / EnforcementOperations see every session of the context; InvoiceWrite only its own."""
    return caller.has_any("Introspection", "EnforcementOperations")


def visible(session: Session, caller: Caller) -> bool:
    if (session.context_type, session.context_value) != (caller.context.type, caller.context.value):
        return False
    if sees_all_sessions(caller):
        return True
    return (session.subject_type, session.subject_value) == (caller.subject.type, caller.subject.value)


def load_session(sim: Sim, caller: Caller, reference: str, session_type: str | None = None) -> Session:
    """The caller's session or 400 21173 (unknown, another context, another subject, wrong kind)."""
    session = sim.store.get(Session, reference)
    if session is None or not visible(session, caller) or (session_type and session.session_type != session_type):
        raise KsefError(21173, f"Sesja {reference} nie istnieje.")
    return session


def record_invoice(
    sim: Sim,
    session: Session,
    *,
    reference: str,
    invoice_hash: str,
    invoice_size: int,
    invoicing_date: datetime,
    final_at: datetime,
    verdict: Verdict,
    offline_mode: bool,
    hash_of_corrected_invoice: str | None = None,
    file_name: str | None = None,
) -> SessionInvoice:
    """Store the outcome of one invoice and append it to the session (caller puts the session)."""
    accepted = verdict.invoice
    record = SessionInvoice(
        reference_number=reference,
        session_reference_number=session.reference_number,
        ordinal_number=len(session.invoice_refs) + 1,
        invoice_hash=invoice_hash,
        invoice_size=invoice_size,
        invoice_file_name=file_name,
        invoicing_date=invoicing_date,
        final_at=final_at,
        code=verdict.code,
        description=verdict.description,
        details=verdict.details,
        extensions=verdict.extensions,
        invoice_number=verdict.facts.invoice_number if verdict.facts else None,
        ksef_number=accepted.ksef_number if accepted else None,
        acquisition_date=accepted.acquisition_date if accepted else None,
        permanent_storage_date=accepted.permanent_storage_date if accepted else None,
        invoicing_mode=verdict.invoicing_mode,
        offline_mode=offline_mode,
        hash_of_corrected_invoice=hash_of_corrected_invoice,
        context_type=session.context_type,
        context_value=session.context_value,
    )
    sim.store.put(record)
    session.invoice_refs.append(reference)
    return record


def failed_verdict(code: int, *details: str) -> Verdict:
    return Verdict(code, INVOICE_DESCRIPTIONS[code], list(details) or None)


def _upo_header(session: Session) -> upo.UpoHeader:
    form = find_form(session.form_code.systemCode, session.form_code.schemaVersion, session.form_code.value)
    return upo.UpoHeader(
        session_reference_number=session.reference_number,
        context_type=session.context_type,
        context_value=session.context_value,
        structure_name=form.structure_name if form else session.form_code.systemCode,
        form_system_code=session.form_code.systemCode,
        ksef_token_reference=session.ksef_token_reference,
        auth_document_hash=sha256_b64(session.auth_reference_number.encode()),
    )


def _upo_document(stored: StoredInvoice) -> upo.UpoDocument:
    return upo.UpoDocument(
        seller_nip=stored.seller_nip,
        ksef_number=stored.ksef_number,
        invoice_number=stored.invoice_number,
        issue_date=stored.issue_date,
        invoicing_date=stored.invoicing_date,
        acquisition_date=stored.acquisition_date,
        invoice_hash=stored.invoice_hash,
        invoicing_mode=stored.invoicing_mode,
    )


def _signed(sim: Sim, xml: bytes) -> bytes:
    now = sim.clock.now()
    signing_key = upo.UpoSigningKey.load_or_create(sim.store, SimCa.load_or_create(sim.store, now), now)
    return upo.sign_upo(xml, signing_key, now)


def ensure_invoice_upo(sim: Sim, session: Session, invoice: SessionInvoice) -> bytes | None:
    """The invoice's signed UPO (made and stored on first need); ``None`` unless it was accepted and is final."""
    if invoice.code != 200 or not invoice.is_final(sim.clock.now()) or invoice.ksef_number is None:
        return None
    if invoice.upo_ready and invoice.upo_signed:
        blob = sim.store.get_blob(invoice.upo_blob)
        if blob is not None:
            return blob
    stored = sim.store.get(StoredInvoice, invoice.ksef_number)
    if stored is None:
        return None
    xml = _signed(sim, upo.invoice_upo(_upo_header(session), _upo_document(stored)))
    sim.store.put_blob(invoice.upo_blob, xml)
    invoice.upo_ready = True
    invoice.upo_signed = True
    sim.store.put(invoice)
    return xml


def ensure_session_upo(sim: Sim, session: Session, invoices: list[SessionInvoice]) -> list[UpoPage]:
    """Session UPO pages, generated and signed once the session reached 200 (REFERENCE.md §6)."""
    if session.upo_pages:
        unsigned = [page for page in session.upo_pages if not page.signed]
        for page in unsigned:
            # Signed in place: the page keeps the reference number clients may already hold.
            unsigned_xml = sim.store.get_blob(page.blob_name)
            if unsigned_xml is not None:
                sim.store.put_blob(page.blob_name, _signed(sim, unsigned_xml))
            page.signed = True
        if unsigned:
            sim.store.put(session)
        return session.upo_pages
    documents = []
    for invoice in invoices:
        if invoice.code == 200 and invoice.ksef_number:
            stored = sim.store.get(StoredInvoice, invoice.ksef_number)
            if stored is not None:
                documents.append(_upo_document(stored))
    if not documents:
        return []
    now = sim.clock.now()
    pages = []
    for number, xml in enumerate(upo.session_upo_pages(_upo_header(session), documents), start=1):
        blob = f"upo/{session.reference_number}/{number}.xml"
        sim.store.put_blob(blob, _signed(sim, xml))
        pages.append(
            UpoPage(
                reference_number=reference_number(RefType.SESSION_UPO, now), page=number, blob_name=blob, signed=True
            )
        )
    session.upo_pages = pages
    sim.store.put(session)
    return pages


def _link_expiry(sim: Sim) -> datetime:
    return sim.clock.now() + timedelta(seconds=sim.settings.presigned_url_ttl_s)


def invoice_json(sim: Sim, request: Request, session: Session, invoice: SessionInvoice) -> dict[str, Any]:
    now = sim.clock.now()
    body: dict[str, Any] = {
        "ordinalNumber": invoice.ordinal_number,
        "referenceNumber": invoice.reference_number,
        "invoiceHash": invoice.invoice_hash,
        "invoicingDate": iso(invoice.invoicing_date),
        "status": invoice.status(now).as_json(),
    }
    if invoice.invoice_file_name:
        body["invoiceFileName"] = invoice.invoice_file_name
    if not invoice.is_final(now):
        return body
    if invoice.invoice_number:
        body["invoiceNumber"] = invoice.invoice_number
    if invoice.code == 200 and invoice.ksef_number and invoice.acquisition_date:
        body["ksefNumber"] = invoice.ksef_number
        body["acquisitionDate"] = iso(invoice.acquisition_date)
        body["invoicingMode"] = invoice.invoicing_mode
        # Written to permanent storage asynchronously, later than acquisition (spec).
        if invoice.permanent_storage_date is not None and now >= invoice.permanent_storage_date:
            body["permanentStorageDate"] = iso(invoice.permanent_storage_date)
        if ensure_invoice_upo(sim, session, invoice) is not None:
            expires = _link_expiry(sim)
            base = sim.public_base_url(request)
            body["upoDownloadUrl"] = sim.presigner.url(base, "GET", invoice.upo_blob, expires)
            body["upoDownloadUrlExpirationDate"] = iso(expires)
    return body


def _date_updated(session: Session, invoices: list[SessionInvoice], now: datetime) -> datetime:
    latest = session.updated_at
    closed = date_closed(session, now)
    if closed is not None and closed > latest:
        latest = closed
    if session.processed_at is not None and session.processed_at <= now and session.processed_at > latest:
        latest = session.processed_at
    for invoice in invoices:
        if invoice.is_final(now) and invoice.final_at > latest:
            latest = invoice.final_at
    return latest


def xml_response(xml: bytes) -> Response:
    return Response(content=xml, media_type=UPO_MEDIA_TYPE, headers={"x-ms-meta-hash": sha256_b64(xml)})


# ---------------------------------------------------------------------------------------------------- schemas


class StatusInfo(BaseModel):
    code: int
    description: str
    details: list[str] | None = None


class SessionsQueryResponseItem(BaseModel):
    referenceNumber: str
    status: StatusInfo
    dateCreated: str
    dateUpdated: str
    validUntil: str | None = None
    totalInvoiceCount: int
    successfulInvoiceCount: int
    failedInvoiceCount: int


class SessionsQueryResponse(BaseModel):
    continuationToken: str | None = None
    sessions: list[SessionsQueryResponseItem]


# ---------------------------------------------------------------------------------------------------- endpoints


@router.get("/sessions", response_model_exclude_none=True)
async def list_sessions(
    request: Request,
    sessionType: Annotated[str, Query(pattern="^(Online|Batch)$")],
    caller: Annotated[Caller, Depends(access(Group.SESSION_LIST))],
    pageSize: Annotated[int, Query(ge=10, le=1000)] = 10,
    referenceNumber: Annotated[str | None, Query(min_length=36, max_length=36)] = None,
    dateCreatedFrom: datetime | None = None,
    dateCreatedTo: datetime | None = None,
    dateClosedFrom: datetime | None = None,
    dateClosedTo: datetime | None = None,
    dateModifiedFrom: datetime | None = None,
    dateModifiedTo: datetime | None = None,
    statuses: Annotated[list[str] | None, Query()] = None,
    x_continuation_token: Annotated[str | None, Header()] = None,
) -> SessionsQueryResponse:
    caller.require_any("InvoiceWrite", "Introspection", "EnforcementOperations")
    sim = get_sim(request)
    now = sim.clock.now()
    allowed = {"InProgress", "Succeeded", "Failed", "Cancelled"}
    if statuses and not set(statuses) <= allowed:
        raise KsefError(21405, f"statuses: dozwolone wartości {sorted(allowed)}")
    offset = decode_continuation(x_continuation_token)

    def within(value: datetime | None, low: datetime | None, high: datetime | None) -> bool:
        if low is None and high is None:
            return True
        if value is None:
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    rows = []
    for session in sim.store.all(Session):
        if session.session_type != sessionType or not visible(session, caller):
            continue
        if referenceNumber and session.reference_number != referenceNumber:
            continue
        invoices = session_invoices(sim.store, session)
        status = session_status(session, invoices, now)
        updated = _date_updated(session, invoices, now)
        if statuses and common_status(status.code) not in statuses:
            continue
        if not within(session.created_at, dateCreatedFrom, dateCreatedTo):
            continue
        if not within(date_closed(session, now), dateClosedFrom, dateClosedTo):
            continue
        if not within(updated, dateModifiedFrom, dateModifiedTo):
            continue
        tally = counts(invoices, now)
        rows.append(
            (
                session.created_at,
                SessionsQueryResponseItem(
                    referenceNumber=session.reference_number,
                    status=StatusInfo(code=status.code, description=status.description, details=status.details),
                    dateCreated=iso(session.created_at),
                    dateUpdated=iso(updated),
                    validUntil=iso(session.valid_until),
                    totalInvoiceCount=tally.total,
                    successfulInvoiceCount=tally.successful,
                    failedInvoiceCount=tally.failed,
                ),
            )
        )
    rows.sort(key=lambda row: row[0], reverse=True)  # spec x-sort: dateCreated desc
    page = [item for _, item in rows[offset : offset + pageSize]]
    more = offset + pageSize < len(rows)
    return SessionsQueryResponse(
        continuationToken=encode_continuation(offset + pageSize) if more else None, sessions=page
    )


@router.get("/sessions/{referenceNumber}")
async def session_status_view(
    referenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.SESSION_MISC))],
) -> dict[str, Any]:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    now = sim.clock.now()
    session = load_session(sim, caller, referenceNumber)
    invoices = session_invoices(sim.store, session)
    status = session_status(session, invoices, now)
    tally = counts(invoices, now)
    body: dict[str, Any] = {
        "status": StatusInfo(code=status.code, description=status.description, details=status.details).model_dump(
            exclude_none=True
        ),
        "dateCreated": iso(session.created_at),
        "dateUpdated": iso(_date_updated(session, invoices, now)),
        "validUntil": iso(session.valid_until),
        "invoiceCount": tally.total,
        "successfulInvoiceCount": tally.successful,
        "failedInvoiceCount": tally.failed,
    }
    if status.code == 200:
        pages = ensure_session_upo(sim, session, invoices)
        if pages:
            expires = _link_expiry(sim)
            base = sim.public_base_url(request)
            body["upo"] = {
                "pages": [
                    {
                        "referenceNumber": page.reference_number,
                        "downloadUrl": sim.presigner.url(base, "GET", page.blob_name, expires),
                        "downloadUrlExpirationDate": iso(expires),
                    }
                    for page in pages
                ]
            }
    return body


def _invoice_page(
    sim: Sim, request: Request, session: Session, invoices: list[SessionInvoice], page_size: int, token: str | None
) -> dict[str, Any]:
    offset = decode_continuation(token)
    chunk = invoices[offset : offset + page_size]
    body: dict[str, Any] = {"invoices": [invoice_json(sim, request, session, invoice) for invoice in chunk]}
    if offset + page_size < len(invoices):
        body["continuationToken"] = encode_continuation(offset + page_size)
    return body


@router.get("/sessions/{referenceNumber}/invoices")
async def session_invoice_list(
    referenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.SESSION_INVOICE_LIST))],
    pageSize: Annotated[int, Query(ge=10, le=1000)] = 10,
    x_continuation_token: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    session = load_session(sim, caller, referenceNumber)
    invoices = session_invoices(sim.store, session)
    return _invoice_page(sim, request, session, invoices, pageSize, x_continuation_token)


@router.get("/sessions/{referenceNumber}/invoices/failed")
async def session_failed_invoices(
    referenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.SESSION_INVOICE_LIST))],
    pageSize: Annotated[int, Query(ge=10, le=1000)] = 10,
    x_continuation_token: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    now = sim.clock.now()
    session = load_session(sim, caller, referenceNumber)
    failed = [invoice for invoice in session_invoices(sim.store, session) if invoice.failed(now)]
    return _invoice_page(sim, request, session, failed, pageSize, x_continuation_token)


def _session_invoice(sim: Sim, session: Session, reference: str) -> SessionInvoice:
    invoice = sim.store.get(SessionInvoice, reference)
    if invoice is None or invoice.session_reference_number != session.reference_number:
        raise KsefError(21164, f"Faktura {reference} nie istnieje w sesji {session.reference_number}.")
    return invoice


@router.get("/sessions/{referenceNumber}/invoices/ksef/{ksefNumber}/upo")
async def invoice_upo_by_ksef_number(
    referenceNumber: str,
    ksefNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.SESSION_MISC))],
) -> Response:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    session = load_session(sim, caller, referenceNumber)
    for invoice in session_invoices(sim.store, session):
        if invoice.ksef_number == ksefNumber:
            xml = ensure_invoice_upo(sim, session, invoice)
            if xml is not None:
                return xml_response(xml)
    raise KsefError(21178, f"Brak UPO dla faktury {ksefNumber} w sesji {referenceNumber}.")


@router.get("/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}")
async def session_invoice_status(
    referenceNumber: str,
    invoiceReferenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.INVOICE_STATUS))],
) -> dict[str, Any]:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    session = load_session(sim, caller, referenceNumber)
    return invoice_json(sim, request, session, _session_invoice(sim, session, invoiceReferenceNumber))


@router.get("/sessions/{referenceNumber}/invoices/{invoiceReferenceNumber}/upo")
async def invoice_upo(
    referenceNumber: str,
    invoiceReferenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.SESSION_MISC))],
) -> Response:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    session = load_session(sim, caller, referenceNumber)
    invoice = sim.store.get(SessionInvoice, invoiceReferenceNumber)
    xml = None
    if invoice is not None and invoice.session_reference_number == session.reference_number:
        xml = ensure_invoice_upo(sim, session, invoice)
    if xml is None:
        raise KsefError(21178, f"Brak UPO dla faktury {invoiceReferenceNumber} w sesji {referenceNumber}.")
    return xml_response(xml)


@router.get("/sessions/{referenceNumber}/upo/{upoReferenceNumber}")
async def session_upo(
    referenceNumber: str,
    upoReferenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.SESSION_MISC))],
) -> Response:
    caller.require_any(*READ_PERMISSIONS)
    sim = get_sim(request)
    now = sim.clock.now()
    session = load_session(sim, caller, referenceNumber)
    invoices = session_invoices(sim.store, session)
    if session_status(session, invoices, now).code == 200:
        for page in ensure_session_upo(sim, session, invoices):
            if page.reference_number == upoReferenceNumber:
                xml = sim.store.get_blob(page.blob_name)
                if xml is not None:
                    return xml_response(xml)
    raise KsefError(21178, f"Brak UPO {upoReferenceNumber} dla sesji {referenceNumber}.")
