"""The FA(2)/FA(3) header parser on every official sample, on simulator-made corrections and foreign-currency
invoices, and on hostile or broken documents."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from random import Random

import pytest

from ksef_gateway.purchases.domain import (
    FA2_NAMESPACE,
    FA3_NAMESPACE,
    InvoiceParseError,
    PartyIdentifier,
    parse_invoice_header,
)
from ksef_sim.domain.seed import Line, Original, make_party, render_invoice

SAMPLES = Path("/work/shared/ksef/samples/invoices")
if not SAMPLES.exists():  # the shared folder sits beside the repository
    SAMPLES = Path(__file__).resolve().parents[5] / "shared" / "ksef" / "samples" / "invoices"

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


def _sample(path: Path) -> bytes:
    text = path.read_text(encoding="utf-8")
    return re.sub(r"#([A-Za-z0-9_]+)#", lambda m: PLACEHOLDERS[m.group(1)], text).encode()


def _text(xml: bytes, tag: str) -> str:
    match = re.search(rf"<{tag}>([^<]*)</{tag}>".encode(), xml)
    assert match, tag
    return match.group(1).decode()


ALL_SAMPLES = sorted(SAMPLES.glob("fa*/*.xml"))


def test_every_official_sample_is_found() -> None:
    assert len(ALL_SAMPLES) == 11


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
def test_every_official_sample_parses_to_its_own_fields(path: Path) -> None:
    xml = _sample(path)
    header = parse_invoice_header(xml)

    assert header.form == ("FA (2)" if path.parent.name == "fa2" else "FA (3)")
    assert header.issue_date == date.fromisoformat(_text(xml, "P_1"))
    assert header.invoice_number == _text(xml, "P_2")
    assert header.gross_amount == Decimal(_text(xml, "P_15"))
    assert header.net_amount == Decimal(_text(xml, "P_13_1"))
    assert header.vat_amount == Decimal(_text(xml, "P_14_1"))
    assert header.vat_amount_pln == header.vat_amount
    assert header.net_amount + header.vat_amount == header.gross_amount
    assert header.currency == "PLN"
    assert header.invoice_type == "VAT"
    assert header.corrected_invoices == ()
    assert re.fullmatch(r"\d{10}", header.seller_nip)
    assert header.seller_name
    assert header.buyer.type == "Nip" and header.buyer.value and header.buyer_name


def test_the_plain_fa3_template_in_detail() -> None:
    header = parse_invoice_header(_sample(SAMPLES / "fa3" / "csharp-invoice-template-fa-3.xml"))
    assert header.form == "FA (3)"
    assert header.issue_date == date(2025, 9, 1)
    assert header.invoice_number == "FA/GRQMB-0042/05/2025"
    assert header.seller_nip == SELLER
    assert (header.net_amount, header.vat_amount, header.gross_amount) == (
        Decimal("43.60"),
        Decimal("10.03"),
        Decimal("53.63"),
    )
    assert header.third_subjects == ()
    assert header.authorized_subject is None


def test_several_third_subjects_with_their_roles() -> None:
    header = parse_invoice_header(_sample(SAMPLES / "fa3" / "csharp-invoice-template-fa-3-with-multiple-Subject3.xml"))
    assert header.buyer == PartyIdentifier("Nip", BUYER)
    assert header.buyer_name == "Szkoła Testowa"
    assert [(t.identifier, t.name, t.role) for t in header.third_subjects] == [
        (PartyIdentifier("Nip", THIRD_1), "Szkoła Podstawowa w Bzdziszewie", 8),
        (PartyIdentifier("Nip", THIRD_2), "Szkoła Podstawowa w Przykładowie", 8),
    ]
    assert header.seller_name == "Elektrownia S.A."
    assert header.gross_amount == Decimal("64279.92")


def test_fa2_is_read_from_its_own_namespace() -> None:
    xml = _sample(SAMPLES / "fa2" / "csharp-invoice-template-fa-2.xml")
    assert FA2_NAMESPACE.encode() in xml
    header = parse_invoice_header(xml)
    assert header.form == "FA (2)"
    assert header.gross_amount == Decimal("43370.57")


def _original() -> Original:
    return Original(
        ksef_number="5265877635-20260105-0100001AF629-AF",
        invoice_number="FV/2026/01/0007",
        issue_date=date(2026, 1, 5),
        lines=(Line("Papier A4", "szt.", Decimal(10), Decimal("25.00"), "23"),),
        currency="EUR",
        exchange_rate=Decimal("4.2500"),
    )


def test_a_correction_names_the_corrected_invoice_and_its_ksef_number() -> None:
    rng = Random(7)
    original = _original()
    before = original.lines[0]
    after = Line(before.description, before.unit, Decimal(8), before.unit_price, before.rate)
    generated = render_invoice(
        seller=make_party(rng, nip=SELLER),
        buyer=make_party(rng, nip=BUYER),
        number="KOR/2026/02/0001",
        issue_date=date(2026, 2, 3),
        created_at=datetime(2026, 2, 3, 9, tzinfo=UTC),
        lines=(),
        currency="EUR",
        exchange_rate=original.exchange_rate,
        correction=(original, before, after, "Zwrot towaru", 2),
    )
    header = parse_invoice_header(generated.xml)
    assert header.invoice_type == "KOR"
    assert header.corrected_ksef_number == original.ksef_number
    assert header.corrected_invoice_number == original.invoice_number
    assert header.corrected_invoices[0].issue_date == original.issue_date
    # -2 pieces at 25.00 EUR, 23 % VAT, in EUR; the VAT in PLN comes from P_14_1W.
    assert header.currency == "EUR"
    assert header.net_amount == Decimal("-50.00")
    assert header.vat_amount == Decimal("-11.50")
    assert header.gross_amount == Decimal("-61.50")
    assert header.vat_amount_pln == generated.vat_amount == Decimal("-48.88")


def test_a_third_subject_made_by_the_simulator() -> None:
    rng = Random(3)
    generated = render_invoice(
        seller=make_party(rng, nip=SELLER),
        buyer=make_party(rng, nip=BUYER),
        number="FV/1",
        issue_date=date(2026, 2, 3),
        created_at=datetime(2026, 2, 3, 9, tzinfo=UTC),
        lines=(Line("Usługa", "usł.", Decimal(1), Decimal("100.00"), "8"),),
        third_subject=(make_party(rng, nip=THIRD_1), 4),
    )
    header = parse_invoice_header(generated.xml)
    assert [(t.identifier.value, t.role) for t in header.third_subjects] == [(THIRD_1, 4)]
    assert (header.net_amount, header.vat_amount, header.gross_amount) == (
        Decimal("100.00"),
        Decimal("8.00"),
        Decimal("108.00"),
    )


def _minimal(fa: str = "", podmiot2: str = f"<NIP>{BUYER}</NIP><Nazwa>B</Nazwa>", extra: str = "") -> bytes:
    body = fa or "<KodWaluty>PLN</KodWaluty><P_1>2026-02-01</P_1><P_2>FV/1</P_2><P_15>1.00</P_15>"
    body += "" if "RodzajFaktury" in body else "<RodzajFaktury>VAT</RodzajFaktury>"
    return (
        f'<Faktura xmlns="{FA3_NAMESPACE}">{extra}<Podmiot1><DaneIdentyfikacyjne><NIP>{SELLER}</NIP>'
        f"<Nazwa>S</Nazwa></DaneIdentyfikacyjne></Podmiot1><Podmiot2><DaneIdentyfikacyjne>{podmiot2}"
        f"</DaneIdentyfikacyjne></Podmiot2><Fa>{body}</Fa></Faktura>"
    ).encode()


def test_a_minimal_invoice_parses() -> None:
    header = parse_invoice_header(_minimal())
    assert header.gross_amount == Decimal("1.00") and header.net_amount == 0


@pytest.mark.parametrize(
    ("podmiot2", "expected"),
    [
        ("<KodUE>DE</KodUE><NrVatUE>123456789</NrVatUE><Nazwa>X</Nazwa>", PartyIdentifier("VatUe", "DE123456789")),
        ("<KodKraju>US</KodKraju><NrID>99-1234</NrID><Nazwa>X</Nazwa>", PartyIdentifier("Other", "US99-1234")),
        ("<BrakID>1</BrakID><Nazwa>X</Nazwa>", PartyIdentifier("None")),
    ],
)
def test_buyers_without_a_nip(podmiot2: str, expected: PartyIdentifier) -> None:
    assert parse_invoice_header(_minimal(podmiot2=podmiot2)).buyer == expected


def test_the_authorized_subject() -> None:
    extra = ""
    xml = _minimal(extra=extra).replace(
        b"<Fa>",
        f"<PodmiotUpowazniony><DaneIdentyfikacyjne><NIP>{THIRD_2}</NIP><Nazwa>Komornik</Nazwa>"
        "</DaneIdentyfikacyjne><RolaPU>1</RolaPU></PodmiotUpowazniony><Fa>".encode(),
    )
    header = parse_invoice_header(xml)
    assert header.authorized_subject is not None
    assert (header.authorized_subject.nip, header.authorized_subject.role) == (THIRD_2, 1)


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (b"not xml at all", "not well-formed"),
        (b"<Faktura", "not well-formed"),
        (b'<Faktura xmlns="urn:other"/>', "not Faktura in the FA(2) or FA(3) namespace"),
        (
            _minimal(fa="<KodWaluty>PLN</KodWaluty><P_1>2026-02-01</P_1><P_15>1</P_15>"),
            "Fa/P_2 is missing",
        ),
        (
            _minimal(fa="<KodWaluty>PLN</KodWaluty><P_1>01.02.2026</P_1><P_2>1</P_2><P_15>1</P_15>"),
            "Fa/P_1 is not a date",
        ),
        (
            _minimal(fa="<KodWaluty>PLN</KodWaluty><P_1>2026-02-01</P_1><P_2>1</P_2><P_15>abc</P_15>"),
            "Fa/P_15 is not a number",
        ),
        (
            _minimal(
                fa="<KodWaluty>PLN</KodWaluty><P_1>2026-02-01</P_1><P_2>1</P_2><P_15>1</P_15>"
                "<RodzajFaktury>XYZ</RodzajFaktury>"
            ),
            "RodzajFaktury",
        ),
        (
            _minimal(podmiot2="").replace(b"<Podmiot2><DaneIdentyfikacyjne></DaneIdentyfikacyjne></Podmiot2>", b""),
            "Podmiot2/DaneIdentyfikacyjne is missing",
        ),
    ],
)
def test_malformed_invoices_give_a_clear_domain_error(xml: bytes, message: str) -> None:
    with pytest.raises(InvoiceParseError, match=re.escape(message)):
        parse_invoice_header(xml)


def test_entities_and_doctypes_are_refused_and_never_expanded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = (
        f'<?xml version="1.0"?><!DOCTYPE Faktura [<!ENTITY x SYSTEM "file://{secret}">]>'
    ).encode() + _minimal().replace(b"<P_2>FV/1</P_2>", b"<P_2>&x;</P_2>")
    with pytest.raises(InvoiceParseError, match="DOCTYPE") as caught:
        parse_invoice_header(xxe)
    assert "TOP-SECRET" not in str(caught.value)

    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE Faktura [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        + _minimal().replace(b"<P_2>FV/1</P_2>", b"<P_2>&b;</P_2>")
    )
    with pytest.raises(InvoiceParseError, match="DOCTYPE"):
        parse_invoice_header(bomb)


def test_oversized_documents_are_refused_before_parsing() -> None:
    with pytest.raises(InvoiceParseError, match="more than the 100 allowed"):
        parse_invoice_header(_minimal(), max_bytes=100)
