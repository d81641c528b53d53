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
from platform_common.auth import Principal, require
from platform_common.limits import body_limit
from platform_common.problems import Problem

router = APIRouter(tags=["sales-invoices"])

Sender = Annotated[Principal, Depends(require("ksef.send", client_nip_param="nip"))]
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
        submitted_by=row.submitted_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
    )


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
    client = client_nip(nip)
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
        submitted = await gateway.sales.submit(
            client,
            xml,
            source=source,
            content_type=content_type,
            body=body,
            idempotency_key=idempotency_key,
            submitted_by=actor_of(principal),
            offline=OfflineMode(offline) if offline else None,
        )
    except SubmissionError as exc:
        raise _problem(exc) from None
    if submitted.replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"{request.url.path}/{submitted.row.id}"
    return _out(submitted.row, _qr_base(gateway))


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
