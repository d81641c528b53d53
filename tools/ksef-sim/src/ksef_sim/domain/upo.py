"""UPO (Urzędowe Poświadczenie Odbioru) v4-3 documents (REFERENCE.md §6).

Two shapes, both rooted at ``Potwierdzenie``: one invoice (no ``OpisPotwierdzenia``) and a session page
(``OpisPotwierdzenia`` with page numbers and the document range; ≤10 000 ``Dokument`` per page). The real UPO
carries the Ministry's XAdES signature; the published samples are unsigned and so are ours.
``NazwaPodmiotuPrzyjmujacego`` keeps the XSD's fixed value ("Ministerstwo Finansów"): the TEST samples append
the environment name and so fail the schema (REFERENCE.md §21).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from lxml import etree

from ksef_sim.domain.fa import load_schema

UPO_NAMESPACE = "http://upo.schematy.mf.gov.pl/KSeF/v4-3"
UPO_XSD = "upo/upo-v4-3.xsd"
RECEIVER_NAME = "Ministerstwo Finansów"
PAGE_SIZE = 10_000

# Context identifier type → UPO IdKontekstu element.
_CONTEXT_ELEMENTS = {
    "Nip": "Nip",
    "InternalId": "IdWewnetrzny",
    "NipVatUe": "IdZlozonyVatUE",
    "PeppolId": "IdDostawcyUslugPeppol",
}


@dataclass(frozen=True)
class UpoHeader:
    session_reference_number: str
    context_type: str
    context_value: str
    structure_name: str  # Schemat_FA(3)_v1-0E.xsd
    form_system_code: str  # FA (3)
    ksef_token_reference: str | None = None
    # Stand-in for the hash of the signed authentication document when no KSeF token was used.
    auth_document_hash: str | None = None


@dataclass(frozen=True)
class UpoDocument:
    seller_nip: str
    ksef_number: str
    invoice_number: str
    issue_date: date
    invoicing_date: datetime  # DataPrzeslaniaDokumentu
    acquisition_date: datetime  # DataNadaniaNumeruKSeF
    invoice_hash: str
    invoicing_mode: str  # Online | Offline


def _ts(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds")


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{UPO_NAMESPACE}}}{name}")
    if text is not None:
        element.text = text
    return element


def _document(
    header: UpoHeader, documents: Sequence[UpoDocument], page: tuple[int, int, int, int, int] | None
) -> bytes:
    root = etree.Element(f"{{{UPO_NAMESPACE}}}Potwierdzenie", nsmap={None: UPO_NAMESPACE})  # type: ignore[dict-item]
    _sub(root, "NazwaPodmiotuPrzyjmujacego", RECEIVER_NAME)
    _sub(root, "NumerReferencyjnySesji", header.session_reference_number)
    auth = _sub(root, "Uwierzytelnienie")
    context = _sub(auth, "IdKontekstu")
    _sub(context, _CONTEXT_ELEMENTS.get(header.context_type, "Nip"), header.context_value)
    if header.ksef_token_reference:
        _sub(auth, "NumerReferencyjnyTokenaKSeF", header.ksef_token_reference)
    else:
        _sub(auth, "SkrotDokumentuUwierzytelniajacego", header.auth_document_hash or "A" * 43 + "=")
    if page is not None:
        description = _sub(root, "OpisPotwierdzenia")
        for name, value in zip(
            ("Strona", "LiczbaStron", "ZakresDokumentowOd", "ZakresDokumentowDo", "CalkowitaLiczbaDokumentow"),
            page,
            strict=True,
        ):
            _sub(description, name, str(value))
    _sub(root, "NazwaStrukturyLogicznej", header.structure_name)
    _sub(root, "KodFormularza", header.form_system_code)
    for doc in documents:
        element = _sub(root, "Dokument")
        _sub(element, "NipSprzedawcy", doc.seller_nip)
        _sub(element, "NumerKSeFDokumentu", doc.ksef_number)
        _sub(element, "NumerFaktury", doc.invoice_number)
        _sub(element, "DataWystawieniaFaktury", doc.issue_date.isoformat())
        _sub(element, "DataPrzeslaniaDokumentu", _ts(doc.invoicing_date))
        _sub(element, "DataNadaniaNumeruKSeF", _ts(doc.acquisition_date))
        _sub(element, "SkrotDokumentu", doc.invoice_hash)
        _sub(element, "TrybWysylki", doc.invoicing_mode)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def invoice_upo(header: UpoHeader, document: UpoDocument) -> bytes:
    return _document(header, [document], None)


def session_upo_pages(header: UpoHeader, documents: Sequence[UpoDocument]) -> list[bytes]:
    """One XML per page of ≤ ``PAGE_SIZE`` documents (a session with no accepted invoice has no UPO)."""
    total = len(documents)
    pages = max(1, -(-total // PAGE_SIZE))
    result = []
    for index in range(pages):
        chunk = documents[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
        first = index * PAGE_SIZE + 1
        result.append(_document(header, chunk, (index + 1, pages, first, first + len(chunk) - 1, total)))
    return result


def validate_upo(xml: bytes) -> list[str]:
    """XSD messages for a UPO document (empty when valid)."""
    schema = load_schema(UPO_XSD)
    document = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    if schema.validate(document):
        return []
    return [entry.message for entry in cast(Iterable[Any], schema.error_log)]
