"""The receiving side's rules (REFERENCE.md §9): who sees which accepted invoice, the query filters, the date window
with its 3-month limit and the permanent-storage high-water mark (HWM), sorting, paging and the 10 000 cap.

Everything here is pure: callers pass the invoices, the caller's context and ``now`` (the simulator clock).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from ksef_sim.clock import iso
from ksef_sim.errors import KsefError
from ksef_sim.records import StoredInvoice
from ksef_sim.security import Identifier

# The spec's technical limit: at most 10 000 records per filter set, for metadata queries and export packages alike.
MAX_RECORDS = 10_000
# "Maksymalny dozwolony okres wynosi 3 miesiące w strefie UTC lub w strefie Europe/Warsaw" (InvoiceQueryFilters).
MAX_RANGE_MONTHS = 3
WARSAW = ZoneInfo("Europe/Warsaw")

# KsefNumber in the spec allows an optional dash inside the 12-hex technical part; we store the 35-char form.
KSEF_NUMBER_PATTERN = (
    r"^([1-9](\d[1-9]|[1-9]\d)\d{7})-(20[2-9][0-9]|2[1-9]\d{2}|[3-9]\d{3})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"
    r"-([0-9A-F]{6})-?([0-9A-F]{6})-([0-9A-F]{2})$"
)
_KSEF_NUMBER_RE = re.compile(KSEF_NUMBER_PATTERN)
NIP_PATTERN = r"^[1-9]((\d[1-9])|([1-9]\d))\d{7}$"

# CurrencyCode enum of the spec (ISO 4217 plus a few the Ministry accepts).
_CURRENCY_CODES_TEXT = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF
    CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GGP GHS GIP GMD
    GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS IMP INR IQD IRR ISK JEP JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK
    LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN
    PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD
    XPF XPT XSU XUA XXX YER ZAR ZMW ZWL"""
CURRENCY_CODES = frozenset(_CURRENCY_CODES_TEXT.split())


class SubjectType(StrEnum):
    SUBJECT1 = "Subject1"  # seller
    SUBJECT2 = "Subject2"  # buyer (purchase invoices)
    SUBJECT3 = "Subject3"  # third subject (Podmiot3)
    SUBJECT_AUTHORIZED = "SubjectAuthorized"  # PodmiotUpowazniony


class DateType(StrEnum):
    ISSUE = "Issue"
    INVOICING = "Invoicing"
    PERMANENT_STORAGE = "PermanentStorage"


class AmountType(StrEnum):
    BRUTTO = "Brutto"
    NETTO = "Netto"
    VAT = "Vat"


class BuyerIdentifierType(StrEnum):
    NIP = "Nip"
    VAT_UE = "VatUe"
    OTHER = "Other"
    NONE = "None"


class InvoicingMode(StrEnum):
    ONLINE = "Online"
    OFFLINE = "Offline"


class FormType(StrEnum):
    FA = "FA"
    PEF = "PEF"
    FA_RR = "FA_RR"


class InvoiceType(StrEnum):
    VAT = "Vat"
    ZAL = "Zal"
    KOR = "Kor"
    ROZ = "Roz"
    UPR = "Upr"
    KOR_ZAL = "KorZal"
    KOR_ROZ = "KorRoz"
    VAT_PEF = "VatPef"
    VAT_PEF_SP = "VatPefSp"
    KOR_PEF = "KorPef"
    VAT_RR = "VatRr"
    KOR_VAT_RR = "KorVatRr"


class CamelModel(BaseModel):
    # Unknown properties are ignored (REFERENCE.md §2: 2.1.2 dropped additionalProperties:false).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class DateRange(CamelModel):
    date_type: DateType
    from_: datetime = Field(alias="from")
    to: datetime | None = None
    restrict_to_permanent_storage_hwm_date: bool | None = None


class AmountFilter(CamelModel):
    type: AmountType
    from_: Decimal | None = Field(default=None, alias="from", allow_inf_nan=False)
    to: Decimal | None = Field(default=None, allow_inf_nan=False)


class BuyerIdentifierFilter(CamelModel):
    type: BuyerIdentifierType
    value: str | None = Field(default=None, max_length=50)


class InvoiceQueryFilters(CamelModel):
    """``InvoiceQueryFilters`` of the spec; shared by the metadata query and exports (kept on the export record)."""

    subject_type: SubjectType
    date_range: DateRange
    ksef_number: str | None = Field(default=None, pattern=KSEF_NUMBER_PATTERN)
    invoice_number: str | None = Field(default=None, max_length=256)
    amount: AmountFilter | None = None
    seller_nip: str | None = Field(default=None, pattern=NIP_PATTERN)
    buyer_identifier: BuyerIdentifierFilter | None = None
    currency_codes: list[str] | None = None
    invoicing_mode: InvoicingMode | None = None
    is_self_invoicing: bool | None = None
    form_type: FormType | None = None
    invoice_types: list[InvoiceType] | None = None
    has_attachment: bool | None = None

    @field_validator("currency_codes")
    @classmethod
    def _known_currencies(cls, value: list[str] | None) -> list[str] | None:
        unknown = [code for code in value or () if code not in CURRENCY_CODES]
        if unknown:
            raise ValueError(f"unknown currency code(s): {', '.join(unknown)}")
        return value


def normalize_ksef_number(value: str) -> str:
    """The 35-char form we store; the spec also accepts a dash inside the technical part."""
    match = _KSEF_NUMBER_RE.match(value)
    if not match:
        return value
    nip, year, month, day, low, high, check = match.group(1, 3, 4, 5, 6, 7, 8)
    return f"{nip}-{year}{month}{day}-{low}{high}-{check}"


# --- time ------------------------------------------------------------------------------------------------------------


def permanent_storage_hwm(now: datetime, jitter_s: float) -> datetime:
    """Every invoice with ``permanent_storage_date`` ≤ this instant is already indexed (``records.storage_times``:
    ``indexed_at`` ≤ ``permanent_storage_date`` + jitter), so nothing new can ever appear at or below it."""
    return now - timedelta(seconds=jitter_s)


def as_aware(value: datetime) -> datetime:
    """A datetime without an offset is Europe/Warsaw local time (InvoiceQueryFilters.dateRange)."""
    return value.replace(tzinfo=WARSAW) if value.tzinfo is None else value


def _add_months(value: datetime, months: int, zone: tzinfo) -> datetime:
    local = value.astimezone(zone)
    month_index = local.month - 1 + months
    year, month = local.year + month_index // 12, month_index % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day)


def within_range_limit(start: datetime, end: datetime, months: int = MAX_RANGE_MONTHS) -> bool:
    """At most ``months`` calendar months, measured in UTC or in Warsaw time (whichever allows more)."""
    return any(end <= _add_months(start, months, zone) for zone in (UTC, WARSAW))


@dataclass(frozen=True)
class Window:
    date_type: DateType
    start: datetime
    end: datetime
    # ``permanentStorageHwmDate`` to report: PermanentStorage only; the window's end when it lies below the HWM
    # ("dla okresów starszych, będzie to zgodne z warunkami zapytania"), else the HWM itself.
    hwm: datetime | None

    def contains(self, invoice: StoredInvoice) -> bool:
        if self.date_type is DateType.ISSUE:
            # P_1 is a calendar date in Poland: compare it with the window's Warsaw dates.
            return self.start.astimezone(WARSAW).date() <= invoice.issue_date <= self.end.astimezone(WARSAW).date()
        instant = invoice.invoicing_date if self.date_type is DateType.INVOICING else invoice.permanent_storage_date
        return self.start <= instant <= self.end


def resolve_window(date_range: DateRange, now: datetime, hwm: datetime) -> Window:
    """The effective ``[from, to]``: 400 21405 for an inverted or over-long range, 400 21183 when
    ``restrictToPermanentStorageHwmDate`` is set and ``from`` lies after the HWM."""
    try:
        start = as_aware(date_range.from_).astimezone(UTC)
        end = as_aware(date_range.to).astimezone(UTC) if date_range.to is not None else now  # "to" defaults to now
        within_limit = within_range_limit(start, end)
    except (OverflowError, ValueError) as exc:  # dates at the edges of the calendar (year 1 or 9999)
        raise KsefError(21405, "dateRange: data spoza obsługiwanego zakresu.") from exc
    if end < start:
        raise KsefError(21405, "dateRange: data 'to' nie może być wcześniejsza niż 'from'.")
    if not within_limit:
        raise KsefError(21405, f"dateRange: maksymalny dozwolony zakres dat wynosi {MAX_RANGE_MONTHS} miesiące.")
    if date_range.date_type is not DateType.PERMANENT_STORAGE:
        # restrictToPermanentStorageHwmDate "dotyczy wyłącznie zapytań z dateType = PermanentStorage".
        return Window(date_range.date_type, start, end, None)
    if date_range.restrict_to_permanent_storage_hwm_date:
        if start > hwm:
            raise KsefError(21183, HWM_DETAIL)
        end = min(end, hwm)
    return Window(date_range.date_type, start, end, min(end, hwm))


HWM_DETAIL = (
    "Parametr dateRange.from jest późniejszy niż PermanentStorageHwmDate przy włączonym "
    "restrictToPermanentStorageHwmDate."
)


def date_value(invoice: StoredInvoice, date_type: DateType) -> date | datetime:
    if date_type is DateType.ISSUE:
        return invoice.issue_date
    if date_type is DateType.INVOICING:
        return invoice.invoicing_date
    return invoice.permanent_storage_date


def sort_key(invoice: StoredInvoice, date_type: DateType) -> tuple[Any, ...]:
    # Ties broken by acquisition then KSeF number, so paging is stable between calls.
    return (date_value(invoice, date_type), invoice.acquisition_date, invoice.ksef_number)


# --- who sees what -------------------------------------------------------------------------------------------------


def is_subject(invoice: StoredInvoice, context: Identifier, subject_type: SubjectType) -> bool:
    """Whether the context plays the role ``subject_type`` on the invoice (Podmiot1/2/3/Upoważniony)."""
    if subject_type is SubjectType.SUBJECT1:
        return context.type == "Nip" and invoice.seller_nip == context.value
    if subject_type is SubjectType.SUBJECT2:
        buyer = invoice.buyer_identifier
        return context.type == "Nip" and buyer.type == "Nip" and buyer.value == context.value
    if subject_type is SubjectType.SUBJECT3:
        return any(
            third.identifier.type == context.type and third.identifier.value == context.value
            for third in invoice.third_subjects
        )
    authorized = invoice.authorized_subject
    return context.type == "Nip" and authorized is not None and authorized.nip == context.value


def is_party(invoice: StoredInvoice, context: Identifier) -> bool:
    return any(is_subject(invoice, context, subject_type) for subject_type in SubjectType)


def is_visible(invoice: StoredInvoice, date_type: DateType, now: datetime) -> bool:
    """Before ``acquisition_date`` the invoice does not exist outside its session; PermanentStorage queries only see
    indexed records, which is why a late-indexed invoice shows up behind the HWM (records.StoredInvoice)."""
    if invoice.acquisition_date > now:
        return False
    return date_type is not DateType.PERMANENT_STORAGE or invoice.indexed_at <= now


def _amount(invoice: StoredInvoice, amount_type: AmountType) -> Decimal:
    if amount_type is AmountType.BRUTTO:
        return invoice.gross_amount
    if amount_type is AmountType.NETTO:
        return invoice.net_amount
    return invoice.vat_amount


def matches(invoice: StoredInvoice, filters: InvoiceQueryFilters) -> bool:
    """The optional filters; all are exact matches except the amount range (inclusive, negatives allowed)."""
    if filters.ksef_number is not None and invoice.ksef_number != normalize_ksef_number(filters.ksef_number):
        return False
    if filters.invoice_number is not None and invoice.invoice_number != filters.invoice_number:
        return False
    if filters.amount is not None:
        value = _amount(invoice, filters.amount.type)
        if filters.amount.from_ is not None and value < filters.amount.from_:
            return False
        if filters.amount.to is not None and value > filters.amount.to:
            return False
    if filters.seller_nip is not None and invoice.seller_nip != filters.seller_nip:
        return False
    if filters.buyer_identifier is not None:
        buyer = invoice.buyer_identifier
        if buyer.type != filters.buyer_identifier.type:
            return False
        if filters.buyer_identifier.value is not None and buyer.value != filters.buyer_identifier.value:
            return False
    if filters.currency_codes and invoice.currency not in filters.currency_codes:
        return False
    if filters.invoicing_mode is not None and invoice.invoicing_mode != filters.invoicing_mode:
        return False
    if filters.is_self_invoicing is not None and invoice.is_self_invoicing != filters.is_self_invoicing:
        return False
    if filters.form_type is not None and invoice.form_code.value != filters.form_type:
        return False
    if filters.invoice_types and invoice.invoice_type not in filters.invoice_types:
        return False
    return filters.has_attachment is None or invoice.has_attachment == filters.has_attachment


def select(
    invoices: Iterable[StoredInvoice],
    filters: InvoiceQueryFilters,
    context: Identifier,
    window: Window,
    now: datetime,
    *,
    descending: bool = False,
) -> list[StoredInvoice]:
    """Every invoice the context may see that matches, sorted by the date type's field (REFERENCE.md §9)."""
    found = [
        invoice
        for invoice in invoices
        if is_visible(invoice, window.date_type, now)
        and is_subject(invoice, context, filters.subject_type)
        and window.contains(invoice)
        and matches(invoice, filters)
    ]
    found.sort(key=lambda invoice: sort_key(invoice, window.date_type), reverse=descending)
    return found


@dataclass(frozen=True)
class Page:
    invoices: list[StoredInvoice]
    has_more: bool
    is_truncated: bool


def paginate(results: list[StoredInvoice], page_offset: int, page_size: int, cap: int = MAX_RECORDS) -> Page:
    """``pageOffset`` is a page index. Only the first ``cap`` results can be paged through: the page that reaches the
    cap says ``isTruncated`` (and ``hasMore``), so the client narrows ``dateRange`` from the last record's date and
    starts again at page 0."""
    reachable = results[:cap]
    start = page_offset * page_size
    end = start + page_size
    truncated = len(results) > cap and end >= cap
    return Page(reachable[start:end], truncated or end < len(reachable), truncated)


# --- rendering -------------------------------------------------------------------------------------------------------


def _identifier(type_: str, value: str | None) -> dict[str, Any]:
    return {"type": type_} if value is None else {"type": type_, "value": value}


def _named(body: dict[str, Any], name: str | None) -> dict[str, Any]:
    if name is not None:
        body["name"] = name
    return body


def invoice_metadata(invoice: StoredInvoice) -> dict[str, Any]:
    """``InvoiceMetadata`` as the metadata query and ``_metadata.json`` render it (amounts as JSON numbers)."""
    body: dict[str, Any] = {
        "ksefNumber": invoice.ksef_number,
        "invoiceNumber": invoice.invoice_number,
        "issueDate": invoice.issue_date.isoformat(),
        "invoicingDate": iso(invoice.invoicing_date),
        "acquisitionDate": iso(invoice.acquisition_date),
        "permanentStorageDate": iso(invoice.permanent_storage_date),
        "seller": _named({"nip": invoice.seller_nip}, invoice.seller_name),
        "buyer": _named(
            {"identifier": _identifier(invoice.buyer_identifier.type, invoice.buyer_identifier.value)},
            invoice.buyer_name,
        ),
        "netAmount": float(invoice.net_amount),
        "grossAmount": float(invoice.gross_amount),
        "vatAmount": float(invoice.vat_amount),
        "currency": invoice.currency,
        "invoicingMode": invoice.invoicing_mode,
        "invoiceType": invoice.invoice_type,
        "formCode": {
            "systemCode": invoice.form_code.systemCode,
            "schemaVersion": invoice.form_code.schemaVersion,
            "value": invoice.form_code.value,
        },
        "isSelfInvoicing": invoice.is_self_invoicing,
        "hasAttachment": invoice.has_attachment,
        "invoiceHash": invoice.invoice_hash,
        "thirdSubjects": [
            _named(
                {"identifier": _identifier(third.identifier.type, third.identifier.value), "role": third.role},
                third.name,
            )
            for third in invoice.third_subjects
        ],
    }
    if invoice.hash_of_corrected_invoice is not None:
        body["hashOfCorrectedInvoice"] = invoice.hash_of_corrected_invoice
    if invoice.authorized_subject is not None:
        subject = invoice.authorized_subject
        body["authorizedSubject"] = _named({"nip": subject.nip, "role": subject.role}, subject.name)
    return body
