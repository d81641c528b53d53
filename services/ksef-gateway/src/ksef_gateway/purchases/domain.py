"""The header of a structured invoice (FA(3), and FA(2) still found in older purchase ledgers): who, when, how much.

Only what the purchase buffer and the ``invoice.fetched`` event need; the raw XML stays the document of record.
The parser is hardened (REFERENCE.md §19, ARCHITECTURE.md "XML input is parsed without entities or network
access and with size limits"): no DTD is loaded, a document carrying one is refused outright, entities are never
expanded, nothing is fetched from the network, and the size is capped before parsing.

Amounts are in the invoice currency (``KodWaluty``): net is the sum of every ``P_13_x`` (all rates, exempt and
out-of-scope included), VAT the sum of ``P_14_1`` … ``P_14_5``, gross ``P_15``. For foreign-currency invoices the
VAT converted to PLN is given per rate in ``P_14_xW``; KSeF's own metadata reports ``vatAmount`` in PLN, so that
sum is kept too (``vat_amount_pln``).
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final

from lxml import etree

FA3_NAMESPACE: Final = "http://crd.gov.pl/wzor/2025/06/25/13775/"
FA2_NAMESPACE: Final = "http://crd.gov.pl/wzor/2023/06/29/12648/"
NAMESPACES: Final = {FA3_NAMESPACE: "FA (3)", FA2_NAMESPACE: "FA (2)"}

# KSeF accepts at most 1 MB per invoice, 3 MB with attachments (REFERENCE.md §8); 10 MiB leaves room for the future
# without letting a hostile document through.
MAX_INVOICE_BYTES: Final = 10 * 1024 * 1024

INVOICE_TYPES: Final = frozenset({"VAT", "KOR", "ZAL", "ROZ", "UPR", "KOR_ZAL", "KOR_ROZ"})

_NET_FIELD = re.compile(r"^P_13_(\d+|6_\d)$")
_VAT_FIELD = re.compile(r"^P_14_(\d)$")
_VAT_PLN_FIELD = re.compile(r"^P_14_(\d)W$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class InvoiceParseError(ValueError):
    """The document is not an FA(2)/FA(3) invoice we can read; the message says what is wrong and where."""


@dataclass(frozen=True)
class PartyIdentifier:
    """As KSeF's metadata names it: ``Nip``, ``InternalId`` (IDWew), ``VatUe``, ``Other`` (NrID) or ``None``."""

    type: str
    value: str | None = None


@dataclass(frozen=True)
class ThirdSubject:
    identifier: PartyIdentifier
    name: str | None
    role: int | None  # Rola 1-11
    other_role: str | None = None  # OpisRoli when RolaInna=1


@dataclass(frozen=True)
class AuthorizedSubject:
    nip: str
    name: str | None
    role: int | None  # RolaPU 1-3


@dataclass(frozen=True)
class CorrectedInvoice:
    """One ``DaneFaKorygowanej`` entry: the invoice being corrected (its KSeF number when it had one)."""

    invoice_number: str
    issue_date: date | None
    ksef_number: str | None


@dataclass(frozen=True)
class InvoiceHeader:
    form: str  # "FA (3)" or "FA (2)"
    issue_date: date  # P_1
    invoice_number: str  # P_2
    seller_nip: str
    seller_name: str | None
    buyer: PartyIdentifier
    buyer_name: str | None
    third_subjects: tuple[ThirdSubject, ...]
    authorized_subject: AuthorizedSubject | None
    currency: str
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    vat_amount_pln: Decimal
    invoice_type: str  # RodzajFaktury
    corrected_invoices: tuple[CorrectedInvoice, ...]

    @property
    def corrected_ksef_number(self) -> str | None:
        return next((c.ksef_number for c in self.corrected_invoices if c.ksef_number), None)

    @property
    def corrected_invoice_number(self) -> str | None:
        return self.corrected_invoices[0].invoice_number if self.corrected_invoices else None


_parsers = threading.local()


def _parser() -> etree.XMLParser:
    """One hardened parser per thread (lxml parsers must not be shared between threads; building one per
    document was measurable when a window holds thousands of invoices)."""
    parser: etree.XMLParser | None = getattr(_parsers, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
        )
        _parsers.parser = parser
    return parser


@lru_cache(maxsize=256)
def _tags(namespace: str, path: str) -> tuple[str, ...]:
    """``"A/B"`` as the qualified tags of each step, computed once per (namespace, path)."""
    return tuple(f"{{{namespace}}}{part}" for part in path.split("/"))


class _Reader:
    """Element lookups in the document's own namespace, with errors that name the path."""

    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def q(self, name: str) -> str:
        return f"{{{self.ns}}}{name}"

    def find(self, parent: etree._Element, path: str) -> etree._Element | None:
        # Child steps by exact tag: ``Element.find`` would go through ElementPath for every call.
        node: etree._Element | None = parent
        for tag in _tags(self.ns, path):
            if node is None:
                return None
            node = next(node.iterchildren(tag), None)
        return node

    def text(self, parent: etree._Element, path: str) -> str | None:
        node = self.find(parent, path)
        if node is None or node.text is None:
            return None
        value = node.text.strip()
        return value or None

    def required(self, parent: etree._Element, path: str, where: str) -> str:
        value = self.text(parent, path)
        if value is None:
            raise InvoiceParseError(f"{where}/{path} is missing or empty")
        return value


def _decimal(value: str, where: str) -> Decimal:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvoiceParseError(f"{where} is not a number: {value[:40]!r}") from None
    if not amount.is_finite():
        raise InvoiceParseError(f"{where} is not a finite number")
    return amount


def _date(value: str, where: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvoiceParseError(f"{where} is not a date (YYYY-MM-DD): {value[:40]!r}") from None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _identifier(r: _Reader, data: etree._Element, *, internal_id: bool) -> PartyIdentifier:
    """``DaneIdentyfikacyjne``: NIP | (Podmiot3 only) IDWew | KodUE+NrVatUE | KodKraju?+NrID | BrakID."""
    nip = r.text(data, "NIP")
    if nip is not None:
        return PartyIdentifier("Nip", nip)
    if internal_id:
        internal = r.text(data, "IDWew")
        if internal is not None:
            return PartyIdentifier("InternalId", internal)
    vat_ue = r.text(data, "NrVatUE")
    if vat_ue is not None:
        return PartyIdentifier("VatUe", f"{r.text(data, 'KodUE') or ''}{vat_ue}")
    other = r.text(data, "NrID")
    if other is not None:
        country = r.text(data, "KodKraju")
        return PartyIdentifier("Other", f"{country}{other}" if country else other)
    return PartyIdentifier("None")


def parse_invoice_header(xml: bytes, *, max_bytes: int = MAX_INVOICE_BYTES) -> InvoiceHeader:
    """Read the header of one FA(2)/FA(3) invoice; ``InvoiceParseError`` for anything else or anything broken."""
    if len(xml) > max_bytes:
        raise InvoiceParseError(f"the document has {len(xml)} bytes, more than the {max_bytes} allowed")
    try:
        root = etree.fromstring(xml, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise InvoiceParseError(f"not well-formed XML: {exc.msg}") from None
    # A DOCTYPE has no business in an invoice (the XSDs declare none); refusing it closes off entity tricks even
    # though the parser would not expand them.
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise InvoiceParseError("the document declares a DOCTYPE, which invoices never do")

    qname = etree.QName(root)
    if qname.localname != "Faktura" or qname.namespace not in NAMESPACES:
        raise InvoiceParseError(
            f"the root element is {{{qname.namespace}}}{qname.localname}, not Faktura in the FA(2) or FA(3) namespace"
        )
    r = _Reader(qname.namespace)
    form = NAMESPACES[qname.namespace]

    seller_data = r.find(root, "Podmiot1/DaneIdentyfikacyjne")
    if seller_data is None:
        raise InvoiceParseError("Faktura/Podmiot1/DaneIdentyfikacyjne is missing")
    seller_nip = r.required(seller_data, "NIP", "Podmiot1/DaneIdentyfikacyjne")

    buyer_data = r.find(root, "Podmiot2/DaneIdentyfikacyjne")
    if buyer_data is None:
        raise InvoiceParseError("Faktura/Podmiot2/DaneIdentyfikacyjne is missing")

    third_subjects = []
    for node in root.findall(r.q("Podmiot3")):
        data = r.find(node, "DaneIdentyfikacyjne")
        if data is None:
            raise InvoiceParseError("Faktura/Podmiot3/DaneIdentyfikacyjne is missing")
        other = r.text(node, "RolaInna") == "1"
        third_subjects.append(
            ThirdSubject(
                identifier=_identifier(r, data, internal_id=True),
                name=r.text(data, "Nazwa"),
                role=None if other else _int(r.text(node, "Rola")),
                other_role=r.text(node, "OpisRoli") if other else None,
            )
        )

    authorized: AuthorizedSubject | None = None
    authorized_node = r.find(root, "PodmiotUpowazniony")
    if authorized_node is not None:
        data = r.find(authorized_node, "DaneIdentyfikacyjne")
        nip = r.text(data, "NIP") if data is not None else None
        if data is None or nip is None:
            raise InvoiceParseError("Faktura/PodmiotUpowazniony/DaneIdentyfikacyjne/NIP is missing")
        authorized = AuthorizedSubject(nip, r.text(data, "Nazwa"), _int(r.text(authorized_node, "RolaPU")))

    fa = r.find(root, "Fa")
    if fa is None:
        raise InvoiceParseError("Faktura/Fa is missing")
    currency = r.required(fa, "KodWaluty", "Fa")
    if not _CURRENCY.match(currency):
        raise InvoiceParseError(f"Fa/KodWaluty is not an ISO 4217 code: {currency[:10]!r}")
    invoice_type = r.required(fa, "RodzajFaktury", "Fa")
    if invoice_type not in INVOICE_TYPES:
        raise InvoiceParseError(f"Fa/RodzajFaktury {invoice_type[:20]!r} is not one of {sorted(INVOICE_TYPES)}")

    net = Decimal("0")
    vat_by_rate: dict[str, Decimal] = {}
    pln_by_rate: dict[str, Decimal] = {}
    for child in fa:
        if not isinstance(child.tag, str) or child.text is None:
            continue
        name = child.tag.rpartition("}")[2]
        if _NET_FIELD.match(name):
            net += _decimal(child.text.strip(), f"Fa/{name}")
        elif match := _VAT_FIELD.match(name):
            vat_by_rate[match.group(1)] = _decimal(child.text.strip(), f"Fa/{name}")
        elif match := _VAT_PLN_FIELD.match(name):
            pln_by_rate[match.group(1)] = _decimal(child.text.strip(), f"Fa/{name}")
    vat = sum(vat_by_rate.values(), Decimal("0"))
    # P_14_xW is given per rate for a foreign currency; a rate without it (e.g. P_14_5, OSS) has no PLN figure.
    vat_pln_given = vat if currency == "PLN" else sum(pln_by_rate.values(), Decimal("0"))

    corrected = []
    for node in fa.findall(r.q("DaneFaKorygowanej")):
        raw_date = r.text(node, "DataWystFaKorygowanej")
        corrected.append(
            CorrectedInvoice(
                invoice_number=r.required(node, "NrFaKorygowanej", "Fa/DaneFaKorygowanej"),
                issue_date=_date(raw_date, "Fa/DaneFaKorygowanej/DataWystFaKorygowanej") if raw_date else None,
                ksef_number=r.text(node, "NrKSeFFaKorygowanej"),
            )
        )

    invoice_number = r.required(fa, "P_2", "Fa")
    if len(invoice_number) > 256:
        raise InvoiceParseError("Fa/P_2 is longer than 256 characters")
    return InvoiceHeader(
        form=form,
        issue_date=_date(r.required(fa, "P_1", "Fa"), "Fa/P_1"),
        invoice_number=invoice_number,
        seller_nip=seller_nip,
        seller_name=r.text(seller_data, "Nazwa"),
        buyer=_identifier(r, buyer_data, internal_id=False),
        buyer_name=r.text(buyer_data, "Nazwa"),
        third_subjects=tuple(third_subjects),
        authorized_subject=authorized,
        currency=currency,
        net_amount=net,
        vat_amount=vat,
        gross_amount=_decimal(r.required(fa, "P_15", "Fa"), "Fa/P_15"),
        vat_amount_pln=vat_pln_given,
        invoice_type=invoice_type,
        corrected_invoices=tuple(corrected),
    )


# --- what the gateway keeps of an invoice -------------------------------------------------------------------------


def xml_ref(nip: str, ksef_number: str) -> str:
    """Where an authorised caller gets the raw XML (relative to the gateway's base URL)."""
    return f"/clients/{nip}/invoices/{ksef_number}/xml"


def _party_json(identifier_type: str, value: str | None, name: str | None) -> dict[str, Any]:
    return {"identifier": {"type": identifier_type, "value": value}, "name": name}


def invoice_row(
    *,
    nip: str,
    ksef_number: str,
    subject_type: str,
    header: InvoiceHeader,
    xml: bytes,
    invoice_hash: str,
    acquisition_date: datetime,
    permanent_storage_date: datetime | None,
    invoicing_date: datetime | None,
    fetched_at: datetime,
    fetched_via: str,
    event_id: uuid.UUID,
) -> dict[str, Any]:
    return {
        "client_nip": nip,
        "ksef_number": ksef_number,
        "subject_type": subject_type,
        "form": header.form,
        "invoice_number": header.invoice_number,
        "issue_date": header.issue_date,
        "seller_nip": header.seller_nip,
        "seller_name": header.seller_name,
        "buyer_identifier_type": header.buyer.type,
        "buyer_identifier": header.buyer.value,
        "buyer_name": header.buyer_name,
        "third_subjects": [
            {**_party_json(t.identifier.type, t.identifier.value, t.name), "role": t.role, "other_role": t.other_role}
            for t in header.third_subjects
        ],
        "currency": header.currency,
        "net_amount": header.net_amount,
        "vat_amount": header.vat_amount,
        "gross_amount": header.gross_amount,
        "vat_amount_pln": header.vat_amount_pln,
        "invoice_type": header.invoice_type,
        "corrected_ksef_number": header.corrected_ksef_number,
        "corrected_invoice_number": header.corrected_invoice_number,
        "corrected_invoices": [
            {
                "invoice_number": c.invoice_number,
                "issue_date": c.issue_date.isoformat() if c.issue_date else None,
                "ksef_number": c.ksef_number,
            }
            for c in header.corrected_invoices
        ],
        "invoice_hash": invoice_hash,
        "xml": xml,
        "xml_size": len(xml),
        "acquisition_date": acquisition_date,
        "permanent_storage_date": permanent_storage_date,
        "invoicing_date": invoicing_date,
        "fetched_at": fetched_at,
        "fetched_via": fetched_via,
        "event_id": event_id,
    }
