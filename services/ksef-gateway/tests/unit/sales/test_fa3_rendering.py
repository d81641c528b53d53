"""The JSON sales invoice rendered to FA(3): every render validates against the XSD, the totals follow the
documented rounding, bad input is refused naming the field, and the facts read back are the ones posted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, get_args

import pytest
from lxml import etree
from pydantic import ValidationError

from ksef_gateway.sales.rendering import Rate, SalesInvoiceIn, invoice_totals, render_fa3
from ksef_gateway.sales.validation import FA3_NAMESPACE, read_facts, validate_fa3

SELLER_NIP, BUYER_NIP = "5265877635", "6808208874"
GENERATED = datetime(2026, 2, 10, 9, 30, tzinfo=UTC)
KSEF_NUMBER = "5265877635-20260105-0100A0B1C2D3-4F"
NS = {"fa": FA3_NAMESPACE}


def _invoice(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "number": "FV/7/02/2026",
        "issue_date": "2026-02-10",
        "seller": {
            "nip": SELLER_NIP,
            "name": "Biuro Rachunkowe Kępa sp. z o.o.",
            "address": {"line1": "ul. Kępa 332", "line2": "20-892 Tyszowce"},
        },
        "buyer": {
            "nip": BUYER_NIP,
            "name": "Strzelczyk LLC",
            "address": {"line1": "ul. Wójcik 7255", "line2": "28-068 Pobiedziska"},
        },
        "lines": [{"name": "Usługa księgowa", "unit": "usł.", "quantity": "1", "unit_net_price": "100", "rate": "23"}],
    }
    body.update(overrides)
    return body


def _render(body: dict[str, Any]) -> bytes:
    xml = render_fa3(SalesInvoiceIn.model_validate(body), generated_at=GENERATED)
    assert validate_fa3(xml) == []
    return xml


def _fa(xml: bytes) -> dict[str, str]:
    """The Fa children that are plain values, by element name."""
    fa = etree.fromstring(xml).find("fa:Fa", NS)
    assert fa is not None
    return {etree.QName(child).localname: child.text or "" for child in fa if len(child) == 0}


def _all(xml: bytes, path: str) -> list[str]:
    return [node.text or "" for node in etree.fromstring(xml).iterfind(path, NS)]


def test_a_typical_invoice_at_23_and_8_percent() -> None:
    xml = _render(
        _invoice(
            sale_date="2026-02-09",
            place_of_issue="Tyszowce",
            lines=[
                {"name": "Usługa księgowa", "unit": "usł.", "quantity": "1", "unit_net_price": "1500.00", "rate": "23"},
                {"name": "Segregatory", "unit": "szt.", "quantity": "3", "unit_net_price": "33.33", "rate": "23"},
                {"name": "Książka", "unit": "szt.", "quantity": "2", "unit_net_price": "45.50", "rate": "8"},
                {"name": "Catering", "unit": "kg", "quantity": "1.5", "unit_net_price": "10.10", "rate": 8},
            ],
            payment={
                "due_date": "2026-02-24",
                "method": "transfer",
                "bank_account": "PL61 1090 1014 0000 0712 1981 2874",
            },
        )
    )
    fa = _fa(xml)
    # 1500.00 + 99.99 at 23%: 367.9977 rounds to 368.00; 91.00 + 15.15 at 8%: 8.492 rounds to 8.49.
    assert {k: fa[k] for k in ("P_13_1", "P_14_1", "P_13_2", "P_14_2", "P_15")} == {
        "P_13_1": "1599.99",
        "P_14_1": "368.00",
        "P_13_2": "106.15",
        "P_14_2": "8.49",
        "P_15": "2082.63",
    }
    assert (fa["KodWaluty"], fa["P_1"], fa["P_1M"], fa["P_2"], fa["P_6"], fa["RodzajFaktury"]) == (
        "PLN",
        "2026-02-10",
        "Tyszowce",
        "FV/7/02/2026",
        "2026-02-09",
        "VAT",
    )
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:P_11") == ["1500.00", "99.99", "91.00", "15.15"]
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:P_8B") == ["1", "3", "2", "1.5"]
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:P_9A") == ["1500.00", "33.33", "45.50", "10.10"]
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:P_12") == ["23", "23", "8", "8"]
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:NrWierszaFa") == ["1", "2", "3", "4"]
    assert _all(xml, "fa:Fa/fa:Platnosc/fa:TerminPlatnosci/fa:Termin") == ["2026-02-24"]
    assert _all(xml, "fa:Fa/fa:Platnosc/fa:FormaPlatnosci") == ["6"]
    assert _all(xml, "fa:Fa/fa:Platnosc/fa:RachunekBankowy/fa:NrRB") == ["PL61109010140000071219812874"]
    assert _all(xml, "fa:Naglowek/fa:DataWytworzeniaFa") == ["2026-02-10T09:30:00Z"]
    assert _all(xml, "fa:Podmiot2/fa:JST") == ["2"]
    assert _all(xml, "fa:Podmiot2/fa:GV") == ["2"]
    assert not xml.startswith(b"\xef\xbb\xbf")


def test_vat_is_rounded_half_up_once_per_rate_not_per_line() -> None:
    invoice = SalesInvoiceIn.model_validate(
        _invoice(
            lines=[
                *[{"name": f"Drobiazg {i}", "quantity": "1", "unit_net_price": "0.10", "rate": "23"} for i in range(3)],
                {"name": "Pół grosza", "quantity": "3", "unit_net_price": "0.335", "rate": "5"},
            ]
        )
    )
    totals = invoice_totals(invoice)
    # Per line the VAT would be 3 x 0.02 = 0.06; on the rate's total it is 0.069 -> 0.07.
    assert (totals.amounts["P_13_1"], totals.amounts["P_14_1"]) == (Decimal("0.30"), Decimal("0.07"))
    # 3 x 0.335 = 1.005 -> 1.01 (half-up, not banker's 1.00); 1.01 x 5% = 0.0505 -> 0.05.
    assert (totals.amounts["P_13_3"], totals.amounts["P_14_3"]) == (Decimal("1.01"), Decimal("0.05"))
    assert totals.gross == Decimal("1.43")
    assert validate_fa3(render_fa3(invoice, generated_at=GENERATED)) == []


def test_a_consumer_invoice_has_brakid_and_no_address_needed() -> None:
    xml = _render(_invoice(buyer={}, lines=[{"name": "Porada", "quantity": 1, "unit_net_price": "100", "rate": "23"}]))
    assert _all(xml, "fa:Podmiot2/fa:DaneIdentyfikacyjne/fa:BrakID") == ["1"]
    assert _all(xml, "fa:Podmiot2/fa:DaneIdentyfikacyjne/fa:NIP") == []
    assert (_fa(xml)["P_15"], read_facts(xml).buyer_is_consumer, read_facts(xml).buyer_nip) == ("123.00", True, None)


def test_a_named_consumer_keeps_name_and_address() -> None:
    xml = _render(
        _invoice(buyer={"name": "Jan Kowalski", "address": {"line1": "ul. Polna 1", "line2": "00-001 Warszawa"}})
    )
    assert _all(xml, "fa:Podmiot2/fa:DaneIdentyfikacyjne/fa:Nazwa") == ["Jan Kowalski"]
    assert _all(xml, "fa:Podmiot2/fa:Adres/fa:AdresL1") == ["ul. Polna 1"]


def test_exempt_and_out_of_scope_lines() -> None:
    xml = _render(
        _invoice(
            exemption_basis="art. 43 ust. 1 pkt 37 ustawy o VAT",
            lines=[
                {"name": "Prowadzenie ksiąg", "quantity": "1", "unit_net_price": "100", "rate": "23"},
                {"name": "Ubezpieczenie", "quantity": "1", "unit_net_price": "200", "rate": "zw"},
                {"name": "Usługa za granicą", "quantity": "1", "unit_net_price": "300", "rate": "np I"},
                {"name": "Usługa dla podatnika z UE", "quantity": "1", "unit_net_price": "400", "rate": "np II"},
            ],
        )
    )
    fa = _fa(xml)
    assert {k: fa.get(k) for k in ("P_13_1", "P_14_1", "P_13_7", "P_13_8", "P_13_9", "P_15")} == {
        "P_13_1": "100.00",
        "P_14_1": "23.00",
        "P_13_7": "200.00",
        "P_13_8": "300.00",
        "P_13_9": "400.00",
        "P_15": "1023.00",
    }
    assert _all(xml, "fa:Fa/fa:Adnotacje/fa:Zwolnienie/fa:P_19") == ["1"]
    assert _all(xml, "fa:Fa/fa:Adnotacje/fa:Zwolnienie/fa:P_19A") == ["art. 43 ust. 1 pkt 37 ustawy o VAT"]
    assert _all(xml, "fa:Fa/fa:Adnotacje/fa:Zwolnienie/fa:P_19N") == []


EXPECTED_TOTAL = {
    "23": "P_13_1",
    "22": "P_13_1",
    "8": "P_13_2",
    "7": "P_13_2",
    "5": "P_13_3",
    "0 KR": "P_13_6_1",
    "0 WDT": "P_13_6_2",
    "0 EX": "P_13_6_3",
    "zw": "P_13_7",
    "np I": "P_13_8",
    "np II": "P_13_9",
    "oo": "P_13_10",
}


def test_every_supported_rate_has_its_total() -> None:
    assert set(EXPECTED_TOTAL) == set(get_args(Rate))


@pytest.mark.parametrize("rate", list(EXPECTED_TOTAL))
def test_every_supported_rate_renders_valid_fa3(rate: str) -> None:
    extra: dict[str, Any] = {"exemption_basis": "art. 43 ust. 1 pkt 2 ustawy o VAT"} if rate == "zw" else {}
    if rate in {"0 WDT", "np II"}:
        extra["buyer"] = {
            "eu_vat_number": "DE123456789",
            "name": "Kunde GmbH",
            "address": {"country": "DE", "line1": "Hauptstr. 1"},
        }
    xml = _render(_invoice(lines=[{"name": "Towar", "quantity": "2", "unit_net_price": "50", "rate": rate}], **extra))
    fa = _fa(xml)
    assert fa[EXPECTED_TOTAL[rate]] == "100.00"
    assert _all(xml, "fa:Fa/fa:Adnotacje/fa:P_18") == ["1" if rate == "oo" else "2"]


def test_an_eu_buyer_is_identified_by_kodue_and_nrvatue() -> None:
    xml = _render(
        _invoice(
            buyer={
                "eu_vat_number": "de 123456789",
                "name": "Kunde GmbH",
                "address": {"country": "DE", "line1": "Hauptstr. 1"},
            },
            lines=[{"name": "Towar", "quantity": "1", "unit_net_price": "10", "rate": "0 WDT"}],
        )
    )
    assert _all(xml, "fa:Podmiot2/fa:DaneIdentyfikacyjne/fa:KodUE") == ["DE"]
    assert _all(xml, "fa:Podmiot2/fa:DaneIdentyfikacyjne/fa:NrVatUE") == ["123456789"]
    assert (read_facts(xml).buyer_nip, read_facts(xml).buyer_is_consumer) == (None, False)


def test_a_foreign_currency_invoice_states_vat_in_pln() -> None:
    xml = _render(
        _invoice(
            currency="EUR",
            exchange_rate="4.2537",
            lines=[
                {"name": "Consulting", "unit": "h", "quantity": "10", "unit_net_price": "99.99", "rate": "23"},
                {"name": "Książki", "unit": "szt.", "quantity": "4", "unit_net_price": "12.50", "rate": "5"},
            ],
        )
    )
    fa = _fa(xml)
    # 999.90 EUR at 23% = 229.977 -> 229.98 EUR; x 4.2537 = 978.265926 -> 978.27 PLN.
    # 50.00 EUR at 5% = 2.50 EUR; x 4.2537 = 10.63425 -> 10.63 PLN.
    assert {k: fa[k] for k in ("KodWaluty", "P_13_1", "P_14_1", "P_14_1W", "P_13_3", "P_14_3", "P_14_3W", "P_15")} == {
        "KodWaluty": "EUR",
        "P_13_1": "999.90",
        "P_14_1": "229.98",
        "P_14_1W": "978.27",
        "P_13_3": "50.00",
        "P_14_3": "2.50",
        "P_14_3W": "10.63",
        "P_15": "1282.38",
    }
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:KursWaluty") == ["4.2537", "4.2537"]
    assert read_facts(xml).currency == "EUR"


def test_a_correction_states_the_differences_and_the_corrected_invoice() -> None:
    xml = _render(
        _invoice(
            number="KOR/1/02/2026",
            correction={
                "reason": "Zwrot jednej sztuki",
                "effect": 2,
                "invoice_number": "FV/1/01/2026",
                "issue_date": "2026-01-05",
                "ksef_number": KSEF_NUMBER,
            },
            lines=[
                {"name": "Drukarka", "quantity": "2", "unit_net_price": "100", "rate": "23", "before_correction": True},
                {"name": "Drukarka", "quantity": "1", "unit_net_price": "100", "rate": "23"},
            ],
        )
    )
    fa = _fa(xml)
    assert {k: fa[k] for k in ("RodzajFaktury", "PrzyczynaKorekty", "TypKorekty", "P_13_1", "P_14_1", "P_15")} == {
        "RodzajFaktury": "KOR",
        "PrzyczynaKorekty": "Zwrot jednej sztuki",
        "TypKorekty": "2",
        "P_13_1": "-100.00",
        "P_14_1": "-23.00",
        "P_15": "-123.00",
    }
    assert _all(xml, "fa:Fa/fa:DaneFaKorygowanej/fa:NrFaKorygowanej") == ["FV/1/01/2026"]
    assert _all(xml, "fa:Fa/fa:DaneFaKorygowanej/fa:DataWystFaKorygowanej") == ["2026-01-05"]
    assert _all(xml, "fa:Fa/fa:DaneFaKorygowanej/fa:NrKSeF") == ["1"]
    assert _all(xml, "fa:Fa/fa:FaWiersz/fa:StanPrzed") == ["1"]
    facts = read_facts(xml)
    assert (facts.invoice_type, facts.corrected_ksef_number, facts.gross) == ("KOR", KSEF_NUMBER, Decimal("-123.00"))


def test_a_correction_restores_the_vat_each_state_declared() -> None:
    invoice = SalesInvoiceIn.model_validate(
        _invoice(
            correction={"reason": "Korekta ilości", "invoice_number": "FV/2/01/2026", "issue_date": "2026-01-07"},
            lines=[
                {"name": "Śruby", "quantity": "7", "unit_net_price": "0.10", "rate": "23", "before_correction": True},
                {"name": "Śruby", "quantity": "5", "unit_net_price": "0.10", "rate": "23"},
            ],
        )
    )
    totals = invoice_totals(invoice)
    # Before: 0.70 -> VAT 0.161 -> 0.16; after: 0.50 -> 0.115 -> 0.12. The difference is -0.04, where rounding the
    # net difference (-0.20 x 23% = -0.046) would give -0.05 and leave the books a grosz off.
    assert (totals.amounts["P_13_1"], totals.amounts["P_14_1"], totals.gross) == (
        Decimal("-0.20"),
        Decimal("-0.04"),
        Decimal("-0.24"),
    )
    xml = render_fa3(invoice, generated_at=GENERATED)
    assert validate_fa3(xml) == []
    # The corrected invoice was issued outside KSeF: NrKSeFN instead of a number.
    assert _all(xml, "fa:Fa/fa:DaneFaKorygowanej/fa:NrKSeFN") == ["1"]
    assert read_facts(xml).corrected_ksef_numbers == ()


def test_a_discount_correction_may_state_a_negative_price() -> None:
    xml = _render(
        _invoice(
            correction={
                "reason": "Rabat",
                "invoice_number": "FV/3/01/2026",
                "issue_date": "2026-01-09",
                "ksef_number": KSEF_NUMBER,
            },
            lines=[{"name": "Rabat 10%", "quantity": "1", "unit_net_price": "-10.00", "rate": "23"}],
        )
    )
    assert (_fa(xml)["P_13_1"], _fa(xml)["P_14_1"], _fa(xml)["P_15"]) == ("-10.00", "-2.30", "-12.30")


def test_what_the_erp_posts_round_trips_through_the_facts() -> None:
    invoice = SalesInvoiceIn.model_validate_json(
        '{"number": "FV/9/02/2026", "issue_date": "2026-02-11", "seller": {"nip": "526-587-76-35", "name": "Biuro",'
        ' "address": {"line1": "ul. Kępa 332"}}, "buyer": {"nip": "6808208874", "name": "Klient",'
        ' "address": {"line1": "ul. Wójcik 7255"}}, "lines": [{"name": "Usługa", "quantity": 2,'
        ' "unit_net_price": 250.5, "rate": 23}]}'
    )
    facts = read_facts(render_fa3(invoice, generated_at=GENERATED))
    assert (facts.invoice_number, facts.issue_date, facts.seller_nip, facts.buyer_nip, facts.gross) == (
        "FV/9/02/2026",
        date(2026, 2, 11),
        SELLER_NIP,
        BUYER_NIP,
        Decimal("616.23"),
    )
    assert (facts.currency, facts.invoice_type, facts.buyer_is_consumer) == ("PLN", "VAT", False)


def test_the_sale_date_is_left_out_when_it_is_the_issue_date() -> None:
    assert "P_6" not in _fa(_render(_invoice(sale_date="2026-02-10")))


def test_generated_at_is_written_in_utc() -> None:
    warsaw = timezone(timedelta(hours=1))
    xml = render_fa3(
        SalesInvoiceIn.model_validate(_invoice()), generated_at=datetime(2026, 2, 10, 10, 30, tzinfo=warsaw)
    )
    assert _all(xml, "fa:Naglowek/fa:DataWytworzeniaFa") == ["2026-02-10T09:30:00Z"]
    assert _all(xml, "fa:Naglowek/fa:SystemInfo") == ["KSeF Hub"]


def test_generated_at_must_be_aware_and_allowed_by_the_xsd() -> None:
    invoice = SalesInvoiceIn.model_validate(_invoice())
    with pytest.raises(ValueError, match="timezone-aware"):
        render_fa3(invoice, generated_at=datetime(2026, 2, 10, 9, 30))
    with pytest.raises(ValueError, match="2025-09-01"):
        render_fa3(invoice, generated_at=datetime(2025, 8, 31, tzinfo=UTC))


def _error(body: dict[str, Any]) -> tuple[tuple[int | str, ...], str]:
    with pytest.raises(ValidationError) as caught:
        SalesInvoiceIn.model_validate(body)
    [error] = caught.value.errors()
    return tuple(error["loc"]), error["msg"]


def _line(**fields: Any) -> dict[str, Any]:
    return {"name": "Towar", "quantity": "1", "unit_net_price": "10", "rate": "23"} | fields


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (_invoice(seller={**_invoice()["seller"], "nip": "5265877636"}), ("seller", "nip"), "check digit is wrong"),
        (_invoice(buyer={"nip": "123"}), ("buyer", "nip"), "a NIP is 10 digits"),
        (_invoice(lines=[]), ("lines",), "at least 1 item"),
        (_invoice(lines=[_line(rate="17")]), ("lines", 0, "rate"), "'23', '22', '8'"),
        (_invoice(lines=[_line(rate="0")]), ("lines", 0, "rate"), "'0 KR' (domestic)"),
        (_invoice(lines=[_line(rate="np")]), ("lines", 0, "rate"), "'np I' (outside Poland)"),
        (_invoice(lines=[_line(quantity="0")]), ("lines", 0, "quantity"), "greater than 0"),
        (_invoice(lines=[_line(quantity="-1")]), ("lines", 0, "quantity"), "greater than 0"),
        (_invoice(lines=[_line(quantity="1.0000001")]), ("lines", 0, "quantity"), "at most 6 decimal places"),
        (_invoice(lines=[_line(unit_net_price="-5")]), (), "negative unit_net_price is only for a correction"),
        (_invoice(lines=[_line(before_correction=True)]), (), "before_correction lines are only for a correction"),
        (_invoice(issue_date="2026-02-30"), ("issue_date",), "valid date"),
        (_invoice(issue_date="2051-01-01"), ("issue_date",), "from 2006-01-01 to 2050-01-01"),
        (_invoice(currency="EUR"), (), "needs exchange_rate"),
        (_invoice(exchange_rate="4.2"), (), "only for invoices in a foreign currency"),
        (_invoice(currency="euro"), ("currency",), "pattern"),
        (_invoice(lines=[_line(rate="zw")]), (), "need exemption_basis"),
        (_invoice(exemption_basis="art. 43"), (), "only for invoices with 'zw' lines"),
        (_invoice(buyer={}, lines=[_line(rate="oo")]), (), "needs a buyer with a NIP"),
        (_invoice(buyer={"nip": BUYER_NIP}), ("buyer",), "needs a name and an address"),
        (
            _invoice(buyer={"eu_vat_number": "PL6808208874", "name": "X", "address": {"line1": "Y"}}),
            ("buyer", "eu_vat_number"),
            "identified by nip",
        ),
        (_invoice(number="   "), ("number",), "at least 1 character"),
        (
            _invoice(payment={"bank_account": "PL61109010140000071219812875"}),
            ("payment", "bank_account"),
            "check digits",
        ),
        (_invoice(payment={"method": "bitcoin"}), ("payment", "method"), "'cash'"),
        (
            _invoice(
                correction={"reason": "x", "invoice_number": "FV/1", "issue_date": "2026-01-05", "ksef_number": "123"}
            ),
            ("correction", "ksef_number"),
            "not a KSeF number",
        ),
        (_invoice(notes="free text"), ("notes",), "Extra inputs are not permitted"),
    ],
)
def test_invalid_input_is_refused_naming_the_field(
    body: dict[str, Any], loc: tuple[int | str, ...], message: str
) -> None:
    error_loc, error_message = _error(body)
    assert error_loc == loc
    assert message in error_message
