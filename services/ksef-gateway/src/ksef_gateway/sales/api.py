"""Sales invoices over HTTP: submit (FA(3) XML or a JSON invoice, with an ``Idempotency-Key``), status with the
full history, the XML, the UPO, KOD I.

Submitting needs ``ksef.send`` for the client; reading needs ``ksef.read``. A client sends its own invoices: the
seller (Podmiot1) must be the client in the path.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Row

from ksef_gateway.deps import GatewayDep, KsefReader, actor_of, client_nip
from ksef_gateway.sales.deadlines import OfflineMode
from ksef_gateway.sales.domain import SalesStatus, SubmissionError
from ksef_gateway.sales.qr import CAPTION_CERTIFICATE, QrCode, kod_i_for_hash
from ksef_gateway.sales.rendering import SalesInvoiceIn, render_fa3
from ksef_gateway.sales.rules import AutoSendRules, backfill_window
from ksef_gateway.sales.service import Submitted
from platform_common.auth import Principal, require
from platform_common.limits import body_limit
from platform_common.problems import Problem

router = APIRouter(tags=["sales-invoices"])

Sender = Annotated[Principal, Depends(require("ksef.send", client_nip_param="nip"))]
AutoSender = Annotated[Principal, Depends(require("ksef.send.auto", client_nip_param="nip"))]
# An FA(3) invoice is at most 1 MB (REFERENCE.md §4); its JSON form may be somewhat larger than the XML.
SUBMIT_BODY_LIMIT = 2_000_000
XML_TYPES = ("application/xml", "text/xml")


class HistoryLine(BaseModel):
    at: datetime
    status: str
    detail: dict[str, Any]


class SalesInvoice(BaseModel):
    id: uuid.UUID
    client_nip: str
    status: SalesStatus
    status_label: dict[str, str]
    invoice_number: str = Field(description="P_2")
    issue_date: date = Field(description="P_1")
    seller_nip: str
    buyer_nip: str | None
    invoice_type: str
    currency: str
    gross_amount: Decimal | None
    invoice_hash: str = Field(description="Base64 SHA-256 of the XML (KSeF's invoiceHash)")
    source: Literal["xml", "json"]
    ksef_number: str | None
    acquisition_date: datetime | None
    session_reference: str | None
    invoice_reference: str | None
    ksef_code: int | None = Field(description="KSeF's status code of the last answer (200, 440, 4xx)")
    error: dict[str, Any] | None = Field(description="KSeF's description, details and extensions of a refusal")
    has_upo: bool
    kod_i_url: str = Field(description="KOD I verification link (REFERENCE.md §11)")
    offline_mode: str | None = Field(description="offline24 when issued offline on purpose (REFERENCE.md §12)")
    offline_deadline: date | None = Field(description="The last day for sending it to KSeF (Polish working days)")
    kod_ii_url: str | None = Field(description="KOD II of an offline invoice, signed with the Offline certificate")
    offline_deadline_status: Literal["due", "awaiting_end", "not_required"] | None = Field(
        description="due: offline_deadline is the last day; awaiting_end: the outage it depends on has not ended;"
        " not_required: a total failure (no obligation to send)"
    )
    held_by_rule: str | None = Field(description="The auto-send rule that holds it (status held)")
    corrects_invoice_id: uuid.UUID | None = Field(
        description="The rejected offline invoice this technical correction replaces"
    )
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    history: list[HistoryLine] | None = Field(default=None, description="Every state, on a single invoice's read")


class SalesPage(BaseModel):
    items: list[SalesInvoice]
    next_cursor: str | None


def _problem(exc: SubmissionError) -> Problem:
    titles = {404: "Not Found", 409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type"}
    return Problem(
        exc.status, titles.get(exc.status, "Unprocessable Content"), str(exc), code=exc.code, **exc.extensions
    )


def _qr_base(gateway: GatewayDep) -> str:
    return gateway.sales.qr_base


def _out(row: Row[Any], qr_base: str, history: list[HistoryLine] | None = None) -> SalesInvoice:
    status = SalesStatus(row.status)
    return SalesInvoice(
        id=row.id,
        client_nip=row.client_nip,
        status=status,
        status_label=status.label,
        invoice_number=row.invoice_number,
        issue_date=row.issue_date,
        seller_nip=row.seller_nip,
        buyer_nip=row.buyer_nip,
        invoice_type=row.invoice_type,
        currency=row.currency,
        gross_amount=row.gross_amount,
        invoice_hash=row.invoice_hash,
        source=row.source,
        ksef_number=row.ksef_number,
        acquisition_date=row.acquisition_date,
        session_reference=row.session_reference,
        invoice_reference=row.invoice_reference,
        ksef_code=row.ksef_code,
        error=row.error,
        has_upo=status in (SalesStatus.ACCEPTED, SalesStatus.DUPLICATE),
        kod_i_url=kod_i_for_hash(qr_base, row.seller_nip, row.issue_date, row.invoice_hash, row.ksef_number).url,
        offline_mode=row.offline_mode,
        offline_deadline=row.offline_deadline,
        kod_ii_url=row.kod_ii_url,
        offline_deadline_status=_deadline_status(row),
        held_by_rule=row.held_by_rule,
        corrects_invoice_id=row.corrects_invoice_id,
        submitted_by=row.submitted_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
    )


def _deadline_status(row: Row[Any]) -> Literal["due", "awaiting_end", "not_required"] | None:
    if row.offline_mode is None:
        return None
    if row.offline_deadline is not None:
        return "due"
    return "not_required" if row.offline_mode == OfflineMode.TOTAL_FAILURE.value else "awaiting_end"


async def _json_invoice(gateway: GatewayDep, body: bytes) -> bytes:
    try:
        invoice = SalesInvoiceIn.model_validate_json(body)
    except ValidationError as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            f"The JSON invoice is not valid: {exc.error_count()} error(s).",
            code="invalid-invoice",
            errors=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()[:50]],
        ) from None
    return render_fa3(invoice, generated_at=gateway.sales.clock())


@router.post(
    "/clients/{nip}/sales",
    status_code=202,
    response_model=SalesInvoice,
    summary="Submit a sales invoice to KSeF: FA(3) XML (application/xml) or a JSON invoice (application/json)",
    openapi_extra=body_limit(SUBMIT_BODY_LIMIT)
    | {
        "requestBody": {
            "required": True,
            "content": {
                "application/xml": {"schema": {"type": "string", "description": "An FA(3) invoice"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/SalesInvoiceIn"}},
            },
        }
    },
    responses={200: {"description": "The same Idempotency-Key and body as before: the first result"}},
)
async def submit(
    nip: str,
    request: Request,
    response: Response,
    principal: Sender,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)] = None,
    offline: Annotated[
        Literal["offline24"] | None,
        Query(description="Issue it offline on purpose: KOD II at once, sent with offlineMode=true (REFERENCE.md §12)"),
    ] = None,
) -> SalesInvoice:
    submitted = await _submit(
        gateway, client_nip(nip), request, principal, idempotency_key, OfflineMode(offline) if offline else None
    )
    return _answer(submitted, response, f"{request.url.path}/{submitted.row.id}", gateway)


def _answer(submitted: Submitted, response: Response, location: str, gateway: GatewayDep) -> SalesInvoice:
    if submitted.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = location
    return _out(submitted.row, _qr_base(gateway))


async def _submit(
    gateway: GatewayDep,
    client: str,
    request: Request,
    principal: Principal,
    idempotency_key: str | None,
    offline: OfflineMode | None,
    corrects: uuid.UUID | None = None,
) -> Submitted:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type in XML_TYPES:
        xml, source = body, "xml"
    elif content_type == "application/json":
        xml, source = await _json_invoice(gateway, body), "json"
    else:
        raise Problem(
            415,
            "Unsupported Media Type",
            "Send FA(3) XML as application/xml, or a JSON invoice as application/json.",
            code="unsupported-media-type",
        )
    try:
        return await gateway.sales.submit(
            client,
            xml,
            source=source,
            content_type=content_type,
            body=body,
            idempotency_key=idempotency_key,
            submitted_by=actor_of(principal),
            offline=offline,
            corrects=corrects,
        )
    except SubmissionError as exc:
        raise _problem(exc) from None


@router.post(
    "/clients/{nip}/sales/{invoice_id}/technical-correction",
    status_code=202,
    response_model=SalesInvoice,
    summary="Replace a rejected offline invoice by its technical correction (sent with hashOfCorrectedInvoice)",
    description="REFERENCE.md §8: only an invoice issued offline and rejected by KSeF can be corrected this way,"
    " once. The body is the corrected FA(3) XML or JSON invoice, as for a submission; it keeps the original's"
    " offline mode and deadline and is sent with offlineMode=true.",
    openapi_extra=body_limit(SUBMIT_BODY_LIMIT),
)
async def technical_correction(
    nip: str,
    invoice_id: uuid.UUID,
    request: Request,
    response: Response,
    principal: Sender,
    gateway: GatewayDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)] = None,
) -> SalesInvoice:
    submitted = await _submit(gateway, client_nip(nip), request, principal, idempotency_key, None, invoice_id)
    return _answer(submitted, response, f"/clients/{nip}/sales/{submitted.row.id}", gateway)


class Released(BaseModel):
    released: int = Field(description="Held invoices moved to the sending queue")


@router.post(
    "/clients/{nip}/sales/{invoice_id}/send",
    response_model=Released,
    summary="Send a held invoice now (the auto-send rules held it)",
)
async def send_held(nip: str, invoice_id: uuid.UUID, principal: Sender, gateway: GatewayDep) -> Released:
    client = client_nip(nip)
    try:
        row, _ = await gateway.sales.get(client, invoice_id)
    except SubmissionError as exc:
        raise _problem(exc) from None
    if row.status != SalesStatus.HELD.value:
        raise Problem(409, "Conflict", f"The invoice is {row.status}, not held.", code="not-held")
    return Released(released=await gateway.sales.release(client, [invoice_id], by=actor_of(principal), why="by_hand"))


@router.post(
    "/clients/{nip}/sales-backfill",
    response_model=Released,
    summary="Send every held invoice issued in a month (what the monthly backfill does on its day)",
)
async def backfill(
    nip: str,
    principal: Sender,
    gateway: GatewayDep,
    month: Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM of the issue dates")],
) -> Released:
    client = client_nip(nip)
    first, last = backfill_window(int(month[:4]), int(month[5:]))
    ids = await gateway.sales.held(client, first, last)
    return Released(released=await gateway.sales.release(client, ids, by=actor_of(principal), why="backfill"))


class AutoSendView(BaseModel):
    rules: AutoSendRules
    updated_by: str | None
    updated_at: datetime | None
    last_backfill_month: str | None


def _rules_view(rules: AutoSendRules, stored: Row[Any] | None) -> AutoSendView:
    return AutoSendView(
        rules=rules,
        updated_by=stored.updated_by if stored else None,
        updated_at=stored.updated_at if stored else None,
        last_backfill_month=stored.last_backfill_month if stored else None,
    )


@router.get("/clients/{nip}/sales-auto-send", response_model=AutoSendView, summary="The client's auto-send rules")
async def auto_send_rules(nip: str, principal: KsefReader, gateway: GatewayDep) -> AutoSendView:
    rules, stored = await gateway.sales.rules(client_nip(nip))
    return _rules_view(rules, stored)


@router.put(
    "/clients/{nip}/sales-auto-send",
    response_model=AutoSendView,
    summary="Set the client's auto-send rules: number series to send or hold, B2C held, the monthly backfill day",
    openapi_extra=body_limit(64 * 1024),
)
async def set_auto_send_rules(
    nip: str, rules: AutoSendRules, principal: AutoSender, gateway: GatewayDep
) -> AutoSendView:
    stored = await gateway.sales.set_rules(client_nip(nip), rules, by=actor_of(principal))
    return _rules_view(AutoSendRules.model_validate(stored.rules), stored)


def _cursor(value: str | None) -> tuple[datetime, uuid.UUID] | None:
    if value is None:
        return None
    try:
        created, last = base64.urlsafe_b64decode(value.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(last)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(422, "Unprocessable Content", "The cursor is not one this API gave.", code="bad-cursor") from None


@router.get("/clients/{nip}/sales", response_model=SalesPage, summary="The client's sales invoices, newest first")
async def sales(
    nip: str,
    principal: KsefReader,
    gateway: GatewayDep,
    status: SalesStatus | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SalesPage:
    rows = await gateway.sales.page(
        client_nip(nip), status=status.value if status else None, after=_cursor(cursor), limit=limit
    )
    qr = _qr_base(gateway)
    last = rows[-1] if len(rows) == limit else None
    next_cursor = (
        base64.urlsafe_b64encode(f"{last.created_at.isoformat()}|{last.id}".encode()).decode() if last else None
    )
    return SalesPage(items=[_out(r, qr) for r in rows], next_cursor=next_cursor)


@router.get(
    "/clients/{nip}/sales/{invoice_id}",
    response_model=SalesInvoice,
    summary="One sales invoice: status, KSeF number, KSeF's codes and messages, and every state it went through",
)
async def sales_invoice(nip: str, invoice_id: uuid.UUID, principal: KsefReader, gateway: GatewayDep) -> SalesInvoice:
    try:
        row, events = await gateway.sales.get(client_nip(nip), invoice_id)
    except SubmissionError as exc:
        raise _problem(exc) from None
    history = [HistoryLine(at=e.at, status=e.status, detail=e.detail) for e in events]
    return _out(row, _qr_base(gateway), history)


@router.get(
    "/clients/{nip}/sales/{invoice_id}/kod-i.{image}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
    summary="KOD I as an image (PNG or SVG), captioned with the KSeF number or OFFLINE",
)
async def sales_kod_i(
    nip: str,
    invoice_id: uuid.UUID,
    image: Literal["png", "svg"],
    principal: KsefReader,
    gateway: GatewayDep,
) -> Response:
    try:
        row, _events = await gateway.sales.get(client_nip(nip), invoice_id)
    except SubmissionError as exc:
        raise _problem(exc) from None
    # The stored invoiceHash is the document's SHA-256: the XML itself need not be read again.
    code = kod_i_for_hash(_qr_base(gateway), row.seller_nip, row.issue_date, row.invoice_hash, row.ksef_number)
    return _image(code, image)


@router.get(
    "/clients/{nip}/sales/{invoice_id}/kod-ii.{image}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
    summary="KOD II of an offline invoice as an image (PNG or SVG), captioned CERTYFIKAT",
)
async def sales_kod_ii(
    nip: str,
    invoice_id: uuid.UUID,
    image: Literal["png", "svg"],
    principal: KsefReader,
    gateway: GatewayDep,
) -> Response:
    try:
        row, _events = await gateway.sales.get(client_nip(nip), invoice_id)
    except SubmissionError as exc:
        raise _problem(exc) from None
    if row.kod_ii_url is None:
        raise Problem(404, "Not Found", "KOD II is only for invoices issued offline.", code="no-kod-ii")
    return _image(QrCode(url=row.kod_ii_url, caption=CAPTION_CERTIFICATE), image)


def _image(code: QrCode, image: str) -> Response:
    if image == "png":
        return Response(code.png(scale=6), media_type="image/png")
    return Response(code.svg(), media_type="image/svg+xml")


@router.get(
    "/clients/{nip}/sales/{invoice_id}/{document}",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
    summary="The invoice's XML as submitted (xml) or KSeF's UPO (upo)",
)
async def sales_document(
    nip: str,
    invoice_id: uuid.UUID,
    document: Literal["xml", "upo"],
    principal: KsefReader,
    gateway: GatewayDep,
) -> Response:
    try:
        row, content = await gateway.sales.document(client_nip(nip), invoice_id, document)
    except SubmissionError as exc:
        raise _problem(exc) from None
    name = f"{row.ksef_number or row.id}{'-upo' if document == 'upo' else ''}.xml"
    return Response(
        content, media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
