"""Realistic FA(3) purchase invoices for tests and benchmarks, written straight into the store as accepted invoices.

Every document validates against ``schemat_FA(3)_v1-0E.xsd`` (REFERENCE.md §19): element order follows the XSD
sequences exactly (``Adnotacje`` included, §20 item 10), amounts are consistent (``P_13_x`` = sum of the lines at
that rate, ``P_14_x`` = VAT of that sum, ``P_15`` = their total), foreign-currency invoices carry ``KursWaluty``
per line and ``P_14_xW`` (VAT in PLN) as the XSD documentation requires, and corrections (``KOR``) name an invoice
seeded earlier by its KSeF number in ``DaneFaKorygowanej``.

The records look exactly like what an online session produces: the same ``storage_times`` lag, ``invoice/{ksef}``
blob with the exact bytes, hash of those bytes, KSeF number from the shared sequence. Randomness comes from
``sim.rng`` (seeded by ``settings.random_seed``), so a seeded simulator produces the same invoices every time.
"""

from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from itertools import accumulate
from random import Random
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from ksef_sim.crypto import sha256_b64
from ksef_sim.records import FormCode, PartyIdentifier, StoredInvoice, ThirdSubject, storage_times
from ksef_sim.refs import RefType, ksef_number, with_checksum

if TYPE_CHECKING:
    from ksef_sim.state import Sim

FA3_NAMESPACE = "http://crd.gov.pl/wzor/2025/06/25/13775/"
FA3_FORM_CODE = FormCode(systemCode="FA (3)", schemaVersion="1-0E", value="FA")
# DataWytworzeniaFa has minInclusive 2025-09-01T00:00:00Z in the FA(3) XSD: nothing older can be an FA(3).
FA3_EARLIEST = datetime(2025, 9, 1, tzinfo=UTC)
NIP_PATTERN = r"^[1-9]((\d[1-9])|([1-9]\d))\d{7}$"

_CENT = Decimal("0.01")
_NIP_WEIGHTS = (6, 5, 7, 2, 3, 4, 5, 6, 7)


def _warsaw() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Europe/Warsaw")
    except Exception:  # no tz database in a slim image: CET is close enough for issue dates
        from datetime import timezone

        return timezone(timedelta(hours=1), "CET")


WARSAW = _warsaw()


def nip_checksum_ok(nip: str) -> bool:
    if len(nip) != 10 or not nip.isdigit():
        return False
    check = sum(int(d) * w for d, w in zip(nip, _NIP_WEIGHTS, strict=False)) % 11
    return check != 10 and check == int(nip[9])


def random_nip(rng: Random) -> str:
    """A NIP with a valid checksum that also matches the KSeF ``Nip`` pattern (2nd and 3rd digit not both 0)."""
    while True:
        digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(8)]
        if digits[1] == 0 and digits[2] == 0:
            continue
        check = sum(d * w for d, w in zip(digits, _NIP_WEIGHTS, strict=True)) % 11
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def _nrb(rng: Random) -> str:
    """A Polish account number (NRB, 26 digits) with a correct IBAN check pair."""
    bank = rng.choice(("10202498", "10501445", "11402004", "12401037", "10901014", "16001462", "19401076"))
    account = "".join(str(rng.randint(0, 9)) for _ in range(16))
    check = 98 - int(bank + account + "252100") % 97  # "PL" = 25 21, check digits "00"
    return f"{check:02d}{bank}{account}"


# --- realistic Polish parties ---------------------------------------------------------------------------------

_SURNAMES = (
    "Kowalski", "Nowak", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński", "Szymański",
    "Woźniak", "Dąbrowski", "Kozłowski", "Jankowski", "Mazur", "Kwiatkowski", "Krawczyk", "Piotrowski", "Grabowski",
    "Pawłowski", "Michalski", "Król", "Wieczorek", "Jabłoński", "Wróbel", "Majewski", "Olszewski", "Stępień",
)  # fmt: skip
_FIRST_NAMES = ("Jan", "Anna", "Piotr", "Katarzyna", "Tomasz", "Agnieszka", "Marek", "Magdalena", "Paweł", "Ewa")
_WORDS = (
    "Merkury", "Bud-Mar", "Elektro", "Agro", "Instal", "Trans", "Polmet", "Drew", "Kompleks", "Sigma", "Orion",
    "Wektor", "Proxima", "Delta", "Horyzont", "Mazowsze", "Bałtyk", "Tatry", "Warta", "Wisła", "Kopernik", "Jantar",
)  # fmt: skip
_TRADES = ("Usługi Remontowe", "Transport Drogowy", "Biuro Rachunkowe", "Hurtownia Spożywcza", "Serwis Komputerowy")
_CITIES = (
    ("Warszawa", "00"), ("Kraków", "30"), ("Łódź", "90"), ("Wrocław", "50"), ("Poznań", "60"), ("Gdańsk", "80"),
    ("Szczecin", "70"), ("Bydgoszcz", "85"), ("Lublin", "20"), ("Białystok", "15"), ("Katowice", "40"),
    ("Gdynia", "81"), ("Częstochowa", "42"), ("Radom", "26"), ("Rzeszów", "35"), ("Toruń", "87"), ("Kielce", "25"),
    ("Olsztyn", "10"), ("Opole", "45"), ("Zielona Góra", "65"),
)  # fmt: skip
_STREETS = (
    "ul. Marszałkowska", "ul. Długa", "ul. Polna", "ul. Leśna", "ul. Słoneczna", "ul. Krótka", "ul. Szkolna",
    "ul. Ogrodowa", "ul. Lipowa", "ul. Kościuszki", "ul. Mickiewicza", "al. Jana Pawła II", "ul. Piłsudskiego",
    "ul. Przemysłowa", "ul. Fabryczna", "ul. Składowa", "ul. Żeromskiego", "ul. 3 Maja",
)  # fmt: skip
_ASCII = str.maketrans("ąćęłńóśźżĄĆĘŁŃÓŚŹŻ", "acelnoszzACELNOSZZ")


@dataclass(frozen=True)
class Party:
    nip: str
    name: str
    street: str  # AdresL1
    city: str  # AdresL2: postal code and town
    email: str
    phone: str
    account: str


def _company_name(rng: Random) -> str:
    pattern = rng.randrange(6)
    if pattern == 0:
        return f"{rng.choice(_SURNAMES)} {rng.choice(('Sp. z o.o.', 'Sp. k.', 'S.A.'))}"
    if pattern == 1:
        return f"{rng.choice(('PHU', 'P.P.H.U.', 'F.H.U.', 'Zakład Usługowy'))} {rng.choice(_WORDS)}"
    if pattern == 2:
        return f"{rng.choice(_WORDS)}{rng.choice(('pol', 'tex', 'bud', 'med'))} Sp. z o.o."
    if pattern == 3:
        return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_SURNAMES)} {rng.choice(_TRADES)}"
    if pattern == 4:
        return f"{rng.choice(_SURNAMES)} & Synowie Sp. j."
    return f"Przedsiębiorstwo Handlowe {rng.choice(_WORDS)} S.A."


def make_party(rng: Random, nip: str | None = None, name: str | None = None) -> Party:
    name = name or _company_name(rng)
    town, postal = rng.choice(_CITIES)
    slug = "".join(ch for ch in name.split(" Sp.")[0].translate(_ASCII).lower() if ch.isalnum())[:24] or "firma"
    return Party(
        nip=nip or random_nip(rng),
        name=name,
        street=f"{rng.choice(_STREETS)} {rng.randint(1, 180)}"
        + (f" m. {rng.randint(1, 40)}" if rng.random() < 0.3 else ""),
        city=f"{postal}-{rng.randint(1, 999):03d} {town}",
        email=f"{rng.choice(('biuro', 'faktury', 'ksiegowosc', 'kontakt'))}@{slug}.pl",
        phone=f"{rng.randint(12, 94)}{rng.randint(1000000, 9999999)}",
        account=_nrb(rng),
    )


# --- goods and services ------------------------------------------------------------------------------------------

# (P_7, P_8A, min unit price, max unit price, P_12, fractional quantity?)
_CATALOG: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("Papier ksero A4 80 g/m², ryza 500 ark.", "szt.", "18.50", "29.90", "23", False),
    ("Toner do drukarki laserowej", "szt.", "149.00", "459.00", "23", False),
    ("Usługa serwisowa IT", "godz.", "120.00", "260.00", "23", True),
    ("Licencja oprogramowania – abonament miesięczny", "szt.", "49.00", "899.00", "23", False),
    ("Energia elektryczna czynna", "kWh", "0.62", "1.18", "23", True),
    ("Usługa transportowa", "km", "2.60", "6.40", "23", True),
    ("Materiały biurowe – zestaw", "kpl.", "35.00", "210.00", "23", False),
    ("Wynajem powierzchni magazynowej", "m-c", "1800.00", "9500.00", "23", False),
    ("Kawa ziarnista 1 kg", "szt.", "54.00", "119.00", "23", False),
    ("Olej napędowy ON", "l", "5.40", "6.90", "23", True),
    ("Pieczywo mieszane", "kg", "6.20", "14.80", "5", True),
    ("Mleko UHT 3,2% 1 l", "szt.", "2.90", "4.60", "5", False),
    ("Książka – literatura fachowa", "szt.", "39.00", "189.00", "5", False),
    ("Usługa cateringowa", "os.", "28.00", "85.00", "8", False),
    ("Usługa noclegowa", "doba", "189.00", "460.00", "8", False),
    ("Roboty budowlane – remont lokalu mieszkalnego", "usł.", "1500.00", "18500.00", "8", False),
    ("Szkolenie okresowe BHP", "os.", "150.00", "390.00", "zw", False),
    ("Badania okresowe pracowników", "os.", "90.00", "260.00", "zw", False),
    ("Sprzęt komputerowy dla placówki oświatowej", "szt.", "1900.00", "5200.00", "0 KR", False),
)
_CATALOG_WEIGHTS = tuple(accumulate((6, 4, 5, 4, 3, 4, 4, 2, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1)))

# P_12 value -> (suffix of the P_13_x/P_14_x fields, VAT rate or None when there is no P_14 for it)
_RATES: dict[str, tuple[str, Decimal | None]] = {
    "23": ("1", Decimal("0.23")),
    "8": ("2", Decimal("0.08")),
    "5": ("3", Decimal("0.05")),
    "0 KR": ("6_1", None),
    "zw": ("7", None),
}
_RATE_ORDER = ("23", "8", "5", "0 KR", "zw")  # the XSD's order of P_13_1 … P_13_7
_CURRENCIES = (("EUR", "4.18", "4.36"), ("EUR", "4.18", "4.36"), ("EUR", "4.18", "4.36"), ("USD", "3.62", "4.12"))
_CORRECTION_REASONS = ("Zwrot części towaru", "Udzielony rabat posprzedażowy", "Błędna cena jednostkowa")


def _money(value: Decimal) -> Decimal:
    result = value.quantize(_CENT, rounding=ROUND_HALF_UP)
    return result if result else Decimal("0.00")  # never "-0.00"


def _num(value: Decimal) -> str:
    """TIlosci/TKwotowy2 text: no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


@dataclass(frozen=True)
class Line:
    description: str
    unit: str
    quantity: Decimal
    unit_price: Decimal
    rate: str  # P_12

    @property
    def net(self) -> Decimal:
        return _money(self.quantity * self.unit_price)


@dataclass
class Totals:
    net_by_rate: dict[str, Decimal] = field(default_factory=dict)

    def add(self, rate: str, amount: Decimal) -> None:
        self.net_by_rate[rate] = self.net_by_rate.get(rate, Decimal("0.00")) + amount

    def vat(self, rate: str) -> Decimal | None:
        multiplier = _RATES[rate][1]
        return None if multiplier is None else _money(self.net_by_rate[rate] * multiplier)

    @property
    def net(self) -> Decimal:
        return _money(sum(self.net_by_rate.values(), Decimal("0")))

    @property
    def vat_total(self) -> Decimal:
        return _money(sum(((self.vat(r) or Decimal("0")) for r in self.net_by_rate), Decimal("0")))


@dataclass(frozen=True)
class Original:
    """What a correction needs to know about the invoice it corrects."""

    ksef_number: str
    invoice_number: str
    issue_date: date
    lines: tuple[Line, ...]
    currency: str
    exchange_rate: Decimal | None


@dataclass(frozen=True)
class GeneratedInvoice:
    xml: bytes
    invoice_number: str
    issue_date: date
    invoice_type: str  # Vat | Kor
    currency: str
    net_amount: Decimal
    vat_amount: Decimal  # in PLN, as InvoiceMetadata.vatAmount
    gross_amount: Decimal
    lines: tuple[Line, ...]
    exchange_rate: Decimal | None
    third_subject: ThirdSubject | None
    corrected: Original | None


def random_lines(rng: Random) -> tuple[Line, ...]:
    count = rng.choice((1, 1, 1, 2, 2, 3, 4, 6))
    lines = []
    for _ in range(count):
        index = bisect(_CATALOG_WEIGHTS, rng.random() * _CATALOG_WEIGHTS[-1])
        description, unit, low, high, rate, fractional = _CATALOG[index]
        low_d, high_d = Decimal(low), Decimal(high)
        price = _money(low_d + (high_d - low_d) * Decimal(rng.randint(0, 1000)) / 1000)
        if fractional:
            quantity = Decimal(rng.randint(10, 4000)) / 10 if unit != "kWh" else Decimal(rng.randint(100, 9000))
        else:
            quantity = Decimal(rng.choice((1, 1, 1, 2, 3, 5, 10, 12, 20, 50)))
        lines.append(Line(description, unit, quantity, price, rate))
    return tuple(lines)


_INDENT = tuple("  " * depth for depth in range(8))


class _Xml:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n']

    def raw(self, text: str) -> None:
        self.parts.append(text)

    def el(self, depth: int, name: str, value: object) -> None:
        text = escape(value) if isinstance(value, str) else str(value)
        self.parts.append(f"{_INDENT[depth]}<{name}>{text}</{name}>\n")

    def open(self, depth: int, name: str) -> None:
        self.parts.append(f"{_INDENT[depth]}<{name}>\n")

    def close(self, depth: int, name: str) -> None:
        self.parts.append(f"{_INDENT[depth]}</{name}>\n")

    def address(self, depth: int, party: Party) -> None:
        self.open(depth, "Adres")
        self.el(depth + 1, "KodKraju", "PL")
        self.el(depth + 1, "AdresL1", party.street)
        self.el(depth + 1, "AdresL2", party.city)
        self.close(depth, "Adres")

    def contact(self, depth: int, party: Party) -> None:
        self.open(depth, "DaneKontaktowe")
        self.el(depth + 1, "Email", party.email)
        self.el(depth + 1, "Telefon", party.phone)
        self.close(depth, "DaneKontaktowe")

    def bytes(self) -> bytes:
        return "".join(self.parts).encode("utf-8")


@lru_cache(maxsize=4096)
def _party_block(tag: str, party: Party, role: int | None) -> str:
    """Podmiot1/2/3 in their XSD sequences; cached because a seed run reuses a handful of parties."""
    x = _Xml()
    x.parts.clear()
    x.open(1, tag)
    x.open(2, "DaneIdentyfikacyjne")
    x.el(3, "NIP", party.nip)
    x.el(3, "Nazwa", party.name)
    x.close(2, "DaneIdentyfikacyjne")
    x.address(2, party)
    if tag == "Podmiot1":
        x.contact(2, party)
    elif tag == "Podmiot2":
        x.el(2, "JST", 2)  # FA(3) requires both flags for the buyer: 2 = not a local-government unit / VAT group
        x.el(2, "GV", 2)
    else:
        x.el(2, "Rola", role)
    x.close(1, tag)
    return "".join(x.parts)


def _annotations(exempt: bool) -> str:
    """Adnotacje in the XSD's fixed sequence (P_16, P_17, P_18, P_18A, Zwolnienie, NoweSrodkiTransportu, P_23,
    PMarzy; REFERENCE.md §19)."""
    x = _Xml()
    x.parts.clear()
    x.open(2, "Adnotacje")
    for name in ("P_16", "P_17", "P_18", "P_18A"):
        x.el(3, name, 2)
    x.open(3, "Zwolnienie")
    if exempt:
        x.el(4, "P_19", 1)
        x.el(4, "P_19A", "art. 43 ust. 1 ustawy o VAT")
    else:
        x.el(4, "P_19N", 1)
    x.close(3, "Zwolnienie")
    x.open(3, "NoweSrodkiTransportu")
    x.el(4, "P_22N", 1)
    x.close(3, "NoweSrodkiTransportu")
    x.el(3, "P_23", 2)
    x.open(3, "PMarzy")
    x.el(4, "P_PMarzyN", 1)
    x.close(3, "PMarzy")
    x.close(2, "Adnotacje")
    return "".join(x.parts)


_ANNOTATIONS = _annotations(exempt=False)
_ANNOTATIONS_EXEMPT = _annotations(exempt=True)


def _line_xml(x: _Xml, number: int, line: Line, rate: Decimal | None, before: bool) -> None:
    x.open(2, "FaWiersz")
    x.el(3, "NrWierszaFa", number)
    x.el(3, "P_7", line.description)
    x.el(3, "P_8A", line.unit)
    x.el(3, "P_8B", _num(line.quantity))
    x.el(3, "P_9A", _num(line.unit_price))
    x.el(3, "P_11", line.net)
    x.el(3, "P_12", line.rate)
    if rate is not None:
        x.el(3, "KursWaluty", _num(rate))
    if before:
        x.el(3, "StanPrzed", 1)
    x.close(2, "FaWiersz")


def render_invoice(
    *,
    seller: Party,
    buyer: Party,
    number: str,
    issue_date: date,
    created_at: datetime,
    lines: tuple[Line, ...],
    currency: str = "PLN",
    exchange_rate: Decimal | None = None,
    third_subject: tuple[Party, int] | None = None,
    correction: tuple[Original, Line, Line, str, int] | None = None,
    due_days: int = 14,
) -> GeneratedInvoice:
    """One FA(3) document. ``correction`` = (original, line before, line after, reason, TypKorekty)."""
    foreign = currency != "PLN"
    totals = Totals()
    if correction is None:
        for line in lines:
            totals.add(line.rate, line.net)
    else:
        _, before, after, _, _ = correction
        totals.add(after.rate, after.net - before.net)

    x = _Xml()
    x.raw(
        '<Faktura xmlns:etd="http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/"'
        f' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="{FA3_NAMESPACE}">\n'
    )
    x.open(1, "Naglowek")
    x.raw('    <KodFormularza kodSystemowy="FA (3)" wersjaSchemy="1-0E">FA</KodFormularza>\n')
    x.el(2, "WariantFormularza", 3)
    x.el(2, "DataWytworzeniaFa", created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    x.el(2, "SystemInfo", "KSeF Hub simulator seed")
    x.close(1, "Naglowek")

    x.raw(_party_block("Podmiot1", seller, None))
    x.raw(_party_block("Podmiot2", buyer, None))
    third: ThirdSubject | None = None
    if third_subject is not None:
        party, role = third_subject
        x.raw(_party_block("Podmiot3", party, role))
        third = ThirdSubject(identifier=PartyIdentifier(type="Nip", value=party.nip), name=party.name, role=role)

    x.open(1, "Fa")
    x.el(2, "KodWaluty", currency)
    x.el(2, "P_1", issue_date.isoformat())
    x.el(2, "P_1M", seller.city.split(" ", 1)[1])
    x.el(2, "P_2", number)
    if correction is None:
        x.el(2, "P_6", issue_date.isoformat())
    vat_pln = Decimal("0.00")
    for rate in _RATE_ORDER:
        if rate not in totals.net_by_rate:
            continue
        suffix, _ = _RATES[rate]
        x.el(2, f"P_13_{suffix}", _money(totals.net_by_rate[rate]))
        vat = totals.vat(rate)
        if vat is not None:
            x.el(2, f"P_14_{suffix}", vat)
            if foreign:
                assert exchange_rate is not None
                vat_w = _money(vat * exchange_rate)
                x.el(2, f"P_14_{suffix}W", vat_w)
                vat_pln += vat_w
            else:
                vat_pln += vat
    gross = _money(totals.net + totals.vat_total)
    x.el(2, "P_15", gross)

    x.raw(_ANNOTATIONS_EXEMPT if "zw" in totals.net_by_rate else _ANNOTATIONS)

    if correction is None:
        x.el(2, "RodzajFaktury", "VAT")
        for index, line in enumerate(lines, start=1):
            _line_xml(x, index, line, exchange_rate, before=False)
    else:
        original, before, after, reason, correction_type = correction
        x.el(2, "RodzajFaktury", "KOR")
        x.el(2, "PrzyczynaKorekty", reason)
        x.el(2, "TypKorekty", correction_type)
        x.open(2, "DaneFaKorygowanej")
        x.el(3, "DataWystFaKorygowanej", original.issue_date.isoformat())
        x.el(3, "NrFaKorygowanej", original.invoice_number)
        x.el(3, "NrKSeF", 1)
        x.el(3, "NrKSeFFaKorygowanej", original.ksef_number)
        x.close(2, "DaneFaKorygowanej")
        # Before/after rows with their own numbering, the "before" one flagged StanPrzed (FaWiersz/StanPrzed doc).
        _line_xml(x, 1, before, exchange_rate, before=True)
        _line_xml(x, 2, after, exchange_rate, before=False)

    if correction is None and gross > 0:
        x.open(2, "Platnosc")
        x.open(3, "TerminPlatnosci")
        x.el(4, "Termin", (issue_date + timedelta(days=due_days)).isoformat())
        x.close(3, "TerminPlatnosci")
        x.el(3, "FormaPlatnosci", 6)
        x.open(3, "RachunekBankowy")
        x.el(4, "NrRB", seller.account)
        x.el(4, "OpisRachunku", currency)
        x.close(3, "RachunekBankowy")
        x.close(2, "Platnosc")
    x.close(1, "Fa")
    x.raw("</Faktura>\n")

    return GeneratedInvoice(
        xml=x.bytes(),
        invoice_number=number,
        issue_date=issue_date,
        invoice_type="Vat" if correction is None else "Kor",
        currency=currency,
        net_amount=totals.net,
        vat_amount=_money(vat_pln),
        gross_amount=gross,
        lines=lines if correction is None else (correction[1], correction[2]),
        exchange_rate=exchange_rate,
        third_subject=third,
        corrected=None if correction is None else correction[0],
    )


def correction_rows(rng: Random, original: Original) -> tuple[Line, Line, str]:
    """(before, after, reason) for a correction of one line of ``original`` that lowers its value."""
    before = rng.choice(original.lines)
    reason = rng.choice(_CORRECTION_REASONS)
    if reason == _CORRECTION_REASONS[0] and before.quantity >= 2:
        returned = max(Decimal(1), (before.quantity * Decimal(rng.randint(10, 50)) / 100).to_integral_value())
        after = Line(before.description, before.unit, before.quantity - returned, before.unit_price, before.rate)
    else:
        discount = Decimal(rng.randint(5, 30)) / 100
        price = _money(before.unit_price * (1 - discount))
        after = Line(before.description, before.unit, before.quantity, price, before.rate)
    if after.net == before.net:  # a price too small to lower by a cent: credit the whole line
        after = Line(before.description, before.unit, Decimal(0), before.unit_price, before.rate)
    return before, after, reason


# --- seeding into the store -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedOptions:
    buyer_nip: str
    count: int
    sellers: int = 25
    start: datetime | None = None  # window start; default: now - spread_days
    spread_days: float = 30.0
    subject3_nip: str | None = None
    corrections: float = 0.1  # share of invoices that are KOR
    foreign_currency_share: float = 0.1
    subject3_share: float | None = None  # default 0.25 with subject3_nip, else 0.1 (random third parties)
    buyer_name: str | None = None
    # Issued this many days before they were sent (P_1 earlier than the sending day): KSeF marks such invoices
    # Offline (REFERENCE.md §8) — what a purchase buffer sees as an invoice arriving after its month was closed.
    issued_days_before: int = 0


@dataclass
class SeedResult:
    created: int = 0
    corrections: int = 0
    foreign_currency: int = 0
    with_subject3: int = 0
    sellers: list[str] = field(default_factory=list)
    ksef_numbers: list[str] = field(default_factory=list)
    first_acquisition: datetime | None = None
    last_acquisition: datetime | None = None


class SeedError(ValueError):
    """Options that cannot produce valid invoices (the operator API answers 422 with the message)."""


def _reference(rng: Random, kind: RefType, at: datetime) -> str:
    # refs.reference_number draws from ``secrets``; seeding must be reproducible, so draw from the seeded rng.
    return with_checksum(f"{at:%Y%m%d}-{kind.value}-{rng.getrandbits(40):010X}-{rng.getrandbits(40):010X}")


def seed_invoices(sim: Sim, options: SeedOptions) -> SeedResult:
    """Write ``options.count`` accepted purchase invoices of ``options.buyer_nip`` into ``sim.store``."""
    now = sim.clock.now()
    if options.count < 0 or options.sellers < 1 or options.spread_days < 0:
        raise SeedError("count must be >= 0, sellers >= 1 and spreadDays >= 0")
    spread = timedelta(days=options.spread_days)
    start = options.start.astimezone(UTC) if options.start is not None else now - spread
    if start > now:
        raise SeedError(f"start {start.isoformat()} is after the simulator's now {now.isoformat()}")
    if start < FA3_EARLIEST:
        raise SeedError("start must not be before 2025-09-01T00:00:00Z (the earliest FA(3) DataWytworzeniaFa)")
    end = min(start + spread, now)
    span_s = (end - start).total_seconds()

    rng = sim.rng
    settings = sim.settings
    store = sim.store
    run = store.next_sequence("seed-run")
    buyer = make_party(Random(int(options.buyer_nip)), nip=options.buyer_nip, name=options.buyer_name)
    sellers = [make_party(rng) for _ in range(options.sellers)]
    # A few suppliers issue most invoices, as in real purchase ledgers.
    seller_weights = tuple(accumulate(1.0 / (i + 1) ** 0.8 for i in range(len(sellers))))
    subject3 = make_party(Random(int(options.subject3_nip)), nip=options.subject3_nip) if options.subject3_nip else None
    subject3_share = options.subject3_share
    if subject3_share is None:
        subject3_share = 0.25 if subject3 is not None else 0.1

    counters: dict[str, int] = {}
    history: dict[str, list[Original]] = {}
    sessions: dict[tuple[str, date], str] = {}
    result = SeedResult(sellers=[s.nip for s in sellers])
    offsets = sorted(rng.random() * span_s for _ in range(options.count))

    with store.batch():
        for offset in offsets:
            acquisition = start + timedelta(seconds=offset)
            invoicing = acquisition - timedelta(seconds=0.2 + rng.random() * 4)
            created_at = max(invoicing - timedelta(seconds=rng.randint(5, 3600)), FA3_EARLIEST)
            # P_1 on the day it was sent (Warsaw), so the invoice is genuinely Online (REFERENCE.md §8).
            sent_on = invoicing.astimezone(WARSAW).date()
            issue_date = sent_on - timedelta(days=options.issued_days_before)
            seller = sellers[bisect(seller_weights, rng.random() * seller_weights[-1])]
            counter = counters[seller.nip] = counters.get(seller.nip, 0) + 1

            third: tuple[Party, int] | None = None
            if rng.random() < subject3_share:
                if subject3 is not None:
                    third = (subject3, rng.choice((2, 4, 6)))
                else:
                    third = (make_party(rng), rng.choice((1, 2, 4, 6)))

            earlier = history.get(seller.nip)
            if earlier and rng.random() < options.corrections:
                original = rng.choice(earlier)
                before, after, reason = correction_rows(rng, original)
                generated = render_invoice(
                    seller=seller,
                    buyer=buyer,
                    number=f"KOR/{issue_date:%Y/%m}/{run:02d}{counter:05d}",
                    issue_date=issue_date,
                    created_at=created_at,
                    lines=(),
                    currency=original.currency,
                    exchange_rate=original.exchange_rate,
                    third_subject=third,
                    correction=(original, before, after, reason, rng.choice((1, 2, 2, 2))),
                )
                result.corrections += 1
            else:
                currency, rate = "PLN", None
                if rng.random() < options.foreign_currency_share:
                    currency, low, high = rng.choice(_CURRENCIES)
                    rate = Decimal(low) + (Decimal(high) - Decimal(low)) * Decimal(rng.randint(0, 10000)) / 10000
                generated = render_invoice(
                    seller=seller,
                    buyer=buyer,
                    number=f"FV/{issue_date:%Y/%m}/{run:02d}{counter:05d}",
                    issue_date=issue_date,
                    created_at=created_at,
                    lines=random_lines(rng),
                    currency=currency,
                    exchange_rate=rate,
                    third_subject=third,
                    due_days=rng.choice((7, 14, 14, 21, 30, 60)),
                )
            if generated.currency != "PLN":
                result.foreign_currency += 1
            if third is not None:
                result.with_subject3 += 1

            # Dated like the sending side's numbers: the day it was accepted for processing, in Warsaw (§10).
            number = ksef_number(seller.nip, invoicing.astimezone(WARSAW), store.next_sequence("ksef"))
            session_key = (seller.nip, acquisition.date())
            session = sessions.get(session_key)
            if session is None:
                session = sessions[session_key] = _reference(rng, RefType.ONLINE_SESSION, invoicing)
            permanent, indexed = storage_times(
                acquisition, settings.permanent_storage_delay_s, settings.permanent_storage_jitter_s, rng.random()
            )
            record = StoredInvoice(
                ksef_number=number,
                invoice_number=generated.invoice_number,
                issue_date=generated.issue_date,
                invoicing_date=invoicing,
                acquisition_date=acquisition,
                permanent_storage_date=permanent,
                indexed_at=indexed,
                seller_nip=seller.nip,
                seller_name=seller.name,
                buyer_identifier=PartyIdentifier(type="Nip", value=buyer.nip),
                buyer_name=buyer.name,
                net_amount=generated.net_amount,
                vat_amount=generated.vat_amount,
                gross_amount=generated.gross_amount,
                currency=generated.currency,
                invoicing_mode="Offline" if issue_date < sent_on else "Online",
                invoice_type=generated.invoice_type,
                form_code=FA3_FORM_CODE,
                invoice_hash=sha256_b64(generated.xml),
                invoice_size=len(generated.xml),
                corrected_invoice_ksef_number=generated.corrected.ksef_number if generated.corrected else None,
                third_subjects=[generated.third_subject] if generated.third_subject else [],
                session_reference_number=session,
                invoice_reference_number=_reference(rng, RefType.SESSION_INVOICE, invoicing),
                context_type="Nip",
                context_value=seller.nip,
            )
            store.put(record)
            store.put_blob(record.blob_name, generated.xml)

            if generated.invoice_type == "Vat":
                kept = history.setdefault(seller.nip, [])
                original_ref = Original(
                    number,
                    generated.invoice_number,
                    generated.issue_date,
                    generated.lines,
                    generated.currency,
                    generated.exchange_rate,
                )
                kept.append(original_ref)
                if len(kept) > 32:
                    del kept[0]
            result.created += 1
            if len(result.ksef_numbers) < 100:
                result.ksef_numbers.append(number)
            result.first_acquisition = result.first_acquisition or acquisition
            result.last_acquisition = acquisition
    return result
