"""Legal deadlines for sending offline sales invoices to KSeF (REFERENCE.md §12); pure functions, no I/O.

| mode                          | Latarnia status (§1)       | deadline for sending to KSeF                         |
|-------------------------------|----------------------------|------------------------------------------------------|
| offline24 (taxpayer's choice) | any                        | the next working day after the issue date (P_1)      |
| offline (unavailability)      | MAINTENANCE                | the next working day after the unavailability ends   |
| awaryjny (failure)            | FAILURE                    | 7 working days after the failure ends                |
| awaria całkowita              | TOTAL_FAILURE (mass media) | none: no obligation to send, and no QR codes         |

- A failure that overlaps an offline24 or offline window (from the issue date until that window's deadline)
  moves the deadline to 7 working days after the failure ends. A further failure announced before the current
  deadline passes restarts the count from its own end: the chain is followed until no more failures touch it.
- Until a relevant failure (or unavailability) has ended, nobody knows the deadline: it is open
  (``DeadlineStatus.AWAITING_END``), which is not the same as having none (``DeadlineStatus.NOT_REQUIRED``).
- Working days are Monday to Friday except Polish public holidays (``holidays.country_holidays("PL")``, which
  has Wigilia, 24 December, from 2025 on). A period of n working days "from" a day does not count that day, so
  the next working day is ``add_working_days(d, 1)`` and the failure deadline is ``add_working_days(end, 7)``.
- Days are Polish calendar days: an outage's instants are read in Europe/Warsaw, and a deadline is the whole of
  its last day in Warsaw. ``deadline_instant`` is the last microsecond of that day (23:59:59.999999, the
  finest instant ``datetime`` has), not the next midnight: the instant then carries the same date as the legal
  deadline, so an alert or a screen that shows it names the right day, and ``now > instant`` is exactly "late".
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import holidays

WARSAW = ZoneInfo("Europe/Warsaw")
FAILURE_WORKING_DAYS = 7


class OfflineMode(StrEnum):
    OFFLINE24 = "offline24"
    UNAVAILABILITY = "offline"
    FAILURE = "awaryjny"
    TOTAL_FAILURE = "awaria_calkowita"

    @property
    def carries_qr_codes(self) -> bool:
        # §12: in a total failure invoices go out on paper or as e-invoices without KOD I / KOD II.
        return self is not OfflineMode.TOTAL_FAILURE


class OutageKind(StrEnum):
    """Latarnia's message categories (REFERENCE.md §1)."""

    MAINTENANCE = "MAINTENANCE"
    FAILURE = "FAILURE"
    TOTAL_FAILURE = "TOTAL_FAILURE"


@dataclass(frozen=True)
class Outage:
    """One announced period of KSeF unavailability; ``ended_at`` is None while it has not ended."""

    kind: OutageKind
    started_at: datetime
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware(self.started_at, "started_at")
        if self.ended_at is not None:
            _require_aware(self.ended_at, "ended_at")
            if _utc(self.ended_at) < _utc(self.started_at):
                raise ValueError("an outage cannot end before it starts")

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether the outage shares at least one instant with [start, end]."""
        return _utc(self.started_at) <= _utc(end) and (self.ended_at is None or _utc(self.ended_at) >= _utc(start))


class DeadlineStatus(StrEnum):
    DUE = "due"  # ``Deadline.due`` is the last day for sending
    AWAITING_END = "awaiting_end"  # a relevant failure or unavailability has not ended: the date is not known yet
    NOT_REQUIRED = "not_required"  # total failure: no obligation to send at all


@dataclass(frozen=True)
class Deadline:
    status: DeadlineStatus
    due: date | None = None

    def __post_init__(self) -> None:
        if (self.status is DeadlineStatus.DUE) != (self.due is not None):
            raise ValueError("a date is given exactly when the deadline is due")


class NoMatchingOutage(ValueError):
    """The mode says the invoice was issued during an outage, but no outage of that kind covers its issue date."""


# --- working days ---------------------------------------------------------------------------------------------


@functools.cache
def _public_holidays(year: int) -> frozenset[date]:
    # One frozen set per year instead of one shared holidays object: that object fills itself lazily on lookup,
    # so sharing it would mutate global state from whichever thread asks first.
    return frozenset(holidays.country_holidays("PL", years=year))


def is_working_day(d: date) -> bool:
    return d.weekday() < 5 and d not in _public_holidays(d.year)


def next_working_day(d: date) -> date:
    """The first working day strictly after ``d``."""
    d += timedelta(days=1)
    while not is_working_day(d):
        d += timedelta(days=1)
    return d


def add_working_days(d: date, n: int) -> date:
    """The n-th working day after ``d`` (``d`` itself never counts, as in a statutory period of days)."""
    if n < 0:
        raise ValueError("n must not be negative")
    for _ in range(n):
        d = next_working_day(d)
    return d


# --- deadlines ------------------------------------------------------------------------------------------------


def resolve_deadline(mode: OfflineMode, issue_date: date, outages: Sequence[Outage]) -> Deadline:
    """The deadline for sending an invoice issued on ``issue_date`` (P_1) in ``mode``, given every outage known.

    ``outages`` may hold any outages (the sending code passes what Latarnia announced around the issue date);
    the ones that do not touch the invoice are ignored.
    """
    if mode is OfflineMode.TOTAL_FAILURE:
        return Deadline(DeadlineStatus.NOT_REQUIRED)
    issued_from = datetime.combine(issue_date, time.min, tzinfo=WARSAW)
    issued_until = deadline_instant(issue_date)
    if mode is OfflineMode.OFFLINE24:
        base = next_working_day(issue_date)
    elif mode is OfflineMode.UNAVAILABILITY:
        maintenance = [o for o in outages if o.kind is OutageKind.MAINTENANCE]
        period = _covering_period(maintenance, issued_from, issued_until)
        if period is None:
            raise NoMatchingOutage(f"no MAINTENANCE outage covers the issue date {issue_date.isoformat()}")
        if period.ended_at is None:
            return Deadline(DeadlineStatus.AWAITING_END)
        base = next_working_day(_warsaw_date(period.ended_at))
    else:  # OfflineMode.FAILURE
        if not any(o.overlaps(issued_from, issued_until) for o in _failures(outages)):
            raise NoMatchingOutage(f"no FAILURE outage covers the issue date {issue_date.isoformat()}")
        # The failure's own 7 days are found by the chain below, starting from the issue day itself.
        base = issue_date
    return _follow_failures(issued_from, base, _failures(outages))


def deadline(mode: OfflineMode, issue_date: date, outages: Sequence[Outage]) -> date | None:
    """The last day for sending, or None when there is none yet (failure not ended) or none at all (total failure).

    Use ``resolve_deadline`` where the two Nones must be told apart.
    """
    return resolve_deadline(mode, issue_date, outages).due


def _follow_failures(window_start: datetime, current: date, failures: Sequence[Outage]) -> Deadline:
    # §12: a failure inside the window moves the deadline to 7 working days after it ends, and "a new announcement
    # restarts the count": each moved deadline is a longer window that a later failure may touch again.
    seen: set[Outage] = set()
    while True:
        window_end = deadline_instant(current)
        touching = [f for f in failures if f not in seen and f.overlaps(window_start, window_end)]
        if not touching:
            return Deadline(DeadlineStatus.DUE, current)
        if any(f.ended_at is None for f in touching):
            return Deadline(DeadlineStatus.AWAITING_END)
        seen.update(touching)
        latest_end = max(_warsaw_date(f.ended_at) for f in touching if f.ended_at is not None)
        current = max(current, add_working_days(latest_end, FAILURE_WORKING_DAYS))


def _failures(outages: Iterable[Outage]) -> list[Outage]:
    return [o for o in outages if o.kind is OutageKind.FAILURE]


def _covering_period(outages: Sequence[Outage], start: datetime, end: datetime) -> Outage | None:
    """The uninterrupted unavailability touching [start, end], overlapping announcements merged into one period.

    If two separate periods touch the issue day, the one that ends first is taken: P_1 is a date, so the gateway
    cannot tell which one the invoice was issued in, and the earlier deadline is the one that is never too late.
    """
    periods: list[Outage] = []
    for o in sorted(outages, key=lambda o: _utc(o.started_at)):
        last = periods[-1] if periods else None
        if last is not None and (last.ended_at is None or _utc(o.started_at) <= _utc(last.ended_at)):
            ended = None if last.ended_at is None or o.ended_at is None else max(last.ended_at, o.ended_at, key=_utc)
            periods[-1] = Outage(last.kind, last.started_at, ended)
        else:
            periods.append(o)
    return next((p for p in periods if p.overlaps(start, end)), None)


# --- instants and alerts --------------------------------------------------------------------------------------


def deadline_instant(d: date) -> datetime:
    """The last instant of day ``d`` in Warsaw, as an aware datetime (never ambiguous: DST moves at 02:00-03:00)."""
    return datetime.combine(d, time.max, tzinfo=WARSAW)


def overdue(deadline_date: date | None, now: datetime) -> bool:
    """Whether ``now`` is past the deadline; an open or absent deadline is never overdue."""
    _require_aware(now, "now")
    return deadline_date is not None and _utc(now) > _utc(deadline_instant(deadline_date))


def alert_due(deadline_date: date | None, now: datetime, warn_before: timedelta) -> bool:
    """Whether a reminder is due: within ``warn_before`` of the deadline and not yet past it (``overdue`` then).

    The arithmetic is done in UTC so that ``warn_before`` is elapsed time: in Warsaw wall-clock arithmetic a
    48-hour warning across the October change would fire an hour early.
    """
    _require_aware(now, "now")
    if warn_before < timedelta(0):
        raise ValueError("warn_before must not be negative")
    if deadline_date is None:
        return False
    end = _utc(deadline_instant(deadline_date))
    return end - warn_before <= _utc(now) <= end


# --- Latarnia -------------------------------------------------------------------------------------------------

_MODE_OF_STATUS = {
    "MAINTENANCE": OfflineMode.UNAVAILABILITY,
    "FAILURE": OfflineMode.FAILURE,
    "TOTAL_FAILURE": OfflineMode.TOTAL_FAILURE,
}


def mode_for(latarnia_status: str | None, *, chosen_offline24: bool) -> OfflineMode | None:
    """The offline mode an invoice issued now is in, from Latarnia's ``GET /status`` (REFERENCE.md §1).

    None means: send online. An unknown status (``latarnia_status=None``: Latarnia not asked or not answering)
    is treated like AVAILABLE, since the modes other than offline24 need an announcement the gateway has seen.
    """
    if latarnia_status is None or latarnia_status == "AVAILABLE":
        return OfflineMode.OFFLINE24 if chosen_offline24 else None
    try:
        return _MODE_OF_STATUS[latarnia_status]
    except KeyError:
        raise ValueError(f"unknown Latarnia status {latarnia_status!r}") from None


def _warsaw_date(instant: datetime) -> date:
    return instant.astimezone(WARSAW).date()


def _utc(instant: datetime) -> datetime:
    # Aware datetimes sharing one ZoneInfo compare and subtract by wall clock (wrong in the October fold hour and
    # across a DST change); in UTC they compare as instants.
    return instant.astimezone(UTC)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
