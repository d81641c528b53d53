"""Fetched purchase invoices of a client: paged metadata, one invoice's metadata, and its raw XML.

Served from our database, never live from KSeF (ARCHITECTURE.md: screens never spend KSeF's budget). Reading
needs ``ksef.read``, the closest permission auth-svc has for a client's KSeF data. The XML is returned byte for
byte as KSeF stored it, with its base64 SHA-256 (KSeF's ``invoiceHash``) in ``X-KSeF-Invoice-Hash`` so a caller
can verify it, and as the ``ETag``.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from ksef_gateway.deps import GatewayDep, KsefReader, client_nip
from ksef_gateway.purchases.domain import xml_ref
from ksef_gateway.purchases.repository import StoredInvoice
from ksef_gateway.purchases.service import UnknownClient
from ksef_gateway.wiring import Gateway
from platform_common.auth import not_found
from platform_common.auth.dependencies import internal
from platform_common.contracts.invoices import KSEF_NUMBER_PATTERN
from platform_common.problems import Problem

router = APIRouter(tags=["purchase-invoices"])

HASH_HEADER = "X-KSeF-Invoice-Hash"


class Party(BaseModel):
    identifier_type: str = Field(description="Nip, VatUe, Other (a foreign id), None, or InternalId (Podmiot3).")
    identifier: str | None
    name: str | None


class InvoiceMetadata(BaseModel):
    ksef_number: str
    subject_type: str = Field(description="The client's role: Subject2 (buyer), Subject3, SubjectAuthorized.")
    form: str
    invoice_number: str = Field(description="P_2")
    issue_date: date = Field(description="P_1")
    invoice_type: str = Field(description="RodzajFaktury: VAT, KOR, ZAL, ROZ, UPR, KOR_ZAL, KOR_ROZ")
    seller: Party
    buyer: Party
    third_subjects: list[dict[str, Any]]
    currency: str
    net_amount: Decimal = Field(description="Sum of P_13_x, in the invoice currency.")
    vat_amount: Decimal = Field(description="Sum of P_14_x, in the invoice currency.")
    gross_amount: Decimal = Field(description="P_15, in the invoice currency.")
    vat_amount_pln: Decimal
    corrected_ksef_number: str | None
    corrected_invoice_number: str | None
    corrected_invoices: list[dict[str, Any]]
    invoice_hash: str
    xml_size: int
    xml_ref: str
    acquisition_date: datetime = Field(description="KSeF-number assignment: the legal receipt date.")
    permanent_storage_date: datetime | None
    fetched_at: datetime
    fetched_via: str


def _metadata(invoice: StoredInvoice) -> InvoiceMetadata:
    return InvoiceMetadata(
        ksef_number=invoice.ksef_number,
        subject_type=invoice.subject_type,
        form=invoice.form,
        invoice_number=invoice.invoice_number,
        issue_date=invoice.issue_date,
        invoice_type=invoice.invoice_type,
        seller=Party(identifier_type="Nip", identifier=invoice.seller_nip, name=invoice.seller_name),
        buyer=Party(
            identifier_type=invoice.buyer_identifier_type,
            identifier=invoice.buyer_identifier,
            name=invoice.buyer_name,
        ),
        third_subjects=invoice.third_subjects,
        currency=invoice.currency,
        net_amount=invoice.net_amount,
        vat_amount=invoice.vat_amount,
        gross_amount=invoice.gross_amount,
        vat_amount_pln=invoice.vat_amount_pln,
        corrected_ksef_number=invoice.corrected_ksef_number,
        corrected_invoice_number=invoice.corrected_invoice_number,
        corrected_invoices=invoice.corrected_invoices,
        invoice_hash=invoice.invoice_hash,
        xml_size=invoice.xml_size,
        xml_ref=xml_ref(invoice.client_nip, invoice.ksef_number),
        acquisition_date=invoice.acquisition_date,
        permanent_storage_date=invoice.permanent_storage_date,
        fetched_at=invoice.fetched_at,
        fetched_via=invoice.fetched_via,
    )


class InvoicePage(BaseModel):
    items: list[InvoiceMetadata]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; none on the last page.")


def _cursor(invoice: StoredInvoice) -> str:
    raw = f"{invoice.acquisition_date.isoformat()}|{invoice.ksef_number}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, number = raw.split("|", 1)
        return datetime.fromisoformat(at), number
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(
            422, "Invalid cursor", "The cursor is not one this API returned.", code="invalid-cursor"
        ) from None


def _ksef_number(value: str) -> str:
    if not re.fullmatch(KSEF_NUMBER_PATTERN, value):
        raise not_found()
    return value


@router.get(
    "/clients/{nip}/invoices",
    response_model=InvoicePage,
    summary="Fetched purchase invoices in acquisition (receipt) order, paged",
)
async def list_invoices(
    nip: str,
    principal: KsefReader,
    gw: GatewayDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    acquired_from: Annotated[datetime | None, Query(description="Receipt date from (inclusive).")] = None,
    acquired_to: Annotated[datetime | None, Query(description="Receipt date to (exclusive).")] = None,
) -> InvoicePage:
    nip = client_nip(nip)
    for name, value in (("acquired_from", acquired_from), ("acquired_to", acquired_to)):
        if value is not None and value.tzinfo is None:
            raise Problem(422, "Invalid date", f"{name} needs a UTC offset.", code="invalid-date")
    try:
        page = await gw.invoices.page(
            nip, limit=limit, after=_after(cursor), acquired_from=acquired_from, acquired_to=acquired_to
        )
    except UnknownClient:
        raise not_found() from None
    return InvoicePage(
        items=[_metadata(i) for i in page.items],
        next_cursor=_cursor(page.items[-1]) if page.has_more else None,
    )


@router.get(
    "/clients/{nip}/invoices/{ksef_number}",
    response_model=InvoiceMetadata,
    summary="One fetched purchase invoice's metadata",
)
async def get_invoice(nip: str, ksef_number: str, principal: KsefReader, gw: GatewayDep) -> InvoiceMetadata:
    nip, ksef_number = client_nip(nip), _ksef_number(ksef_number)
    invoice = await gw.invoices.one(nip, ksef_number)
    if invoice is None:
        raise not_found()
    return _metadata(invoice)


@router.get(
    "/clients/{nip}/invoices/{ksef_number}/xml",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "The invoice XML exactly as KSeF stored it"}},
    summary="The raw invoice XML, with its SHA-256 in X-KSeF-Invoice-Hash",
)
async def get_invoice_xml(nip: str, ksef_number: str, principal: KsefReader, gw: GatewayDep) -> Response:
    return await _xml(nip, ksef_number, gw)


@router.get(
    "/internal/clients/{nip}/invoices/{ksef_number}/xml",
    response_class=Response,
    dependencies=[Depends(internal())],
    responses={200: {"content": {"application/xml": {}}, "description": "The invoice XML exactly as KSeF stored it"}},
    summary="The raw invoice XML for another platform service (buffer-svc's preview and ERP bundle)",
)
async def get_invoice_xml_internal(nip: str, ksef_number: str, gw: GatewayDep) -> Response:
    # A service token, not a user's: the calling service has authorised its own caller against the live relation
    # state already (buffer-svc's gate) and records the read in the client's access ledger.
    return await _xml(nip, ksef_number, gw)


async def _xml(nip: str, ksef_number: str, gw: Gateway) -> Response:
    nip, ksef_number = client_nip(nip), _ksef_number(ksef_number)
    found = await gw.invoices.xml(nip, ksef_number)
    if found is None:
        raise not_found()
    xml, invoice_hash = found
    return Response(
        content=xml,
        media_type="application/xml",
        headers={HASH_HEADER: invoice_hash, "ETag": f'"{invoice_hash}"'},
    )
