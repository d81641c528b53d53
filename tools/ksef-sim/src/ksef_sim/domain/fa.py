"""The structured invoice forms FA(2) and FA(3): XSD validation and the metadata KSeF derives from an invoice
(REFERENCE.md §8, §19).

Validation runs offline: the FA schemas import their base types from ``crd.gov.pl``; a resolver maps those URLs
to the copies shipped in ``ksef_sim/schemas`` (the same mapping ``schemas/catalog.xml`` states for libxml2 tools).
KSeF validates with .NET's ``XmlSchemaSet``, so the commonest libxml2 messages are rewritten into the wording
clients see in 450 details (e.g. ksef-api #281: "The element 'Adnotacje' in namespace '…' has invalid child
element …").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, cast

from lxml import etree

from ksef_sim.records import AuthorizedSubject, FormCode, PartyIdentifier, ThirdSubject

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
BASE_TYPES_URL = "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/"

FA2_NAMESPACE = "http://crd.gov.pl/wzor/2023/06/29/12648/"
FA3_NAMESPACE = "http://crd.gov.pl/wzor/2025/06/25/13775/"


@dataclass(frozen=True)
class InvoiceForm:
    """A form KSeF accepts in sessions: its ``formCode`` triple, XML namespace and XSD."""

    system_code: str
    schema_version: str
    value: str
    namespace: str
    xsd: str  # path under SCHEMA_DIR
    structure_name: str  # UPO ``NazwaStrukturyLogicznej``

    @property
    def form_code(self) -> FormCode:
        return FormCode(systemCode=self.system_code, schemaVersion=self.schema_version, value=self.value)


FA2 = InvoiceForm("FA (2)", "1-0E", "FA", FA2_NAMESPACE, "fa2/schemat_FA(2)_v1-0E.xsd", "Schemat_FA(2)_v1-0E.xsd")
FA3 = InvoiceForm("FA (3)", "1-0E", "FA", FA3_NAMESPACE, "fa3/schemat_FA(3)_v1-0E.xsd", "Schemat_FA(3)_v1-0E.xsd")
FORMS: tuple[InvoiceForm, ...] = (FA3, FA2)


def find_form(system_code: str, schema_version: str, value: str) -> InvoiceForm | None:
    """The supported form with this ``formCode`` (PEF and FA_RR are not simulated), else ``None`` (21405)."""
    for form in FORMS:
        if (form.system_code, form.schema_version, form.value) == (system_code, schema_version, value):
            return form
    return None


class _LocalSchemas(etree.Resolver):
    """Serve the ``crd.gov.pl`` base-type imports from the bundled copies; never touch the network."""

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:  # type: ignore[override]
        if system_url and system_url.startswith(BASE_TYPES_URL):
            local = SCHEMA_DIR / "fa3" / "bazowe" / system_url[len(BASE_TYPES_URL) :]
            if local.is_file():
                return self.resolve_filename(str(local), context)  # type: ignore[attr-defined]
        return None


@cache
def load_schema(relative_path: str) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    parser.resolvers.add(_LocalSchemas())
    document = etree.parse(str(SCHEMA_DIR / relative_path), parser)
    return etree.XMLSchema(document)


def secure_parser() -> etree.XMLParser:
    # No entity expansion, no DTD loading, no network: invoices are untrusted input.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False
    )


class InvalidXml(Exception):
    """Not well-formed XML."""


def parse_xml(content: bytes) -> etree._Element:
    try:
        return etree.fromstring(content, secure_parser())
    except etree.XMLSyntaxError as exc:
        raise InvalidXml(str(exc)) from exc


_QNAME = re.compile(r"\{([^}]*)\}([\w.\-]+)")


def _dotnet_names(names: str) -> str:
    """``{ns}A, {ns}B`` → ``'A' in namespace 'ns', 'B' in namespace 'ns'`` (.NET wording)."""
    parts = []
    for match in _QNAME.finditer(names):
        parts.append(f"'{match.group(2)}' in namespace '{match.group(1)}'")
    return ", ".join(parts) if parts else names.strip()


def _parent_of(path: str | None, root: etree._Element) -> tuple[str, str] | None:
    if not path:
        return None
    try:
        found = root.getroottree().xpath(path)
    except etree.XPathError:
        return None
    if not isinstance(found, list) or not found or not isinstance(found[0], etree._Element):
        return None
    parent = found[0].getparent()
    if parent is None:
        return None
    qname = etree.QName(parent)
    return qname.localname, qname.namespace or ""


def _translate(entry: Any, root: etree._Element) -> str:
    """libxml2 → .NET ``XmlSchemaValidationException`` wording for the cases clients meet most often."""
    message: str = entry.message
    element = re.match(r"Element '\{([^}]*)\}([\w.\-]+)'(?:, attribute '([\w.\-]+)')?: (.*)", message, re.S)
    if not element:
        return message
    namespace, local, attribute, rest = element.groups()
    if "This element is not expected." in rest:
        parent = _parent_of(entry.path, root)
        expected = re.search(r"Expected is(?: one of)? \((.*)\)", rest)
        where = f"The element '{parent[0]}' in namespace '{parent[1]}'" if parent else "The element"
        text = f"{where} has invalid child element '{local}' in namespace '{namespace}'."
        if expected:
            text += f" List of possible elements expected: {_dotnet_names(expected.group(1))}."
        return text
    if "Missing child element(s)." in rest:
        expected = re.search(r"Expected is(?: one of)? \((.*)\)", rest)
        text = f"The element '{local}' in namespace '{namespace}' has incomplete content."
        if expected:
            text += f" List of possible elements expected: {_dotnet_names(expected.group(1))}."
        return text
    if attribute and "fixed value constraint" in rest:
        return f"The value of the '{attribute}' attribute does not equal its fixed value."
    if "fixed value constraint" in rest:
        return f"The value of the '{local}' element does not equal its fixed value."
    if attribute:
        return f"The '{attribute}' attribute is invalid - {rest.strip()}"
    return f"The '{namespace}:{local}' element is invalid - {rest.strip()}"


def validate(root: etree._Element, form: InvoiceForm) -> list[str]:
    """Validator messages (empty when the document is valid against ``form``'s XSD)."""
    schema = load_schema(form.xsd)
    if schema.validate(root.getroottree()):
        return []
    return [_translate(entry, root) for entry in cast(Iterable[Any], schema.error_log)]


def validate_bytes(content: bytes, form: InvoiceForm) -> list[str]:
    try:
        root = parse_xml(content)
    except InvalidXml as exc:
        return [f"Nieprawidłowy XML: {exc}"]
    return validate(root, form)


# RodzajFaktury → the API's invoiceType (spec InvoiceType enum).
INVOICE_TYPES = {
    "VAT": "Vat",
    "KOR": "Kor",
    "ZAL": "Zal",
    "ROZ": "Roz",
    "UPR": "Upr",
    "KOR_ZAL": "KorZal",
    "KOR_ROZ": "KorRoz",
}

_NET_FIELDS = (
    "P_13_1",
    "P_13_2",
    "P_13_3",
    "P_13_4",
    "P_13_5",
    "P_13_6_1",
    "P_13_6_2",
    "P_13_6_3",
    "P_13_7",
    "P_13_8",
    "P_13_9",
    "P_13_10",
    "P_13_11",
)
# P_14_xW is the VAT converted to PLN, present for foreign-currency invoices (metadata vatAmount is in PLN).
_VAT_FIELDS = (("P_14_1", "P_14_1W"), ("P_14_2", "P_14_2W"), ("P_14_3", "P_14_3W"), ("P_14_4", "P_14_4W"))


@dataclass
class InvoiceFacts:
    """What KSeF reads out of a valid invoice: the duplicate key, the metadata, the UPO fields."""

    seller_nip: str
    seller_name: str | None
    invoice_number: str  # P_2
    issue_date: date  # P_1
    rodzaj_faktury: str  # RodzajFaktury as written (VAT, KOR, …)
    invoice_type: str  # API form (Vat, Kor, …)
    currency: str
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    buyer_identifier: PartyIdentifier
    buyer_name: str | None = None
    third_subjects: list[ThirdSubject] = field(default_factory=list)
    authorized_subject: AuthorizedSubject | None = None
    is_self_invoicing: bool = False
    has_attachment: bool = False
    corrected_invoice_ksef_number: str | None = None


class _Reader:
    def __init__(self, root: etree._Element) -> None:
        self.ns = etree.QName(root).namespace or ""
        self.root = root

    def find(self, parent: etree._Element, path: str) -> etree._Element | None:
        qualified = "/".join(f"{{{self.ns}}}{part}" for part in path.split("/"))
        return parent.find(qualified)

    def findall(self, parent: etree._Element, name: str) -> list[etree._Element]:
        return list(parent.findall(f"{{{self.ns}}}{name}"))

    def text(self, parent: etree._Element | None, path: str) -> str | None:
        if parent is None:
            return None
        element = self.find(parent, path)
        if element is None or element.text is None:
            return None
        return element.text.strip()

    def decimal(self, parent: etree._Element | None, path: str) -> Decimal | None:
        raw = self.text(parent, path)
        if raw is None:
            return None
        try:
            return Decimal(raw)
        except InvalidOperation:
            return None


def _party(reader: _Reader, ids: etree._Element | None, *, internal_id: bool) -> PartyIdentifier:
    nip = reader.text(ids, "NIP")
    if nip:
        return PartyIdentifier(type="Nip", value=nip)
    if internal_id and (iid := reader.text(ids, "IDWew")):
        return PartyIdentifier(type="InternalId", value=iid)
    vat_no = reader.text(ids, "NrVatUE")
    if vat_no:
        return PartyIdentifier(type="VatUe", value=f"{reader.text(ids, 'KodUE') or ''}{vat_no}")
    other = reader.text(ids, "NrID")
    if other:
        return PartyIdentifier(type="Other", value=other)
    return PartyIdentifier(type="None")


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def extract_facts(root: etree._Element) -> InvoiceFacts:
    """Metadata of an invoice already valid against its XSD (so required elements are present)."""
    r = _Reader(root)
    seller = r.find(root, "Podmiot1/DaneIdentyfikacyjne")
    buyer = r.find(root, "Podmiot2/DaneIdentyfikacyjne")
    fa = r.find(root, "Fa")
    currency = r.text(fa, "KodWaluty") or "PLN"

    net = sum((r.decimal(fa, name) or Decimal(0) for name in _NET_FIELDS), Decimal(0))
    vat = Decimal(0)
    for base, in_pln in _VAT_FIELDS:
        converted = r.decimal(fa, in_pln) if currency != "PLN" else None
        vat += converted if converted is not None else (r.decimal(fa, base) or Decimal(0))
    vat += r.decimal(fa, "P_14_5") or Decimal(0)

    third_subjects = []
    for subject in r.findall(root, "Podmiot3"):
        ids = r.find(subject, "DaneIdentyfikacyjne")
        role = _int(r.text(subject, "Rola"))
        third_subjects.append(
            ThirdSubject(
                identifier=_party(r, ids, internal_id=True),
                name=r.text(ids, "Nazwa"),
                role=role if role is not None else 0,  # RolaInna
            )
        )

    authorized = None
    upowazniony = r.find(root, "PodmiotUpowazniony")
    if upowazniony is not None:
        ids = r.find(upowazniony, "DaneIdentyfikacyjne")
        nip = r.text(ids, "NIP")
        if nip:
            authorized = AuthorizedSubject(
                nip=nip, name=r.text(ids, "Nazwa"), role=_int(r.text(upowazniony, "RolaPU")) or 1
            )

    rodzaj = r.text(fa, "RodzajFaktury") or "VAT"
    return InvoiceFacts(
        seller_nip=r.text(seller, "NIP") or "",
        seller_name=r.text(seller, "Nazwa"),
        invoice_number=r.text(fa, "P_2") or "",
        issue_date=date.fromisoformat(r.text(fa, "P_1") or "1900-01-01"),
        rodzaj_faktury=rodzaj,
        invoice_type=INVOICE_TYPES.get(rodzaj, rodzaj),
        currency=currency,
        net_amount=net,
        vat_amount=vat,
        gross_amount=r.decimal(fa, "P_15") or Decimal(0),
        buyer_identifier=_party(r, buyer, internal_id=False),
        buyer_name=r.text(buyer, "Nazwa"),
        third_subjects=third_subjects,
        authorized_subject=authorized,
        is_self_invoicing=r.text(fa, "Adnotacje/P_17") == "1",
        has_attachment=r.find(root, "Zalacznik") is not None,
        corrected_invoice_ksef_number=r.text(fa, "DaneFaKorygowanej/NrKSeFFaKorygowanej"),
    )
