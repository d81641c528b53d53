"""UPO v4-3 documents validate against the official XSD (REFERENCE.md §6)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from lxml import etree

from ksef_sim.domain import upo

SAMPLES = Path("/work/shared/ksef/samples/upo")
NS = {"u": upo.UPO_NAMESPACE}


def header(**overrides: str | None) -> upo.UpoHeader:
    values: dict[str, str | None] = {
        "session_reference_number": "20260310-SO-2C3E6C8000-B675CF5D68-07",
        "context_type": "Nip",
        "context_value": "5265877635",
        "structure_name": "Schemat_FA(3)_v1-0E.xsd",
        "form_system_code": "FA (3)",
        "ksef_token_reference": None,
        "auth_document_hash": "kyqH+QUgP8ATWd/95IY632mP4uqibwG66Oqclq9+qno=",
        **overrides,
    }
    return upo.UpoHeader(**values)  # type: ignore[arg-type]


def document(sequence: int) -> upo.UpoDocument:
    return upo.UpoDocument(
        seller_nip="5265877635",
        ksef_number=f"5265877635-20260310-01{sequence:010X}-00",
        invoice_number=f"FV/{sequence}",
        issue_date=date(2026, 3, 10),
        invoicing_date=datetime(2026, 3, 10, 9, 0, tzinfo=UTC),
        acquisition_date=datetime(2026, 3, 10, 9, 0, 1, tzinfo=UTC),
        invoice_hash="GZMGNVzs3krF6URKgvaw77OOeG3nJ+WGziT5xguliQ8=",
        invoicing_mode="Online",
    )


def test_invoice_upo_is_valid() -> None:
    xml = upo.invoice_upo(header(), document(1))
    assert upo.validate_upo(xml) == []
    root = etree.fromstring(xml)
    assert root.find("u:OpisPotwierdzenia", NS) is None
    assert root.findtext("u:Dokument/u:NumerKSeFDokumentu", namespaces=NS) == document(1).ksef_number
    assert root.findtext("u:Uwierzytelnienie/u:IdKontekstu/u:Nip", namespaces=NS) == "5265877635"


@pytest.mark.parametrize(
    ("context_type", "value", "element"),
    [
        ("InternalId", "5265877635-12345", "IdWewnetrzny"),
        ("NipVatUe", "5265877635-DE123456789", "IdZlozonyVatUE"),
        ("PeppolId", "PPL123456", "IdDostawcyUslugPeppol"),
    ],
)
def test_context_kinds_and_token_reference(context_type: str, value: str, element: str) -> None:
    xml = upo.invoice_upo(
        header(
            context_type=context_type, context_value=value, ksef_token_reference="20250819-EC-1ECDD12000-5EE71AE5E3-B7"
        ),
        document(1),
    )
    assert upo.validate_upo(xml) == []
    root = etree.fromstring(xml)
    assert root.findtext(f"u:Uwierzytelnienie/u:IdKontekstu/u:{element}", namespaces=NS) == value
    assert root.find("u:Uwierzytelnienie/u:NumerReferencyjnyTokenaKSeF", NS) is not None


def test_session_upo_pages_hold_at_most_10000_documents() -> None:
    documents = [document(i) for i in range(1, upo.PAGE_SIZE + 3)]
    pages = upo.session_upo_pages(header(), documents)
    assert len(pages) == 2
    for page in pages:
        assert upo.validate_upo(page) == []
    second = etree.fromstring(pages[1])
    described = [
        second.findtext(f"u:OpisPotwierdzenia/u:{name}", namespaces=NS)
        for name in ("Strona", "LiczbaStron", "ZakresDokumentowOd", "ZakresDokumentowDo", "CalkowitaLiczbaDokumentow")
    ]
    assert described == ["2", "2", "10001", "10002", "10002"]
    assert len(second.findall("u:Dokument", NS)) == 2
    assert len(etree.fromstring(pages[0]).findall("u:Dokument", NS)) == upo.PAGE_SIZE


def test_validator_rejects_broken_upo() -> None:
    xml = upo.invoice_upo(header(), document(1)).replace(b"<TrybWysylki>Online", b"<TrybWysylki>Email")
    assert upo.validate_upo(xml)


def v43_samples() -> list[Path]:
    return sorted(path for path in SAMPLES.glob("*.xml") if b"KSeF/v4-3" in path.read_bytes())


def test_v43_samples_found() -> None:
    assert len(v43_samples()) == 6


@pytest.mark.parametrize("path", v43_samples(), ids=lambda p: p.name)
def test_official_samples_validate(path: Path) -> None:
    # The TEST samples name the receiver "Ministerstwo Finansów - środowisko testowe (TE)", which breaks the XSD's
    # fixed value (REFERENCE.md §21); everything else in them is valid.
    messages = upo.validate_upo(path.read_bytes())
    assert len(messages) == 1 and "fixed value constraint 'Ministerstwo Finansów'" in messages[0]
    fixed = path.read_bytes().replace(" - środowisko testowe (TE)".encode(), b"")
    assert upo.validate_upo(fixed) == []
