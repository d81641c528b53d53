"""The operators' overview's rules without I/O: what a sync state says about the last run, how pages of NIPs from
several capabilities merge, what is left of a context's hourly budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

# A sent invoice that has not moved for this long is shown as stuck. KSeF decides an online invoice in seconds and
# a batch within minutes (REFERENCE.md §7); the sender polls at most every `sales.poll_max_s` (10 s) and its
# batches wait for KSeF's batch processing, so a quarter of an hour without a transition is no longer "processing"
# but something an operator should look at (a status KSeF never finalises, a UPO that does not verify).
STUCK_AFTER = timedelta(minutes=15)

MAX_PAGE = 100
MAX_SERIES_HOURS = 7 * 24


class SyncOutcome(StrEnum):
    NEVER = "never"  # no run has started
    # A run started and has not ended: on this replica, on the one holding the context, or cut short by a restart
    # (shown until the next run starts).
    RUNNING = "running"
    OK = "ok"  # the last run finished and stored everything
    REJECTED_INVOICES = "rejected_invoices"  # it finished, but some invoices were rejected (listed by the sync API)
    FAILED = "failed"  # the last run failed (KSeF refused, an export was abandoned, an internal error)
    DEFERRED = "deferred"  # the last run gave way (budget busy, lease or credential gone) and is rescheduled


@dataclass(frozen=True)
class LastSync:
    outcome: SyncOutcome
    finished_at: datetime | None  # when the run that the outcome describes ended; None while running or deferred


def last_sync(
    *,
    running: bool,
    last_run_at: datetime | None,
    last_success_at: datetime | None,
    last_error: str | None,
    last_error_at: datetime | None,
    consecutive_failures: int,
) -> LastSync:
    """What the sync engine's bookkeeping (sync/engine.py) says of the latest run: ``last_run_at`` is stamped at the
    start; a clean end stamps ``last_success_at`` and clears the error; an end with rejected invoices and a failure
    stamp ``last_error_at`` (a failure also counts ``consecutive_failures``); giving way only writes ``last_error``."""
    if running:
        return LastSync(SyncOutcome.RUNNING, None)
    if last_run_at is None:
        return LastSync(SyncOutcome.NEVER, None)
    ended_error = last_error_at if last_error_at is not None and last_error_at >= last_run_at else None
    if consecutive_failures > 0 and ended_error is not None:
        return LastSync(SyncOutcome.FAILED, ended_error)
    if last_error is None:
        if last_success_at is None or last_success_at < last_run_at:
            return LastSync(SyncOutcome.RUNNING, None)
        return LastSync(SyncOutcome.OK, last_success_at)
    if ended_error is not None:
        return LastSync(SyncOutcome.REJECTED_INVOICES, ended_error)
    return LastSync(SyncOutcome.DEFERRED, None)


def merge_pages(pages: Iterable[Iterable[str]], limit: int) -> tuple[list[str], bool]:
    """One keyset page of the union of sources, each asked for its first ``limit + 1`` NIPs after the same cursor:
    any NIP among the union's first ``limit + 1`` is among its own source's first ``limit + 1``, so the merged page
    misses none, and a ``limit + 1``-th NIP says whether another page follows."""
    union = sorted(set().union(*(set(page) for page in pages)))
    return union[:limit], len(union) > limit


@dataclass(frozen=True)
class HourBudget:
    limit: int
    used: int
    remaining: int
    blocked_for_s: float  # a 429's block still running for the group


def hour_budget(remaining: Mapping[str, Any]) -> HourBudget | None:
    """The hourly window out of ``RateBudget.remaining``'s answer for one group; None for a group not limited."""
    if not remaining.get("limited"):
        return None
    window = remaining["windows"]["per_hour"]
    return HourBudget(window["limit"], window["used"], window["remaining"], remaining["blocked_for_s"])


def max_lag(lags: Iterable[timedelta | None]) -> timedelta | None:
    known = [lag for lag in lags if lag is not None]
    return max(known) if known else None
