"""The JSON sales invoice an ERP posts, and its rendering to FA(3) XML (REFERENCE.md §19).

``SalesInvoiceIn`` covers the common subset of FA(3): a domestic seller, a buyer with a Polish NIP, an EU VAT
number or none at all (a consumer: ``BrakID``), priced lines at the rates of ``TStawkaPodatku``, an optional payment,
and corrections (``KOR``) of an earlier invoice. Field names are English; each ``description`` names the FA(3)
element it fills. The model rejects what the XSD would reject (and a little more: NIP checksums, which KSeF checks
on PROD only, §8), so an ERP hears about a bad invoice in the response to its POST instead of as an asynchronous 450.

Amounts (``render_fa3``, ``invoice_totals``) are ``Decimal`` rounded half-up to grosze:

- a line's net value ``P_11`` = quantity * unit net price, rounded per line;
- the net per rate ``P_13_x`` = the sum of its lines' ``P_11``;
- the VAT per rate ``P_14_x`` = net per rate * rate, rounded once per rate (art. 106e ust. 1 pkt 14: the tax on
  the sum of net values per rate, not a sum of per-line VAT);
- for a foreign currency, ``P_14_xW`` = ``P_14_x`` * ``exchange_rate`` rounded (VAT in PLN, art. 106e ust. 11), and
  the rate is stated on every line as ``KursWaluty``;
- gross ``P_15`` = every ``P_13_x`` + every ``P_14_x``.

A correction lists the lines as they were (``before_correction``, FA(3) ``StanPrzed``) and as they are now; its
totals are the differences: net after - net before per rate, and VAT after - VAT before computed from each state's
rounded per-rate VAT, so the correction restores exactly what the corrected invoice declared. Lines that state only
a difference (a discount) may have negative prices on a correction.

Not covered (the ERP sends its own FA(3) XML for these): advance and settlement invoices (ZAL, ROZ, KOR_ZAL,
KOR_ROZ), gross-price lines (``P_9B``), third parties (``Podmiot3``), non-EU foreign buyer identifiers (``NrID``),
margin schemes, new means of transport, the taxi lump sum (rates 4 and 3) and self-invoicing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Final, Literal, Self

from lxml import etree
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ksef_gateway.sales.validation import FA3_NAMESPACE

Rate = Literal["23", "22", "8", "7", "5", "0 KR", "0 WDT", "0 EX", "zw", "oo", "np I", "np II"]
PaymentMethod = Literal["cash", "card", "voucher", "cheque", "credit", "transfer", "mobile"]

# TStawkaPodatku value → (P_13_x/P_14_x suffix, VAT rate). Rates sharing a suffix share the Fa totals: 23 and 22 are
# both "stawka podstawowa" (P_13_1), 8 and 7 "obniżona pierwsza" (P_13_2), 5 "obniżona druga" (P_13_3).
_RATES: Final[dict[str, tuple[str, Decimal | None]]] = {
    "23": ("1", Decimal("0.23")),
    "22": ("1", Decimal("0.22")),
    "8": ("2", Decimal("0.08")),
    "7": ("2", Decimal("0.07")),
    "5": ("3", Decimal("0.05")),
    "0 KR": ("6_1", None),  # 0% domestic
    "0 WDT": ("6_2", None),  # 0% intra-Community supply
    "0 EX": ("6_3", None),  # 0% export
    "zw": ("7", None),  # exempt
    "np I": ("8", None),  # outside the territory, other than art. 100 ust. 1 pkt 4
    "np II": ("9", None),  # services of art. 100 ust. 1 pkt 4 (EU B2B services)
    "oo": ("10", None),  # domestic reverse charge
}
# The order of the optional per-rate totals in Fa's sequence (P_13_4/P_13_5 are not produced).
_TOTAL_ORDER: Final = ("1", "2", "3", "6_1", "6_2", "6_3", "7", "8", "9", "10")
_PAYMENT_METHODS: Final[dict[str, int]] = {
    "cash": 1,
    "card": 2,
    "voucher": 3,
    "cheque": 4,
    "credit": 5,
    "transfer": 6,
    "mobile": 7,
}
_NIP_WEIGHTS: Final = (6, 5, 7, 2, 3, 4, 5, 6, 7)
# TNumerKSeF in the FA(3) XSD.
_KSEF_NUMBER: Final = re.compile(
    r"([1-9]((\d[1-9])|([1-9]\d))\d{7}|M\d{9}|[A-Z]{3}\d{7})-(20[2-9][0-9]|2[1-9][0-9]{2}|[3-9][0-9]{3})"
    r"(0[1-9]|1[0-2])(0[1-9]|[1-2][0-9]|3[0-1])-([0-9A-F]{6})-?([0-9A-F]{6})-([0-9A-F]{2})"
)
_GROSZ: Final = Decimal("0.01")
# TDataT bounds (P_1, P_6, DataWystFaKorygowanej) and TData bounds (payment dates).
_TDATAT: Final = (date(2006, 1, 1), date(2050, 1, 1))
_TDATA: Final = (date(2016, 7, 1), date(2050, 1, 1))
# DataWytworzeniaFa's minInclusive in TNaglowek.
_FIRST_GENERATION: Final = datetime(2025, 9, 1, tzinfo=UTC)


def round_money(amount: Decimal) -> Decimal:
    """Half-up to grosze, the rounding of Polish VAT amounts."""
    return amount.quantize(_GROSZ, rounding=ROUND_HALF_UP)


def _check_nip(value: str) -> str:
    digits = value.replace("-", "").replace(" ", "")
    if not re.fullmatch(r"\d{10}", digits):
        raise ValueError("a NIP is 10 digits (dashes and spaces are ignored)")
    checksum = sum(int(d) * w for d, w in zip(digits, _NIP_WEIGHTS, strict=False)) % 11
    if checksum == 10 or checksum != int(digits[9]):
        raise ValueError("the NIP's check digit is wrong")
    # TNrNIP additionally excludes a 0 in the first place and "00" in the second and third.
    if not re.fullmatch(r"[1-9]((\d[1-9])|([1-9]\d))\d{7}", digits):
        raise ValueError("not a NIP that KSeF accepts")
    return digits


def _check_ksef_number(value: str) -> str:
    if not _KSEF_NUMBER.fullmatch(value):
        raise ValueError("not a KSeF number (NIP-YYYYMMDD-XXXXXX-XXXXXX-XX)")
    return value


def _in_range(bounds: tuple[date, date]) -> AfterValidator:
    def check(value: date) -> date:
        if not bounds[0] <= value <= bounds[1]:
            raise ValueError(f"FA(3) accepts dates from {bounds[0]} to {bounds[1]}")
        return value

    return AfterValidator(check)


def _decimals(places: int) -> AfterValidator:
    def check(value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("must be a finite number")
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            raise ValueError(f"at most {places} decimal places")
        return value

    return AfterValidator(check)


def _rate_alias(value: object) -> object:
    # JSON numbers (23) are the ERP's most likely spelling of "23". FA(2)'s "0" and "np" split in FA(3) into values
    # with different totals (P_13_6_1/2/3, P_13_8/9), so they are refused with the choice rather than guessed.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value == "0":
        raise ValueError("FA(3) splits rate 0 into '0 KR' (domestic), '0 WDT' (intra-Community) and '0 EX' (export)")
    if value == "np":
        raise ValueError("FA(3) splits 'np' into 'np I' (outside Poland) and 'np II' (art. 100 ust. 1 pkt 4 services)")
    return value


def _bank_account(value: str) -> str:
    account = value.replace(" ", "").replace("-", "").upper()
    if re.fullmatch(r"\d{26}", account):  # a Polish NRB is an IBAN without "PL"
        iban = "PL" + account
    elif re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{6,30}", account):
        iban = account
    else:
        raise ValueError("a bank account is an IBAN or a 26-digit Polish NRB")
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    if int(digits) % 97 != 1:
        raise ValueError("the bank account's check digits are wrong")
    return account


# TKodyKrajowUE without PL (a Polish buyer is identified by NIP); Greece is EL, Northern Ireland XI.
_EU_PREFIXES: Final = frozenset(
    {"AT", "BE", "BG", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "EL", "HR", "HU", "IE"}
    | {"IT", "LV", "LT", "LU", "MT", "NL", "PT", "RO", "SK", "SI", "ES", "SE", "XI"}
)


def _eu_vat_number(value: str) -> str:
    number = value.replace(" ", "").replace("-", "").upper()
    if number.startswith("PL"):
        raise ValueError("a Polish buyer is identified by nip")
    if number[:2] not in _EU_PREFIXES or not re.fullmatch(r"[0-9A-Z+*]{1,12}", number[2:]):
        raise ValueError("an EU VAT number is an EU country prefix and up to 12 characters, e.g. 'DE123456789'")
    return number


Nip = Annotated[str, AfterValidator(_check_nip)]
Text256 = Annotated[str, Field(min_length=1, max_length=256)]  # TZnakowy
Text512 = Annotated[str, Field(min_length=1, max_length=512)]  # TZnakowy512
InvoiceDate = Annotated[date, _in_range(_TDATAT)]
PaymentDate = Annotated[date, _in_range(_TDATA)]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class _Model(BaseModel):
    # xsd:token collapses whitespace; stripping here keeps "  " from passing as a non-empty name.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Address(_Model):
    """An address in FA(3)'s free form (``TAdres``)."""

    country: Country = Field("PL", description="KodKraju: ISO 3166 country code")
    line1: Text512 = Field(description="AdresL1: street and number, or the whole address")
    line2: Text512 | None = Field(None, description="AdresL2: postal code and town")


class Seller(_Model):
    """The seller (``Podmiot1``): the KSeF Hub client the invoice is sent for."""

    nip: Nip = Field(description="Podmiot1/DaneIdentyfikacyjne/NIP")
    name: Text512 = Field(description="Podmiot1/DaneIdentyfikacyjne/Nazwa")
    address: Address = Field(description="Podmiot1/Adres")


class Buyer(_Model):
    """The buyer (``Podmiot2``): a business with a Polish NIP or an EU VAT number (name and address then required),
    or a consumer without either (``BrakID``; name and address optional)."""

    nip: Nip | None = Field(None, description="Podmiot2/DaneIdentyfikacyjne/NIP")
    eu_vat_number: Annotated[str, AfterValidator(_eu_vat_number)] | None = Field(
        None, description="Podmiot2/DaneIdentyfikacyjne/KodUE + NrVatUE, e.g. 'DE123456789'"
    )
    name: Text512 | None = Field(None, description="Podmiot2/DaneIdentyfikacyjne/Nazwa")
    address: Address | None = Field(None, description="Podmiot2/Adres")

    @model_validator(mode="after")
    def _business_is_named(self) -> Self:
        if self.nip is not None and self.eu_vat_number is not None:
            raise ValueError("a buyer has either a nip or an eu_vat_number, not both")
        if (self.nip or self.eu_vat_number) and (self.name is None or self.address is None):
            raise ValueError("a business buyer needs a name and an address")
        return self

    @property
    def is_consumer(self) -> bool:
        """No tax identifier: ``BrakID``."""
        return self.nip is None and self.eu_vat_number is None


class InvoiceLine(_Model):
    """One invoice line (``FaWiersz``), priced net."""

    name: Text512 = Field(description="P_7: name of the goods or service")
    unit: Text256 | None = Field(None, description="P_8A: unit of measure")
    quantity: Annotated[Decimal, Field(gt=0), _decimals(6)] = Field(description="P_8B: quantity (up to 6 decimals)")
    unit_net_price: Annotated[Decimal, _decimals(8)] = Field(
        description="P_9A: unit net price (up to 8 decimals; negative only on a correction)"
    )
    rate: Annotated[Rate, BeforeValidator(_rate_alias)] = Field(
        description="P_12: VAT rate, a TStawkaPodatku value ('23', '8', '5', '0 KR', 'zw', 'np I', …)"
    )
    before_correction: bool = Field(
        False, description="StanPrzed: on a correction, the line as it stood on the corrected invoice"
    )

    @property
    def net(self) -> Decimal:
        """P_11, rounded per line."""
        return round_money(self.quantity * self.unit_net_price)


class Payment(_Model):
    """Payment terms (``Platnosc``)."""

    due_date: PaymentDate | None = Field(None, description="TerminPlatnosci/Termin")
    method: PaymentMethod | None = Field(None, description="FormaPlatnosci (1 cash … 6 transfer, 7 mobile)")
    bank_account: Annotated[str, AfterValidator(_bank_account)] | None = Field(
        None, description="RachunekBankowy/NrRB: IBAN or Polish NRB"
    )
    paid_on: PaymentDate | None = Field(None, description="Zaplacono=1 and DataZaplaty: already paid on this day")


class Correction(_Model):
    """What a correcting invoice (``RodzajFaktury`` KOR) corrects (``DaneFaKorygowanej``)."""

    reason: Text256 = Field(description="PrzyczynaKorekty")
    effect: Literal[1, 2, 3] | None = Field(
        None,
        description="TypKorekty: 1 in the corrected invoice's period, 2 in the correction's period, 3 other",
    )
    invoice_number: Text256 = Field(description="NrFaKorygowanej")
    issue_date: InvoiceDate = Field(description="DataWystFaKorygowanej")
    ksef_number: Annotated[str, AfterValidator(_check_ksef_number)] | None = Field(
        None,
        description="NrKSeFFaKorygowanej (with NrKSeF=1); absent: the corrected invoice was not in KSeF (NrKSeFN)",
    )


class SalesInvoiceIn(_Model):
    """A sales invoice as an ERP posts it; ``render_fa3`` turns it into FA(3) XML."""

    number: Text256 = Field(description="P_2: the invoice number given by the seller")
    issue_date: InvoiceDate = Field(description="P_1: issue date")
    sale_date: InvoiceDate | None = Field(None, description="P_6: date of supply, when it differs from P_1")
    place_of_issue: Text256 | None = Field(None, description="P_1M: place of issue")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = Field("PLN", description="KodWaluty: ISO 4217 code")
    exchange_rate: Annotated[Decimal, Field(gt=0), _decimals(6)] | None = Field(
        None, description="KursWaluty: PLN per unit of a foreign currency, for VAT in PLN (P_14_xW); required then"
    )
    seller: Seller = Field(description="Podmiot1")
    buyer: Buyer = Field(description="Podmiot2")
    lines: list[InvoiceLine] = Field(min_length=1, max_length=10000, description="FaWiersz")
    payment: Payment | None = Field(None, description="Platnosc")
    correction: Correction | None = Field(
        None, description="Makes this a KOR invoice: PrzyczynaKorekty, DaneFaKorygowanej"
    )
    exemption_basis: Text256 | None = Field(
        None, description="Adnotacje/Zwolnienie/P_19A: the legal basis of the exemption; required with 'zw' lines"
    )
    split_payment: bool = Field(False, description="Adnotacje/P_18A: 'mechanizm podzielonej płatności'")
    cash_accounting: bool = Field(False, description="Adnotacje/P_16: 'metoda kasowa'")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.currency == "PLN" and self.exchange_rate is not None:
            raise ValueError("exchange_rate is only for invoices in a foreign currency")
        if self.currency != "PLN" and self.exchange_rate is None:
            raise ValueError("an invoice in a foreign currency needs exchange_rate (VAT must be stated in PLN)")
        exempt = any(line.rate == "zw" for line in self.lines)
        if exempt and self.exemption_basis is None:
            raise ValueError("lines at rate 'zw' need exemption_basis (the provision the exemption rests on)")
        if not exempt and self.exemption_basis is not None:
            raise ValueError("exemption_basis is only for invoices with 'zw' lines")
        if self.correction is None:
            if any(line.before_correction for line in self.lines):
                raise ValueError("before_correction lines are only for a correction")
            if any(line.unit_net_price < 0 for line in self.lines):
                raise ValueError("a negative unit_net_price is only for a correction")
        if any(line.rate == "oo" for line in self.lines) and self.buyer.nip is None:
            raise ValueError("rate 'oo' (domestic reverse charge) needs a buyer with a NIP")
        return self

    @property
    def invoice_type(self) -> Literal["VAT", "KOR"]:
        """RodzajFaktury."""
        return "KOR" if self.correction is not None else "VAT"


@dataclass(frozen=True)
class InvoiceTotals:
    """The Fa totals, keyed by their FA(3) element names (``P_13_1``, ``P_14_1``, ``P_14_1W``, …)."""

    amounts: dict[str, Decimal] = field(default_factory=dict)
    gross: Decimal = Decimal("0.00")


def _per_rate(lines: Iterable[InvoiceLine]) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    net: dict[str, Decimal] = {}
    for line in lines:
        net[line.rate] = net.get(line.rate, Decimal("0.00")) + line.net
    vat = {rate: round_money(amount * vat_rate) for rate, amount in net.items() if (vat_rate := _RATES[rate][1])}
    return net, vat


def invoice_totals(invoice: SalesInvoiceIn) -> InvoiceTotals:
    """Net and VAT per rate and gross, as ``render_fa3`` writes them (see the module docstring for the rounding)."""
    net_now, vat_now = _per_rate(line for line in invoice.lines if not line.before_correction)
    net_before, vat_before = _per_rate(line for line in invoice.lines if line.before_correction)
    amounts: dict[str, Decimal] = {}
    for rate in {*net_now, *net_before}:
        suffix, vat_rate = _RATES[rate]
        net = net_now.get(rate, Decimal("0.00")) - net_before.get(rate, Decimal("0.00"))
        amounts[f"P_13_{suffix}"] = amounts.get(f"P_13_{suffix}", Decimal("0.00")) + net
        if vat_rate is not None:
            vat = vat_now.get(rate, Decimal("0.00")) - vat_before.get(rate, Decimal("0.00"))
            amounts[f"P_14_{suffix}"] = amounts.get(f"P_14_{suffix}", Decimal("0.00")) + vat
    if invoice.exchange_rate is not None:
        for suffix in ("1", "2", "3"):
            if f"P_14_{suffix}" in amounts:
                amounts[f"P_14_{suffix}W"] = round_money(amounts[f"P_14_{suffix}"] * invoice.exchange_rate)
    gross = sum((v for k, v in amounts.items() if not k.endswith("W")), Decimal("0.00"))
    return InvoiceTotals(amounts=amounts, gross=gross)


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros (P_8B, P_9A, KursWaluty: TIlosci/TKwotowy2 patterns)."""
    text = format(value.normalize(), "f")
    return "0" if text in {"-0", "0"} else text


def _price(value: Decimal) -> str:
    """P_9A: grosze as an ERP shows them (10.10), more places only when the price has them."""
    return _money(value) if value == round_money(value) else _plain(value)


def _money(value: Decimal) -> str:
    return format(round_money(value), "f")


class _Builder:
    def __init__(self) -> None:
        namespaces: Any = {None: FA3_NAMESPACE}  # lxml-stubs do not allow the default namespace's None key
        self.root = etree.Element(f"{{{FA3_NAMESPACE}}}Faktura", nsmap=namespaces)

    @staticmethod
    def add(parent: etree._Element, name: str, text: str | None = None, **attributes: str) -> etree._Element:
        element = etree.SubElement(parent, f"{{{FA3_NAMESPACE}}}{name}", attributes)
        if text is not None:
            element.text = text
        return element


def _address(b: _Builder, parent: etree._Element, address: Address) -> None:
    element = b.add(parent, "Adres")
    b.add(element, "KodKraju", address.country)
    b.add(element, "AdresL1", address.line1)
    if address.line2 is not None:
        b.add(element, "AdresL2", address.line2)


def render_fa3(invoice: SalesInvoiceIn, *, generated_at: datetime, system_info: str = "KSeF Hub") -> bytes:
    """The FA(3) XML of an invoice, UTF-8 without BOM (§8). ``generated_at`` (timezone-aware) is
    ``DataWytworzeniaFa``; the XSD requires it on or after 2025-09-01."""
    if generated_at.tzinfo is None or generated_at.utcoffset() is None:
        raise ValueError("generated_at must be timezone-aware")
    if generated_at < _FIRST_GENERATION:
        raise ValueError("FA(3) requires DataWytworzeniaFa on or after 2025-09-01")
    if not 1 <= len(system_info.strip()) <= 256:
        raise ValueError("system_info must be 1 to 256 characters")
    b = _Builder()
    add = b.add

    header = add(b.root, "Naglowek")
    add(header, "KodFormularza", "FA", kodSystemowy="FA (3)", wersjaSchemy="1-0E")
    add(header, "WariantFormularza", "3")
    add(header, "DataWytworzeniaFa", generated_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    add(header, "SystemInfo", system_info.strip())

    seller = add(b.root, "Podmiot1")
    data = add(seller, "DaneIdentyfikacyjne")
    add(data, "NIP", invoice.seller.nip)
    add(data, "Nazwa", invoice.seller.name)
    _address(b, seller, invoice.seller.address)

    buyer = add(b.root, "Podmiot2")
    data = add(buyer, "DaneIdentyfikacyjne")
    if invoice.buyer.nip is not None:
        add(data, "NIP", invoice.buyer.nip)
    elif invoice.buyer.eu_vat_number is not None:
        add(data, "KodUE", invoice.buyer.eu_vat_number[:2])
        add(data, "NrVatUE", invoice.buyer.eu_vat_number[2:])
    else:
        add(data, "BrakID", "1")
    if invoice.buyer.name is not None:
        add(data, "Nazwa", invoice.buyer.name)
    if invoice.buyer.address is not None:
        _address(b, buyer, invoice.buyer.address)
    # JST and GV are required in FA(3): "2" = not a subordinate unit of a local government, not a VAT group member.
    # Either "1" obliges a Podmiot3 with role 8/10, which this model does not produce.
    add(buyer, "JST", "2")
    add(buyer, "GV", "2")

    fa = add(b.root, "Fa")
    add(fa, "KodWaluty", invoice.currency)
    add(fa, "P_1", invoice.issue_date.isoformat())
    if invoice.place_of_issue is not None:
        add(fa, "P_1M", invoice.place_of_issue)
    add(fa, "P_2", invoice.number)
    if invoice.sale_date is not None and invoice.sale_date != invoice.issue_date:
        # P_6 is the supply date "if it differs from the issue date" (art. 106e ust. 1 pkt 6).
        add(fa, "P_6", invoice.sale_date.isoformat())
    totals = invoice_totals(invoice)
    for suffix in _TOTAL_ORDER:
        for name in (f"P_13_{suffix}", f"P_14_{suffix}", f"P_14_{suffix}W"):
            if name in totals.amounts:
                add(fa, name, _money(totals.amounts[name]))
    add(fa, "P_15", _money(totals.gross))

    # Adnotacje is a fixed sequence whose every child is required (REFERENCE.md §19, §20.10).
    notes = add(fa, "Adnotacje")
    add(notes, "P_16", "1" if invoice.cash_accounting else "2")
    add(notes, "P_17", "2")  # self-invoicing is not produced
    add(notes, "P_18", "1" if any(line.rate == "oo" for line in invoice.lines) else "2")
    add(notes, "P_18A", "1" if invoice.split_payment else "2")
    exemption = add(notes, "Zwolnienie")
    if invoice.exemption_basis is not None:
        add(exemption, "P_19", "1")
        add(exemption, "P_19A", invoice.exemption_basis)
    else:
        add(exemption, "P_19N", "1")
    add(add(notes, "NoweSrodkiTransportu"), "P_22N", "1")
    add(notes, "P_23", "2")
    add(add(notes, "PMarzy"), "P_PMarzyN", "1")

    add(fa, "RodzajFaktury", invoice.invoice_type)
    if invoice.correction is not None:
        correction = invoice.correction
        add(fa, "PrzyczynaKorekty", correction.reason)
        if correction.effect is not None:
            add(fa, "TypKorekty", str(correction.effect))
        corrected = add(fa, "DaneFaKorygowanej")
        add(corrected, "DataWystFaKorygowanej", correction.issue_date.isoformat())
        add(corrected, "NrFaKorygowanej", correction.invoice_number)
        if correction.ksef_number is not None:
            add(corrected, "NrKSeF", "1")
            add(corrected, "NrKSeFFaKorygowanej", correction.ksef_number)
        else:
            add(corrected, "NrKSeFN", "1")

    for number, line in enumerate(invoice.lines, start=1):
        row = add(fa, "FaWiersz")
        add(row, "NrWierszaFa", str(number))
        add(row, "P_7", line.name)
        if line.unit is not None:
            add(row, "P_8A", line.unit)
        add(row, "P_8B", _plain(line.quantity))
        add(row, "P_9A", _price(line.unit_net_price))
        add(row, "P_11", _money(line.net))
        add(row, "P_12", line.rate)
        if invoice.exchange_rate is not None:
            add(row, "KursWaluty", _plain(invoice.exchange_rate))
        if line.before_correction:
            add(row, "StanPrzed", "1")

    if invoice.payment is not None:
        _payment(b, fa, invoice.payment)
    return etree.tostring(b.root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _payment(b: _Builder, fa: etree._Element, payment: Payment) -> None:
    element = b.add(fa, "Platnosc")
    if payment.paid_on is not None:
        b.add(element, "Zaplacono", "1")
        b.add(element, "DataZaplaty", payment.paid_on.isoformat())
    if payment.due_date is not None:
        b.add(b.add(element, "TerminPlatnosci"), "Termin", payment.due_date.isoformat())
    if payment.method is not None:
        b.add(element, "FormaPlatnosci", str(_PAYMENT_METHODS[payment.method]))
    if payment.bank_account is not None:
        b.add(b.add(element, "RachunekBankowy"), "NrRB", payment.bank_account)
