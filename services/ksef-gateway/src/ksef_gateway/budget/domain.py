"""KSeF's sliding request windows, counted on our side so the gateway never earns a 429 (REFERENCE.md §13).

KSeF counts requests per (context, IP) and endpoint group in three sliding windows — 1 s, 60 s and 60 min —
enforced together; a request over any of them is answered 429. We keep the same three windows per (context,
group) and admit a call only while every window has room below our *usable* limit (a fraction of KSeF's, so that
other software using the same context, clock skew and our own bugs leave headroom).

Pure: no I/O, no clock of its own. Times are monotonic seconds (floats) passed in by the caller.

Why a hit counts from admission until its *response* + window: KSeF stamps the request when it arrives, some time
between our sending it (admission) and our receiving the answer. Counting the hit as occupying
``[admitted_at, finished_at + span)`` covers every possible arrival time, so — whatever the network latency — if our
count is below the limit, KSeF's is too. A call still in flight has no end yet; it counts in every window and is
assumed to free its place no earlier than ``now + span``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# The three windows KSeF enforces together (REFERENCE.md §13), in seconds.
SECOND = 1.0
MINUTE = 60.0
HOUR = 3600.0
WINDOW_SPANS: tuple[float, float, float] = (SECOND, MINUTE, HOUR)
WINDOW_NAMES: tuple[str, str, str] = ("per_second", "per_minute", "per_hour")

LimitMode = Literal["production", "custom", "off"]


@dataclass(frozen=True)
class Limits:
    """How many requests one (context, group) may make per 1 s / 60 s / 60 min."""

    per_second: int
    per_minute: int
    per_hour: int

    def __post_init__(self) -> None:
        if min(self.per_second, self.per_minute, self.per_hour) < 0:
            raise ValueError("limits cannot be negative")

    @property
    def counts(self) -> tuple[int, int, int]:
        return (self.per_second, self.per_minute, self.per_hour)

    def usable(self, fraction: float) -> Limits:
        """The share of each window we allow ourselves: ``floor(limit * fraction)``, but at least one request
        where KSeF allows any (else a tight limit such as sessionList's 5/s would round to nothing)."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError("the usable fraction must be in (0, 1]")

        def share(limit: int) -> int:
            return 0 if limit == 0 else max(1, math.floor(limit * fraction + 1e-9))

        return Limits(share(self.per_second), share(self.per_minute), share(self.per_hour))


# KSeF's defaults per group, as GET /rate-limits names them (REFERENCE.md §13; identical on PROD, DEMO and TEST
# since 2.5.0). ``public`` is the per-IP limit of the unauthenticated endpoints (60 req/s), counted without context.
PRODUCTION_LIMITS: Mapping[str, Limits] = {
    "onlineSession": Limits(10, 30, 120),
    "invoiceSend": Limits(10, 30, 180),
    # The docs of 2026-09-14 raise batch *close* to 20/40/120; we keep the lower opening values for the group.
    "batchSession": Limits(10, 20, 60),
    "invoiceStatus": Limits(30, 120, 1200),
    "sessionList": Limits(5, 10, 60),
    "sessionInvoiceList": Limits(10, 20, 200),
    "sessionMisc": Limits(10, 120, 1200),
    "invoiceMetadata": Limits(8, 16, 20),
    "invoiceExport": Limits(8, 16, 20),
    "invoiceExportStatus": Limits(10, 60, 600),
    "invoiceDownload": Limits(8, 16, 64),
    "other": Limits(10, 30, 120),
    "public": Limits(60, 3600, 216000),
}


def limit_table(mode: LimitMode, overrides: Mapping[str, Limits], usable_fraction: float) -> dict[str, Limits] | None:
    """The usable limits per group for a mode: ``production`` = KSeF's table, ``custom`` = the table with
    ``overrides`` on top, ``off`` = ``None`` (nothing is limited)."""
    if mode == "off":
        return None
    unknown = set(overrides) - set(PRODUCTION_LIMITS)
    if unknown:
        raise ValueError(f"unknown endpoint groups: {', '.join(sorted(unknown))}")
    table = dict(PRODUCTION_LIMITS)
    if mode == "custom":
        table.update(overrides)
    return {group: limits.usable(usable_fraction) for group, limits in table.items()}


def _slid_out_at(end: float, span: float) -> float:
    """The first instant at which KSeF's test ``end > now - span`` is false. ``end + span`` may round a hair
    below it, and a request sent then would still find the hit counted."""
    at = end + span
    while at - span < end:
        at = math.nextafter(at, math.inf)
    return at


class Hit:
    """One admitted request: occupies the windows from ``admitted_at`` until ``finished_at`` + span."""

    __slots__ = ("admitted_at", "finished_at")

    def __init__(self, admitted_at: float) -> None:
        self.admitted_at = admitted_at
        self.finished_at: float | None = None

    def end(self, now: float) -> float:
        # In flight: it is "still happening", so it counts in every window as if it arrived right now.
        return now if self.finished_at is None else self.finished_at

    def __repr__(self) -> str:
        return f"Hit(admitted_at={self.admitted_at}, finished_at={self.finished_at})"


@dataclass(frozen=True)
class WindowUsage:
    name: str
    span_s: float
    limit: int
    used: int

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


class SlidingWindows:
    """The 1 s / 60 s / 60 min windows of one (context, group)."""

    def __init__(self, limits: Limits, *, not_before: float = -math.inf) -> None:
        self.limits = limits
        self._hits: list[Hit] = []
        # Before this instant nothing is admitted: calls this process cannot see (its previous life, just before
        # a restart) may still fill KSeF's windows.
        self.not_before = not_before

    def _prune(self, now: float) -> None:
        # Only finished hits can leave: an in-flight one counts until its answer arrives.
        self._hits = [h for h in self._hits if h.finished_at is None or h.finished_at + HOUR > now]

    def _ends_in(self, span: float, now: float) -> list[float]:
        # Same boundary as KSeF's (and the simulator's) counter: a hit stamped exactly ``span`` ago is out.
        return sorted(end for h in self._hits if (end := h.end(now)) > now - span)

    def usage(self, now: float) -> tuple[WindowUsage, ...]:
        self._prune(now)
        return tuple(
            WindowUsage(name, span, limit, len(self._ends_in(span, now)))
            for name, span, limit in zip(WINDOW_NAMES, WINDOW_SPANS, self.limits.counts, strict=True)
        )

    def free_at(self, now: float) -> float:
        """The earliest time at which every window has room (``now`` if it has room already).

        ``math.inf`` when a window's limit is 0. In-flight hits are assumed to finish now, so with calls in flight
        this is a lower bound and the caller must look again when they finish.
        """
        self._prune(now)
        at = max(now, self.not_before)
        for span, limit in zip(WINDOW_SPANS, self.limits.counts, strict=True):
            ends = self._ends_in(span, now)
            if len(ends) < limit:
                continue
            if limit == 0:
                return math.inf
            # Room appears when all but ``limit - 1`` of the counted hits have slid out: the oldest ones go first.
            at = max(at, _slid_out_at(ends[len(ends) - limit], span))
        return at

    def has_room(self, now: float) -> bool:
        return self.free_at(now) <= now

    def admit(self, now: float) -> Hit:
        """Count a request sent now. The caller checks ``has_room`` first; admitting anyway is a bug."""
        if not self.has_room(now):
            raise RuntimeError("no room in the rate-limit windows")
        hit = Hit(now)
        self._hits.append(hit)
        return hit

    def finish(self, hit: Hit, now: float) -> None:
        """The answer arrived (or the call was abandoned): from now on the hit slides out like any other."""
        hit.finished_at = max(now, hit.admitted_at)

    @property
    def in_flight(self) -> int:
        return sum(1 for h in self._hits if h.finished_at is None)

    @property
    def is_idle(self) -> bool:
        """Nothing counted any more: the state can be dropped without changing any decision."""
        return not self._hits
