"""Rules of the documents without I/O: the hash check, the preview read from the FA(3) XML, the ERP bundle.

The XML stays with the gateway, the owner of everything KSeF hands over (ARCHITECTURE.md): the buffer keeps its
reference and KSeF's SHA-256, and checks every copy it is given against that hash before showing or bundling it,
so a document can never be swapped between the fetch and the ERP.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lxml import etree
from lxml.html import builder as h
from lxml.html import tostring

# KSeF refuses invoices above 1 MB without attachments and 3 MB with them (REFERENCE.md §8); a copy larger than
# that is not an invoice and is not read.
MAX_XML_BYTES = 3 * 1024 * 1024
# One bundle per request; a larger month is bundled in parts (by period and ``include_imported``).
MAX_BUNDLE = 2000

Language = Literal["pl", "en"]


class DocumentError(Exception):
    def __init__(self, code: str, message: str, *, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def sha256_b64(data: bytes) -> str:
    """KSeF's ``invoiceHash``: the SHA-256 of the document's bytes, base64."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def check_copy(xml: bytes, invoice_hash: str) -> None:
    if len(xml) > MAX_XML_BYTES:
        raise DocumentError("document-too-large", "The invoice's XML is larger than KSeF allows.", status=502)
    if sha256_b64(xml) != invoice_hash:
        raise DocumentError(
            "document-mismatch",
            "The invoice's XML does not match the SHA-256 KSeF gave for it; it is not served.",
            status=502,
        )


# --- preview ---------------------------------------------------------------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@dataclass(frozen=True)
class Line:
    number: str
    name: str
    unit: str
    quantity: str
    unit_net_price: str
    net: str
    rate: str


@dataclass(frozen=True)
class Party:
    nip: str | None
    name: str | None
    address: tuple[str, ...] = ()


@dataclass(frozen=True)
class InvoicePreview:
    number: str
    issue_date: str
    invoice_type: str
    currency: str
    seller: Party
    buyer: Party
    lines: tuple[Line, ...]
    net_by_rate: tuple[tuple[str, str, str], ...]  # (rate label, net, VAT)
    gross: str
    notes: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def _text(node: Any, path: str) -> str:
    found = node.xpath(f"string({path})")
    return str(found).strip()


def _party(root: Any, name: str) -> Party:
    node = root.xpath(f"*[local-name()='{name}']")
    if not node:
        return Party(None, None)
    party = node[0]
    ident = "*[local-name()='DaneIdentyfikacyjne']"
    address = tuple(
        t for t in (_text(party, f"*[local-name()='Adres']/*[local-name()='{n}']") for n in ("AdresL1", "AdresL2")) if t
    )
    return Party(
        _text(party, f"{ident}/*[local-name()='NIP']") or None,
        _text(party, f"{ident}/*[local-name()='Nazwa']") or None,
        address,
    )


# P_13_x (net) and P_14_x (VAT) per rate group of FA(3).
_RATE_GROUPS = (
    ("1", "23% / 22%"),
    ("2", "8% / 7%"),
    ("3", "5%"),
    ("4", "4% (taxi)"),
    ("5", "OSS"),
    ("6_1", "0% (kraj)"),
    ("6_2", "0% WDT"),
    ("6_3", "0% eksport"),
    ("7", "zw"),
    ("8", "np"),
    ("9", "np art. 100"),
    ("10", "odwrotne obciążenie"),
    ("11", "marża"),
)


def read_preview(xml: bytes) -> InvoicePreview:
    """What a person needs to recognise and check the invoice, read from FA(2) or FA(3) (namespace-agnostic)."""
    try:
        root: Any = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise DocumentError("document-unreadable", f"The invoice's XML cannot be read: {exc}.", status=502) from None
    fa = root.xpath("*[local-name()='Fa']")
    if not fa:
        raise DocumentError("document-unreadable", "The XML has no Fa element: not an FA invoice.", status=502)
    invoice: Any = fa[0]
    lines = tuple(
        Line(
            number=_text(w, "*[local-name()='NrWierszaFa']"),
            name=_text(w, "*[local-name()='P_7']"),
            unit=_text(w, "*[local-name()='P_8A']"),
            quantity=_text(w, "*[local-name()='P_8B']"),
            unit_net_price=_text(w, "*[local-name()='P_9A']"),
            net=_text(w, "*[local-name()='P_11']"),
            rate=_text(w, "*[local-name()='P_12']"),
        )
        for w in invoice.xpath("*[local-name()='FaWiersz']")
    )
    by_rate = tuple(
        (label, net, _text(invoice, f"*[local-name()='P_14_{group}']"))
        for group, label in _RATE_GROUPS
        if (net := _text(invoice, f"*[local-name()='P_13_{group}']"))
    )
    notes = tuple(
        (_text(d, "*[local-name()='Klucz']"), _text(d, "*[local-name()='Wartosc']"))
        for d in invoice.xpath("*[local-name()='DodatkowyOpis']")
    )
    return InvoicePreview(
        number=_text(invoice, "*[local-name()='P_2']"),
        issue_date=_text(invoice, "*[local-name()='P_1']"),
        invoice_type=_text(invoice, "*[local-name()='RodzajFaktury']"),
        currency=_text(invoice, "*[local-name()='KodWaluty']"),
        seller=_party(root, "Podmiot1"),
        buyer=_party(root, "Podmiot2"),
        lines=lines,
        net_by_rate=by_rate,
        gross=_text(invoice, "*[local-name()='P_15']"),
        notes=notes,
    )


_LABELS: dict[str, dict[Language, str]] = {
    "title": {"pl": "Podgląd faktury", "en": "Invoice preview"},
    "number": {"pl": "Numer faktury", "en": "Invoice number"},
    "issued": {"pl": "Data wystawienia", "en": "Issue date"},
    "type": {"pl": "Rodzaj", "en": "Type"},
    "ksef": {"pl": "Numer KSeF", "en": "KSeF number"},
    "seller": {"pl": "Sprzedawca", "en": "Seller"},
    "buyer": {"pl": "Nabywca", "en": "Buyer"},
    "lines": {"pl": "Pozycje", "en": "Lines"},
    "no": {"pl": "Lp.", "en": "No."},
    "name": {"pl": "Nazwa", "en": "Name"},
    "qty": {"pl": "Ilość", "en": "Quantity"},
    "unit": {"pl": "J.m.", "en": "Unit"},
    "price": {"pl": "Cena netto", "en": "Unit net price"},
    "net": {"pl": "Wartość netto", "en": "Net"},
    "rate": {"pl": "Stawka", "en": "Rate"},
    "vat": {"pl": "VAT", "en": "VAT"},
    "gross": {"pl": "Do zapłaty (brutto)", "en": "Gross total"},
    "summary": {"pl": "Podsumowanie według stawek", "en": "Totals by rate"},
    "notes": {"pl": "Dodatkowe informacje", "en": "Additional information"},
    "verified": {
        "pl": "Treść zgodna ze skrótem SHA-256 nadanym przez KSeF.",
        "en": "Content matches the SHA-256 KSeF gave for it.",
    },
}


def render_preview(preview: InvoicePreview, *, ksef_number: str, invoice_hash: str, language: Language) -> str:
    """A self-contained HTML page (lxml builds it, so every value from the invoice is escaped)."""

    def label(key: str) -> str:
        return _LABELS[key][language]

    def party(title: str, p: Party) -> Any:
        return h.DIV(
            h.H2(title),
            h.P(p.name or "—"),
            h.P(f"NIP {p.nip}") if p.nip else h.P("—"),
            *(h.P(a) for a in p.address),
            h.CLASS("party"),
        )

    rows = [
        h.TR(
            h.TD(ln.number),
            h.TD(ln.name),
            h.TD(ln.quantity),
            h.TD(ln.unit),
            h.TD(ln.unit_net_price),
            h.TD(ln.net),
            h.TD(ln.rate),
        )
        for ln in preview.lines
    ]
    page = h.HTML(
        h.HEAD(
            h.META(charset="utf-8"),
            h.TITLE(f"{label('title')} {preview.number}"),
            h.STYLE(
                "body{font-family:Arial,Helvetica,sans-serif;color:#1f2933;max-width:900px;margin:0 auto;padding:16px}"
                "table{border-collapse:collapse;width:100%}th,td{border:1px solid #cbd2d9;padding:4px 6px;"
                "text-align:left}.parties{display:flex;gap:32px}.note{color:#616e7c;font-size:12px}"
            ),
        ),
        h.BODY(
            h.H1(f"{label('title')}: {preview.number}"),
            h.TABLE(
                h.TR(h.TH(label("ksef")), h.TD(ksef_number)),
                h.TR(h.TH(label("number")), h.TD(preview.number)),
                h.TR(h.TH(label("issued")), h.TD(preview.issue_date)),
                h.TR(h.TH(label("type")), h.TD(preview.invoice_type)),
            ),
            h.DIV(party(label("seller"), preview.seller), party(label("buyer"), preview.buyer), h.CLASS("parties")),
            h.H2(label("lines")),
            h.TABLE(
                h.TR(*(h.TH(label(k)) for k in ("no", "name", "qty", "unit", "price", "net", "rate"))),
                *rows,
            ),
            h.H2(label("summary")),
            h.TABLE(
                h.TR(h.TH(label("rate")), h.TH(label("net")), h.TH(label("vat"))),
                *(h.TR(h.TD(r), h.TD(n), h.TD(v)) for r, n, v in preview.net_by_rate),
                h.TR(h.TH(label("gross")), h.TD(f"{preview.gross} {preview.currency}"), h.TD("")),
            ),
            *((h.H2(label("notes")), h.UL(*(h.LI(f"{k}: {v}") for k, v in preview.notes))) if preview.notes else ()),
            h.P(f"{label('verified')} ({invoice_hash})", h.CLASS("note")),
        ),
        lang=language,
    )
    return "<!DOCTYPE html>\n" + str(tostring(page, encoding="unicode"))


# --- the ERP bundle --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundledInvoice:
    ksef_number: str
    invoice_number: str
    issue_date: str
    seller_nip: str | None
    seller_name: str | None
    currency: str
    net_amount: str
    vat_amount: str
    gross_amount: str
    invoice_type: str
    decision: str
    description: str | None
    invoice_hash: str
    xml: bytes

    @property
    def file_name(self) -> str:
        return f"faktury/{self.ksef_number}.xml"


MANIFEST_FIELDS = (
    "ksef_number",
    "invoice_number",
    "issue_date",
    "seller_nip",
    "seller_name",
    "currency",
    "net_amount",
    "vat_amount",
    "gross_amount",
    "invoice_type",
    "decision",
    "description",
    "sha256",
    "file",
)


def build_bundle(
    client_nip: str, period: str | None, invoices: Sequence[BundledInvoice], *, generated_at: datetime
) -> bytes:
    """A ZIP with one FA XML per invoice (byte for byte as KSeF stored it) and the manifest twice: JSON for
    integrators, CSV (semicolons, UTF-8 with BOM, as Polish desktop software reads it) for people and ERPs."""
    entries = [
        {
            "ksef_number": i.ksef_number,
            "invoice_number": i.invoice_number,
            "issue_date": i.issue_date,
            "seller_nip": i.seller_nip,
            "seller_name": i.seller_name,
            "currency": i.currency,
            "net_amount": i.net_amount,
            "vat_amount": i.vat_amount,
            "gross_amount": i.gross_amount,
            "invoice_type": i.invoice_type,
            "decision": i.decision,
            "description": i.description,
            "sha256": i.invoice_hash,
            "file": i.file_name,
        }
        for i in invoices
    ]
    manifest = {
        "format": "ksef-hub-bundle/1",
        "client_nip": client_nip,
        "period": period,
        "generated_at": generated_at.isoformat(),
        "count": len(entries),
        "hash_algorithm": "SHA-256, base64 (KSeF invoiceHash) of the file's bytes",
        "invoices": entries,
    }
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=MANIFEST_FIELDS, delimiter=";", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in e.items()} for e in entries)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
        archive.writestr("manifest.csv", "\ufeff" + table.getvalue())
        for invoice in invoices:
            archive.writestr(invoice.file_name, invoice.xml)
    return buffer.getvalue()
