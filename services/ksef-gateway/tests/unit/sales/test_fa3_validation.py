"""FA(3) validation against the bundled XSD: the official samples, errors placed at the right line and column,
hostile and broken documents, and the facts the sending code reads from a valid invoice."""

from __future__ import annotations

import re
import socket
import threading
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from ksef_gateway.sales import validation
from ksef_gateway.sales.validation import (
    FA2_NAMESPACE,
    FA3_NAMESPACE,
    InvalidInvoice,
    XsdError,
    fa3_schema,
    read_facts,
    validate_fa3,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = Path("/work/shared/ksef/samples/invoices/fa3")
if not SAMPLES.exists():  # the shared folder sits beside the repository
    SAMPLES = Path(__file__).resolve().parents[5] / "shared" / "ksef" / "samples" / "invoices" / "fa3"

SELLER, BUYER, THIRD_1, THIRD_2 = "5265877635", "7777777702", "1112223303", "5260250216"
PLACEHOLDERS = {
    "nip": SELLER,
    "nip_podmiot1": SELLER,
    "nip_podmiot2": BUYER,
    "nipOdbiorca": BUYER,
    "subject2nip": BUYER,
    "selfInvocingNip": BUYER,
    "nip1_podmiot3": THIRD_1,
    "nip2_podmiot3": THIRD_2,
    "idwew1_podmiot3": f"{THIRD_1}-00001",
    "idwew2_podmiot3": f"{THIRD_2}-00002",
    "subject3IdentifierValue": f"<NIP>{THIRD_1}</NIP>",
    "invoicing_date": "2026-02-01",
    "invoice_number": "0042",
}
# The C# client's template puts NIP and IDWew side by side in Podmiot3, where TPodmiot3 allows one of them: the
# official file itself does not validate (the client fills one and drops the other).
KNOWN_INVALID = {"csharp-invoice-template-fa-3-with-multiple-Subject3.xml"}
ALL_SAMPLES = sorted(SAMPLES.glob("*.xml"))

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Faktura xmlns="http://crd.gov.pl/wzor/2025/06/25/13775/"><Naglowek>&lol9;</Naglowek></Faktura>
"""


def _fill(text: str) -> bytes:
    return re.sub(r"#([A-Za-z0-9_]+)#", lambda m: PLACEHOLDERS[m.group(1)], text).encode()


def _official() -> bytes:
    return (FIXTURES / "fa3-official-sample.xml").read_bytes()


def _where(xml: bytes, marker: bytes) -> tuple[int, int]:
    """1-based line and character column of the first ``marker``."""
    before = xml[: xml.index(marker)].decode()
    lines = before.split("\n")
    return len(lines), len(lines[-1]) + 1


def test_every_official_fa3_sample_is_found() -> None:
    assert len(ALL_SAMPLES) == 10


@pytest.mark.parametrize("path", [p for p in ALL_SAMPLES if p.name not in KNOWN_INVALID], ids=lambda p: p.name)
def test_every_official_fa3_sample_validates(path: Path) -> None:
    assert validate_fa3(_fill(path.read_text(encoding="utf-8"))) == []


def test_the_official_template_that_breaks_the_xsd_is_reported_where_it_breaks() -> None:
    xml = _fill((SAMPLES / "csharp-invoice-template-fa-3-with-multiple-Subject3.xml").read_text(encoding="utf-8"))
    # Tabs indent this file: three of them, then the start tag.
    assert validate_fa3(xml) == [
        XsdError(46, 4, "Element 'IDWew': This element is not expected. Expected is ( Nazwa )."),
        XsdError(63, 4, "Element 'IDWew': This element is not expected. Expected is ( Nazwa )."),
    ]


@pytest.mark.parametrize("name", ["fa3-official-sample.xml", "csharp-invoice-template-fa-3.xml"])
def test_the_copied_fixtures_validate(name: str) -> None:
    assert validate_fa3(_fill((FIXTURES / name).read_text(encoding="utf-8"))) == []


def test_a_missing_required_element_is_reported_where_it_should_have_been() -> None:
    xml = _official().replace(b"<P_2>FA/YUCFO-4342344706/03/2026</P_2>", b"")
    assert validate_fa3(xml) == [
        XsdError(*_where(xml, b"<P_6>"), "Element 'P_6': This element is not expected. Expected is ( P_2 ).")
    ]
    assert _where(xml, b"<P_6>") == (48, 9)


def test_the_column_is_right_on_a_document_written_on_one_line() -> None:
    one_line = re.sub(rb">\s+<", b"><", _official()).replace(b"<P_2>FA/YUCFO-4342344706/03/2026</P_2>", b"")
    [error] = validate_fa3(one_line)
    # Polish names before the tag are multi-byte in UTF-8: the column counts characters, not bytes.
    assert (error.line, error.column) == _where(one_line, b"<P_6>")
    assert one_line.decode().split("\n")[1][error.column - 1 :].startswith("<P_6>")


def test_a_missing_last_child_points_at_its_parent() -> None:
    xml = _official().replace(b"<PMarzy>\n                <P_PMarzyN>1</P_PMarzyN>\n            </PMarzy>", b"")
    assert validate_fa3(xml) == [
        XsdError(*_where(xml, b"<Adnotacje>"), "Element 'Adnotacje': Missing child element(s). Expected is ( PMarzy ).")
    ]


def test_a_wrong_value_points_at_its_element() -> None:
    xml = _official().replace(b"<P_16>2</P_16>", b"<P_16>3</P_16>")
    [error] = validate_fa3(xml)
    assert (error.line, error.column) == _where(xml, b"<P_16>") == (53, 13)
    assert error.message.startswith("Element 'P_16': [facet 'enumeration'] The value '3'")


def test_several_errors_are_all_reported_in_document_order() -> None:
    xml = _official().replace(b"<P_16>2</P_16>", b"<P_16>3</P_16>").replace(b"<P_17>2</P_17>", b"<P_17>0</P_17>")
    assert [(e.line, e.column) for e in validate_fa3(xml)] == [_where(xml, b"<P_16>"), _where(xml, b"<P_17>")]


def test_not_well_formed_xml_is_one_error_at_the_parsers_position() -> None:
    xml = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Faktura xmlns="'
        + FA3_NAMESPACE.encode()
        + b'">\n  <Naglowek>\n</Faktura>'
    )
    [error] = validate_fa3(xml)
    assert (error.line, error.column) == (4, 11)
    assert error.message.startswith("not well-formed XML: Opening and ending tag mismatch: Naglowek")


def test_an_empty_body_is_not_well_formed() -> None:
    [error] = validate_fa3(b"")
    assert error.message.startswith("not well-formed XML: Document is empty")


def test_a_billion_laughs_document_is_refused_before_libxml2_sees_the_entities() -> None:
    assert validate_fa3(BOMB) == [XsdError(2, 1, "DOCTYPE declarations are not allowed in an invoice")]
    with pytest.raises(InvalidInvoice, match="DOCTYPE"):
        read_facts(BOMB)


def test_a_doctype_behind_comments_and_an_external_entity_are_refused_too() -> None:
    xxe = (
        b'<?xml version="1.0"?><!-- a comment --> <!DOCTYPE Faktura [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<Faktura xmlns="' + FA3_NAMESPACE.encode() + b'"><Naglowek>&x;</Naglowek></Faktura>'
    )
    assert validate_fa3(xxe) == [
        XsdError(*_where(xxe, b"<!DOCTYPE"), "DOCTYPE declarations are not allowed in an invoice")
    ]


def test_the_parser_never_expands_entities_even_past_the_prolog_check() -> None:
    # The parser settings are the second line of defence: given the bomb directly, libxml2 (2.14, bundled with the
    # locked lxml) stops at its amplification limit instead of building gigabytes of "lol".
    with pytest.raises(etree.XMLSyntaxError, match="amplification"):
        etree.fromstring(BOMB, validation._parser())


def test_a_wrong_namespace_is_a_clear_error_at_the_root() -> None:
    xml = _official().replace(FA3_NAMESPACE.encode(), b"urn:example:invoice")
    assert validate_fa3(xml) == [
        XsdError(
            2,
            1,
            f"the root element must be 'Faktura' in namespace '{FA3_NAMESPACE}' (FA (3)), "
            "found 'Faktura' in namespace 'urn:example:invoice'",
        )
    ]


def test_an_fa2_invoice_is_named_as_such() -> None:
    [error] = validate_fa3(_official().replace(FA3_NAMESPACE.encode(), FA2_NAMESPACE.encode()))
    assert error.message.startswith("this is an FA (2) invoice")


def test_a_root_without_namespace_is_a_clear_error() -> None:
    [error] = validate_fa3(b"<Faktura><Naglowek/></Faktura>")
    assert error == XsdError(
        1,
        1,
        f"the root element must be 'Faktura' in namespace '{FA3_NAMESPACE}' (FA (3)), found 'Faktura' in no namespace",
    )


def test_what_ksef_refuses_in_the_bytes_is_reported() -> None:
    xml = _official()
    assert validate_fa3(b"\xef\xbb\xbf" + xml)[0].message.startswith("the document starts with a UTF-8 byte order mark")
    with_pi = xml.replace(b"<Podmiot1>", b'<?xml-stylesheet href="x.xsl"?><Podmiot1>')
    assert validate_fa3(with_pi) == [
        XsdError(*_where(with_pi, b"<?xml-stylesheet"), "processing instructions are not allowed")
    ]
    latin2 = xml.replace(b'encoding="utf-8"', b'encoding="ISO-8859-2"').decode().encode("iso-8859-2")
    assert validate_fa3(latin2) == [XsdError(1, 1, "the document is encoded as ISO-8859-2; KSeF accepts UTF-8 only")]


def test_the_schema_is_compiled_once_and_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fa3_schema() is fa3_schema()

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the FA(3) schema must compile without the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert validation._compile().validate(etree.fromstring(_official()))


def test_concurrent_validations_each_get_their_own_errors() -> None:
    valid, invalid = _official(), _official().replace(b"<P_16>2</P_16>", b"<P_16>3</P_16>")
    wrong: list[str] = []

    def work(index: int) -> None:
        for round_ in range(25):
            xml = invalid if (index + round_) % 2 else valid
            errors = validate_fa3(xml)
            if (len(errors) == 1) != (xml is invalid):
                wrong.append(f"thread {index} round {round_}: {errors}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_facts_of_the_official_sample() -> None:
    facts = read_facts(_official())
    assert facts == validation.InvoiceFacts(
        seller_nip="5265877635",
        buyer_nip="6808208874",
        buyer_is_consumer=False,
        invoice_number="FA/YUCFO-4342344706/03/2026",
        issue_date=date(2025, 10, 31),
        currency="PLN",
        gross=Decimal("33569.50"),
        invoice_type="VAT",
    )
    assert not facts.is_correction
    assert facts.corrected_ksef_number is None


def test_facts_of_a_consumer_invoice() -> None:
    xml = _official().replace(b"<NIP>6808208874</NIP>", b"<BrakID>1</BrakID>")
    assert validate_fa3(xml) == []
    facts = read_facts(xml)
    assert (facts.buyer_nip, facts.buyer_is_consumer) == (None, True)


def test_facts_of_an_eu_buyer_who_is_not_a_consumer() -> None:
    xml = _official().replace(b"<NIP>6808208874</NIP>", b"<KodUE>DE</KodUE><NrVatUE>123456789</NrVatUE>")
    assert validate_fa3(xml) == []
    assert (read_facts(xml).buyer_nip, read_facts(xml).buyer_is_consumer) == (None, False)


def test_facts_of_a_correction_name_the_corrected_invoice() -> None:
    ksef_number = "5265877635-20251031-0100A0B1C2D3-4F"
    xml = _official().replace(
        b"<RodzajFaktury>VAT</RodzajFaktury>",
        b"<RodzajFaktury>KOR</RodzajFaktury><PrzyczynaKorekty>Rabat</PrzyczynaKorekty><DaneFaKorygowanej>"
        b"<DataWystFaKorygowanej>2025-10-01</DataWystFaKorygowanej><NrFaKorygowanej>FA/1/10/2025</NrFaKorygowanej>"
        b"<NrKSeF>1</NrKSeF><NrKSeFFaKorygowanej>" + ksef_number.encode() + b"</NrKSeFFaKorygowanej>"
        b"</DaneFaKorygowanej>",
    )
    assert validate_fa3(xml) == []
    facts = read_facts(xml)
    assert (facts.invoice_type, facts.is_correction, facts.corrected_ksef_number) == ("KOR", True, ksef_number)


def test_facts_refuse_what_cannot_be_read() -> None:
    with pytest.raises(InvalidInvoice, match="not well-formed"):
        read_facts(b"<Faktura")
    with pytest.raises(InvalidInvoice, match="Fa/P_2"):
        read_facts(_official().replace(b"<P_2>FA/YUCFO-4342344706/03/2026</P_2>", b""))
