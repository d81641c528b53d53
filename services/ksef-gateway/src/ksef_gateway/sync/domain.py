"""The rules of incremental, gap-free purchase sync (REFERENCE.md §9 "Incremental and HWM rules"); pure functions.

- One checkpoint per (client NIP, subject type): the ``from`` of the next window.
- Windows always use ``dateType=PermanentStorage`` (issue and invoicing dates are not monotonic with visibility) with
  ``restrictToPermanentStorageHwmDate=true`` and no ``to``, so everything a window returns is final.
- The next ``from`` is ``lastPermanentStorageDate`` when the result was truncated (10 000 cap), else
  ``permanentStorageHwmDate``. Windows overlap at that boundary, hence dedupe by KSeF number.
- A range may span at most 3 months (21405), so a backfill from further back is cut into 3-month windows, each
  with an explicit ``to``; for those KSeF reports ``permanentStorageHwmDate`` = the window's end ("for older
  periods it follows the query"), so the same next-``from`` rule walks them.
- Poll a subject no more often than every 15 minutes (PROD guidance); continuing a truncated or split window within
  one run is not a new poll.

Small deltas: an export costs one of the 20 export calls an hour plus its processing time; a metadata query costs
one of the 20 metadata calls plus one of the 64 downloads an hour per invoice. For a client with a handful of new
invoices the metadata path is faster and leaves the export budget alone; for anything big or unknown (the initial
backfill, a long gap, a previous delta above the threshold) an export is cheaper. The threshold
(``SyncPolicy.small_delta_max_invoices``, default 10) keeps a subject polled every 15 minutes within the download
budget: 4 polls x 10 downloads = 40 of 64 an hour, leaving room for the other subject types and explicit downloads.
When a metadata query turns out bigger than the threshold (or has more pages), that window switches to an export.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.purchases.domain import InvoiceHeader, InvoiceParseError, invoice_row, parse_invoice_header, xml_ref
from ksef_gateway.settings import SERVICE_NAME
from platform_common.contracts.invoices import InvoiceFetched, Party
from platform_common.messaging.envelope import Envelope

WARSAW = ZoneInfo("Europe/Warsaw")
MAX_RANGE_MONTHS = 3
# Stay inside the 3-month limit whichever way KSeF measures it (UTC or Warsaw time, REFERENCE.md §9).
_RANGE_MARGIN = timedelta(hours=2)


class SubjectType(StrEnum):
    SUBJECT2 = "Subject2"  # the client is the buyer: purchase invoices
    SUBJECT3 = "Subject3"  # the client is a third party (Podmiot3)
    SUBJECT_AUTHORIZED = "SubjectAuthorized"  # the client is PodmiotUpowazniony


class Method(StrEnum):
    EXPORT = "export"
    METADATA = "metadata"


@dataclass(frozen=True)
class SyncPolicy:
    backfill_months: int = 3
    min_poll_interval: timedelta = timedelta(minutes=15)
    small_delta_max_invoices: int = 10
    # A gap longer than this may hide any number of invoices: export without guessing.
    small_delta_max_gap: timedelta = timedelta(hours=2)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime | None  # None: up to the HWM ("usually no `to`")

    def filters(self, subject_type: SubjectType) -> dict[str, Any]:
        date_range: dict[str, Any] = {
            "dateType": "PermanentStorage",
            "from": iso(self.start),
            "restrictToPermanentStorageHwmDate": True,
        }
        if self.end is not None:
            date_range["to"] = iso(self.end)
        return {"subjectType": subject_type.value, "dateRange": date_range}


@dataclass(frozen=True)
class WindowResult:
    """What KSeF said about one window (an export package or a metadata query)."""

    is_truncated: bool
    permanent_storage_hwm: datetime | None
    last_permanent_storage: datetime | None  # only when truncated


class NoProgress(RuntimeError):
    """KSeF's answer would not move the checkpoint forward; continuing would loop on the same window."""


def iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(value: str | None) -> datetime | None:
    """KSeF datetimes are ISO-8601; one without an offset is Warsaw local time (REFERENCE.md §9)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=WARSAW)).astimezone(UTC)


def add_months(value: datetime, months: int) -> datetime:
    """Calendar months in Warsaw time (day clamped to the month's length), back in UTC."""
    local = value.astimezone(WARSAW)
    index = local.month - 1 + months
    year, month = local.year + index // 12, index % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day).astimezone(UTC)


def initial_checkpoint(now: datetime, backfill_months: int) -> datetime:
    """Where a client's first sync starts: ``backfill_months`` calendar months back, at the start of that day, moved
    forward by the sliver (under a day and the windows' margins) that would otherwise need one more export.

    A window may span at most 3 months less ``_RANGE_MARGIN``, so a backfill of exactly 3 months from the start of a
    day never fits one window: the first sync would pay a second export (start, status, download, and the wait for
    KSeF to build it) for the last hours only. Giving up those oldest hours keeps a first sync at
    ``ceil(backfill_months / 3)`` exports, the least the 3-month limit allows.
    """
    local = add_months(now, -backfill_months).astimezone(WARSAW)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    wanted = max(1, -(-backfill_months // MAX_RANGE_MONTHS))
    for _ in range(3):  # calendar months differ in length: a shift can leave a smaller sliver, shifted in turn
        windows = _windows_from(start, now)
        if len(windows) <= wanted:
            break
        sliver = now - windows[wanted].start
        if sliver > timedelta(days=1) + wanted * _RANGE_MARGIN:
            break  # not a sliver of rounding: the backfill needs that window
        start += sliver + timedelta(seconds=1)
    return start


def _windows_from(checkpoint: datetime, now: datetime) -> list[Window]:
    """The windows a first sync from ``checkpoint`` walks when each ends where it may (a full backfill)."""
    windows = [next_window(checkpoint, now)]
    while (end := windows[-1].end) is not None:
        windows.append(next_window(end, now))
    return windows


def next_window(checkpoint: datetime, now: datetime) -> Window:
    """The window starting at ``checkpoint``: open-ended when it fits in 3 months, else the next 3-month slice."""
    limit = add_months(checkpoint, MAX_RANGE_MONTHS) - _RANGE_MARGIN
    if now <= limit:
        return Window(checkpoint, None)
    return Window(checkpoint, limit)


def next_checkpoint(window: Window, result: WindowResult) -> datetime:
    """The official rule; ``NoProgress`` when it would not move forward (e.g. more than 10 000 invoices sharing one
    permanent-storage instant, which the API cannot page past)."""
    if result.is_truncated:
        if result.last_permanent_storage is None:
            raise NoProgress("KSeF said the result was truncated but gave no lastPermanentStorageDate")
        if result.last_permanent_storage <= window.start:
            raise NoProgress(
                f"truncated at {iso(result.last_permanent_storage)}, which does not pass the window start "
                f"{iso(window.start)}"
            )
        return result.last_permanent_storage
    if result.permanent_storage_hwm is not None:
        # Never move backwards, even if a replica saw a slightly older HWM.
        return max(result.permanent_storage_hwm, window.start)
    # Not documented to happen with restrictToPermanentStorageHwmDate; a bounded window's end is still safe.
    return window.end if window.end is not None else window.start


def has_more(window: Window, result: WindowResult) -> bool:
    """Whether the same run should continue with another window right away."""
    return result.is_truncated or window.end is not None


def choose_method(
    policy: SyncPolicy, *, checkpoint: datetime, now: datetime, last_delta: int | None, backfilled: bool
) -> Method:
    if not backfilled or last_delta is None:
        return Method.EXPORT
    if now - checkpoint > policy.small_delta_max_gap:
        return Method.EXPORT
    return Method.METADATA if last_delta <= policy.small_delta_max_invoices else Method.EXPORT


def metadata_is_small(policy: SyncPolicy, *, count: int, has_more_pages: bool, is_truncated: bool) -> bool:
    return not has_more_pages and not is_truncated and count <= policy.small_delta_max_invoices


def dedupe(ksef_numbers: Sequence[str], already_stored: set[str]) -> list[str]:
    """New numbers in first-seen order: overlapping windows and duplicate package entries collapse to one."""
    seen = set(already_stored)
    fresh = []
    for number in ksef_numbers:
        if number not in seen:
            seen.add(number)
            fresh.append(number)
    return fresh


# --- cadence -------------------------------------------------------------------------------------------------------


def next_run_after_success(now: datetime, policy: SyncPolicy) -> datetime:
    return now + policy.min_poll_interval


def next_run_after_failure(now: datetime, consecutive_failures: int, *, base: timedelta, cap: timedelta) -> datetime:
    """Exponential backoff on KSeF or local errors, so a broken client does not spend the shared budget."""
    factor: int = 2 ** min(max(consecutive_failures - 1, 0), 12)
    delay: timedelta = min(cap, base * factor)
    return now + delay


def earliest_fetch_now(now: datetime, last_poll: datetime | None, policy: SyncPolicy, *, override: bool) -> datetime:
    """ "Fetch now" is queued; it still waits for the minimum poll interval unless the operator override is on."""
    if override or last_poll is None:
        return now
    return max(now, last_poll + policy.min_poll_interval)


def export_poll_delay(
    polls: int, *, first_s: float, max_s: float, left_s: float, retry_after_s: float | None = None
) -> float:
    """Seconds to wait after the ``polls``-th status answer (1-based) of an export still at 100.

    A small export is ready in well under a second, so the first waits are short and double from there (a big one
    takes minutes, and asking every ``max_s`` then costs little of the status budget: 60 a minute per context, of
    which doubling from 50 ms spends about a dozen in the first minute). When KSeF says when to
    ask again (``Retry-After``) that wins, even past ``max_s``. Never past the watchdog (``left_s``: time until it
    abandons the export), so the last look at the status happens when the watchdog is due.
    """
    delay = retry_after_s if retry_after_s is not None else min(max_s, first_s * 2 ** min(max(polls - 1, 0), 30))
    return max(0.0, min(delay, left_s))


# --- month-close priority --------------------------------------------------------------------------------------------


def month_close_deadline(now: datetime, close_day: int) -> datetime:
    """The end (Warsaw) of the next ``close_day`` of a month on or after today: the day the office closes the books.

    A day beyond a month's length means its last day (close_day=31 in February is the 28th/29th)."""
    local = now.astimezone(WARSAW)
    year, month = local.year, local.month
    for _ in range(2):
        day = min(close_day, calendar.monthrange(year, month)[1])
        end_of_day = datetime(year, month, day, tzinfo=WARSAW) + timedelta(days=1)
        if end_of_day > local:
            return end_of_day.astimezone(UTC)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("unreachable: the next month always has the day")


@dataclass(frozen=True)
class DueSubject:
    client_nip: str
    subject_type: SubjectType
    next_run_at: datetime | None
    close_day: int


def order_due(due: Sequence[DueSubject], now: datetime) -> list[DueSubject]:
    """Nearest month-close deadline first, then the longest-waiting; never-run subjects count as waiting longest."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return sorted(
        due,
        key=lambda d: (
            month_close_deadline(now, d.close_day),
            d.next_run_at or epoch,
            d.client_nip,
            d.subject_type.value,
        ),
    )


def lag(now: datetime, hwm: datetime | None) -> timedelta | None:
    """How far the data we hold trails now: everything up to the HWM is complete."""
    return None if hwm is None else max(now - hwm, timedelta(0))


def enabled_subjects(flags: Mapping[SubjectType, bool]) -> list[SubjectType]:
    """Subject2 always (purchases); the others when the client enabled them on its credential."""
    return [SubjectType.SUBJECT2, *(s for s in (SubjectType.SUBJECT3, SubjectType.SUBJECT_AUTHORIZED) if flags.get(s))]


# --- KSeF's answers the sync reacts to (REFERENCE.md §9) ---------------------------------------------------------

EXPORT_RUNNING, EXPORT_DONE, EXPORT_EXPIRED, EXPORT_KEY_ERROR, EXPORT_BEYOND_HWM = 100, 200, 210, 415, 420
# 400 21183: `from` is past the HWM (restrictToPermanentStorageHwmDate): nothing new yet.
FROM_AFTER_HWM = 21183
TOO_MANY_EXPORTS = 21182
METADATA_PAGE_SIZE = 250


# --- checking what a window brought --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """One invoice a window brought: its bytes, KSeF's metadata of it, and how it came (export or download)."""

    ksef_number: str
    xml: bytes
    metadata: dict[str, Any]
    via: str


@dataclass(frozen=True)
class Checked:
    """A new invoice after its hash check and header parse: its row and event, or why it is rejected."""

    item: Fetched
    row: dict[str, Any] | None = None
    envelope: Envelope | None = None
    problem: tuple[str, str] | None = None


def hash_problem(item: Fetched) -> tuple[str, str] | None:
    """Why the bytes cannot be trusted (no ``invoiceHash`` to check them by, or they do not match it), or None."""
    expected = item.metadata.get("invoiceHash")
    if not expected:
        return ("malformed", "KSeF gave no metadata (invoiceHash) for this invoice")
    actual = sha256_b64(item.xml)
    if actual != expected:
        return (
            "hash_mismatch",
            f"SHA-256 of the {len(item.xml)} downloaded bytes is {actual}, KSeF's invoiceHash is {expected}",
        )
    return None


def check_invoices(
    nip: str, subject: SubjectType, items: Sequence[Fetched], now: datetime, trace: dict[str, str]
) -> list[Checked]:
    """Each new invoice's hash check (once) and header parse, then its row and event; CPU only, no I/O."""
    checked = []
    for item in items:
        problem = hash_problem(item)
        if problem is None:
            try:
                header = parse_invoice_header(item.xml)
            except InvoiceParseError as exc:
                problem = ("malformed", str(exc))
            else:
                row, envelope = new_invoice(nip, subject, item, header, now, trace)
                checked.append(Checked(item, row, envelope))
                continue
        checked.append(Checked(item, problem=problem))
    return checked


def new_invoice(
    nip: str, subject: SubjectType, item: Fetched, header: InvoiceHeader, now: datetime, trace: dict[str, str]
) -> tuple[dict[str, Any], Envelope]:
    """The stored row of one new invoice and its ``invoice.fetched`` envelope (sharing the event id)."""
    meta = item.metadata
    acquisition = parse_instant(meta.get("acquisitionDate")) or parse_instant(meta.get("invoicingDate")) or now
    permanent = parse_instant(meta.get("permanentStorageDate"))
    event_id = uuid.uuid4()
    row = invoice_row(
        nip=nip,
        ksef_number=item.ksef_number,
        subject_type=subject.value,
        header=header,
        xml=item.xml,
        invoice_hash=str(meta["invoiceHash"]),
        acquisition_date=acquisition,
        permanent_storage_date=permanent,
        invoicing_date=parse_instant(meta.get("invoicingDate")),
        fetched_at=now,
        fetched_via=item.via,
        event_id=event_id,
    )
    event = InvoiceFetched(
        ksef_number=item.ksef_number,
        client_nip=nip,
        subject_role=subject.value,
        seller=Party(nip=header.seller_nip, name=header.seller_name),
        buyer=Party(nip=header.buyer.value if header.buyer.type == "Nip" else None, name=header.buyer_name),
        p_1=header.issue_date,
        p_2=header.invoice_number,
        net_amount=header.net_amount,
        vat_amount=header.vat_amount,
        gross_amount=header.gross_amount,
        currency=header.currency,
        invoice_type=header.invoice_type,
        corrected_ksef_number=header.corrected_ksef_number,
        corrected_invoice_number=header.corrected_invoice_number,
        acquisition_date=acquisition,
        permanent_storage_date=permanent,
        vat_amount_pln=header.vat_amount_pln,
        invoice_hash=str(meta["invoiceHash"]),
        xml_ref=xml_ref(nip, item.ksef_number),
    )
    envelope = Envelope.wrap(event, producer=SERVICE_NAME, client_nip=nip, trace=trace, event_id=event_id)
    return row, envelope
