"""The sliding windows mirror KSeF's counter (REFERENCE.md §13) and never let us over any window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from ksef_gateway.budget.domain import (
    PRODUCTION_LIMITS,
    WINDOW_SPANS,
    Hit,
    Limits,
    SlidingWindows,
    limit_table,
)


def admit_done(windows: SlidingWindows, now: float, latency: float = 0.0) -> None:
    windows.finish(windows.admit(now), now + latency)


def test_each_window_admits_exactly_its_limit_and_frees_as_it_slides() -> None:
    windows = SlidingWindows(Limits(per_second=2, per_minute=3, per_hour=4))

    admit_done(windows, 0.0)
    admit_done(windows, 0.0)
    # Per second: two, then the third has to wait until the first two slide out of the 1 s window.
    assert not windows.has_room(0.0)
    assert windows.free_at(0.0) == 1.0
    assert not windows.has_room(0.999)
    assert windows.has_room(1.0)

    admit_done(windows, 1.0)
    # Per minute: three in (now - 60 s, now]; the next fits once the two at t=0 are a minute old.
    assert windows.free_at(1.0) == 60.0
    assert not windows.has_room(59.9)
    admit_done(windows, 60.0)

    # Per hour: four in the last hour, whatever the shorter windows say.
    assert [u.used for u in windows.usage(61.0)] == [0, 1, 4]
    assert windows.free_at(61.0) == 3600.0
    with pytest.raises(RuntimeError):
        windows.admit(100.0)
    assert windows.has_room(3600.0)


def test_a_call_in_flight_counts_until_its_answer_plus_the_window() -> None:
    # KSeF stamps the request on arrival, somewhere between our send and its answer: until we know the answer
    # time, the hit must not slide out, and afterwards it slides from the answer time.
    windows = SlidingWindows(Limits(per_second=1, per_minute=100, per_hour=100))
    hit = windows.admit(0.0)
    assert windows.in_flight == 1
    assert not windows.has_room(5.0)
    assert windows.free_at(5.0) == 6.0  # lower bound while in flight: "finishes now"
    windows.finish(hit, 5.0)
    assert not windows.has_room(5.5)
    assert windows.free_at(5.5) == 6.0
    assert windows.has_room(6.0)


def test_usage_reports_limit_used_and_remaining() -> None:
    windows = SlidingWindows(Limits(8, 16, 20))
    for t in (0.0, 0.5, 30.0):
        admit_done(windows, t)
    usage = {u.name: (u.limit, u.used, u.remaining) for u in windows.usage(30.2)}
    assert usage == {"per_second": (8, 1, 7), "per_minute": (16, 3, 13), "per_hour": (20, 3, 17)}


def test_a_zero_limit_never_frees() -> None:
    windows = SlidingWindows(Limits(0, 10, 10))
    assert windows.free_at(0.0) == math.inf


def test_usable_fraction_keeps_headroom_but_at_least_one_call() -> None:
    assert PRODUCTION_LIMITS["invoiceMetadata"].usable(0.9) == Limits(7, 14, 18)
    assert PRODUCTION_LIMITS["sessionList"].usable(0.9) == Limits(4, 9, 54)
    assert Limits(1, 1, 0).usable(0.5) == Limits(1, 1, 0)
    assert Limits(10, 30, 120).usable(1.0) == Limits(10, 30, 120)
    with pytest.raises(ValueError, match="usable fraction"):
        Limits(1, 1, 1).usable(0.0)


def test_limit_table_per_mode() -> None:
    assert limit_table("off", {}, 0.9) is None
    production = limit_table("production", {"invoiceMetadata": Limits(1, 1, 1)}, 1.0)
    assert production is not None
    assert production["invoiceMetadata"] == Limits(8, 16, 20)  # overrides only count in custom mode
    custom = limit_table("custom", {"invoiceMetadata": Limits(2, 4, 20)}, 1.0)
    assert custom is not None
    assert custom["invoiceMetadata"] == Limits(2, 4, 20)
    assert custom["invoiceDownload"] == Limits(8, 16, 64)
    with pytest.raises(ValueError, match="unknown endpoint groups: invoices"):
        limit_table("custom", {"invoices": Limits(1, 1, 1)}, 1.0)


def assert_ksef_would_never_refuse(arrivals: list[float], limits: Limits) -> None:
    """KSeF's own check (the simulator's ``RateLimiter.hit``): for each request, the earlier requests stamped in
    ``(t - span, t]`` must number fewer than the limit."""
    arrivals = sorted(arrivals)
    for i, t in enumerate(arrivals):
        for span, limit in zip(WINDOW_SPANS, limits.counts, strict=True):
            earlier = sum(1 for u in arrivals[:i] if u > t - span)
            assert earlier < limit, f"request at {t} is over the {span:.0f} s limit {limit}"


@settings(max_examples=300, deadline=None)
@given(
    limits=st.builds(
        Limits,
        per_second=st.integers(1, 4),
        per_minute=st.integers(1, 12),
        per_hour=st.integers(1, 40),
    ),
    calls=st.lists(
        st.tuples(
            st.floats(0.0, 200.0, allow_nan=False),  # when the caller asks
            st.floats(0.0, 3.0, allow_nan=False),  # latency until the answer
            st.floats(0.0, 1.0, allow_nan=False),  # where between send and answer KSeF stamps it
        ),
        max_size=80,
    ),
)
def test_random_arrivals_never_exceed_any_window(limits: Limits, calls: list[tuple[float, float, float]]) -> None:
    """Callers wait for ``free_at`` (as the budget does) and are sent with random latency; whatever moment KSeF
    stamps each request at, it never sees more than the limit in any window."""
    windows = SlidingWindows(limits)
    pending: list[tuple[float, float, float]] = sorted(calls)
    in_flight: list[tuple[float, Hit]] = []  # (answer time, hit)
    stamped: list[float] = []
    now = 0.0
    while pending:
        asked_at, latency, where = pending.pop(0)
        now = max(now, asked_at)
        while True:
            for answer_at, hit in sorted(in_flight, key=lambda x: x[0]):
                if answer_at <= now:
                    windows.finish(hit, answer_at)
                    in_flight.remove((answer_at, hit))
            free_at = windows.free_at(now)
            if free_at <= now:
                break
            # Nothing frees before the earliest answer when calls are in flight: move to whichever comes first.
            now = min(free_at, min((a for a, _ in in_flight), default=math.inf))
        hit = windows.admit(now)
        in_flight.append((now + latency, hit))
        stamped.append(now + latency * where)
    note(f"calls={calls!r} stamped={stamped!r}")
    assert_ksef_would_never_refuse(stamped, limits)
