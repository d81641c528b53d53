"""XSD validation of the official sample invoices (placeholders filled) and the validator's messages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ksef_sim.domain import fa

SAMPLES = Path("/work/shared/ksef/samples/invoices")

# Every placeholder the official templates use, with a value valid for the XSD.
PLACEHOLDERS = {
    "#nip#": "5265877635",
    "#invoice_number#": "42",
    "#invoicing_date#": "2026-01-15",
    "#nipOdbiorca#": "9795075130",
    "#selfInvocingNip#": "7010002137",
    "#nip_podmiot1#": "5265877635",
    "#nip_podmiot2#": "9795075130",
    "#nip1_podmiot3#": "3861610227",
    "#nip2_podmiot3#": "6808208874",
    "#idwew1_podmiot3#": "5265877635-00001",
    "#idwew2_podmiot3#": "5265877635-00002",
    "#subject2nip#": "7352765225",
    "#subject3IdentifierValue#": "<NIP>1111111111</NIP>",
}


def fill(text: str, **overrides: str) -> bytes:
    values = {**PLACEHOLDERS, **overrides}
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    leftover = re.findall(r"#[A-Za-z0-9_]+#", text)
    assert not leftover, f"unfilled placeholders: {leftover}"
    return text.encode("utf-8")


def sample_files() -> list[Path]:
    return sorted(SAMPLES.glob("*/*.xml"))


def form_of(path: Path) -> fa.InvoiceForm:
    return fa.FA2 if path.parent.name == "fa2" else fa.FA3


def test_every_sample_is_found() -> None:
    names = {path.name for path in sample_files()}
    assert "csharp-invoice-template-fa-2.xml" in names
    assert len(names) >= 11


# The official multiple-Subject3 template puts both NIP and IDWew in each Podmiot3/DaneIdentyfikacyjne, which the
# FA(3) choice forbids: it is invalid as published, and valid once one identifier per subject is kept.
INVALID_AS_PUBLISHED = {"csharp-invoice-template-fa-3-with-multiple-Subject3.xml"}


@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_official_sample_is_valid(path: Path) -> None:
    content = fill(path.read_text(encoding="utf-8"))
    messages = fa.validate_bytes(content, form_of(path))
    if path.name not in INVALID_AS_PUBLISHED:
        assert messages == []
        return
    assert len(messages) == 2
    assert all("has invalid child element 'IDWew'" in message for message in messages)
    fixed = re.sub(rb"\s*<IDWew>[^<]*</IDWew>", b"", content)
    assert fa.validate_bytes(fixed, form_of(path)) == []


@pytest.mark.parametrize(
    ("fragment", "expected"),
    [
        ("<NIP>1111111111</NIP>", ("Nip", "1111111111")),
        ("<IDWew>5265877635-00001</IDWew>", ("InternalId", "5265877635-00001")),
        ("<KodUE>DE</KodUE><NrVatUE>123456789</NrVatUE>", ("VatUe", "DE123456789")),
        ("<KodKraju>US</KodKraju><NrID>X-1</NrID>", ("Other", "X-1")),
        ("<BrakID>1</BrakID>", ("None", None)),
    ],
)
def test_third_subject_identifier_variants(fragment: str, expected: tuple[str, str | None]) -> None:
    path = SAMPLES / "fa3" / "java-invoice-template-fa-3-with-custom-subject_3.xml"
    content = fill(path.read_text(encoding="utf-8"), **{"#subject3IdentifierValue#": fragment})
    assert fa.validate_bytes(content, fa.FA3) == []
    facts = fa.extract_facts(fa.parse_xml(content))
    assert [(s.identifier.type, s.identifier.value) for s in facts.third_subjects] == [expected]


def test_fa2_sample_is_not_fa3() -> None:
    path = SAMPLES / "fa2" / "csharp-invoice-template-fa-2.xml"
    messages = fa.validate_bytes(fill(path.read_text(encoding="utf-8")), fa.FA3)
    assert messages and "Faktura" in messages[0]


def test_adnotacje_order_error_has_dotnet_style_message() -> None:
    path = SAMPLES / "fa3" / "csharp-invoice-template-fa-3.xml"
    text = fill(path.read_text(encoding="utf-8")).decode()
    swapped = re.sub(
        r"(<Zwolnienie>.*?</Zwolnienie>)(\s*)(<NoweSrodkiTransportu>.*?</NoweSrodkiTransportu>)",
        r"\3\2\1",
        text,
        flags=re.S,
    )
    assert swapped != text
    messages = fa.validate_bytes(swapped.encode(), fa.FA3)
    ns = fa.FA3_NAMESPACE
    assert messages[0] == (
        f"The element 'Adnotacje' in namespace '{ns}' has invalid child element 'NoweSrodkiTransportu' in "
        f"namespace '{ns}'. List of possible elements expected: 'Zwolnienie' in namespace '{ns}'."
    )


def test_wrong_form_code_attribute_message() -> None:
    path = SAMPLES / "fa3" / "csharp-invoice-template-fa-3.xml"
    content = fill(path.read_text(encoding="utf-8")).replace(b'kodSystemowy="FA (3)"', b'kodSystemowy="FA(3)"')
    assert "The value of the 'kodSystemowy' attribute does not equal its fixed value." in fa.validate_bytes(
        content, fa.FA3
    )


def test_malformed_xml() -> None:
    assert fa.validate_bytes(b"<Faktura><Naglowek></Faktura>", fa.FA3)[0].startswith("Nieprawidłowy XML")


def test_find_form() -> None:
    assert fa.find_form("FA (3)", "1-0E", "FA") is fa.FA3
    assert fa.find_form("FA (2)", "1-0E", "FA") is fa.FA2
    assert fa.find_form("FA(3)", "1-0E", "FA") is None
    assert fa.find_form("PEF (3)", "2-1", "PEF") is None
