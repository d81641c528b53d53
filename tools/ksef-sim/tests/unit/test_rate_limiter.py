"""RateLimiter: the three sliding windows, Retry-After values, keys, modes, per-context overrides, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksef_sim.errors import TooManyRequests
from ksef_sim.ratelimit import PRODUCTION_LIMITS, Group, Limit, RateLimiter, context_of
from ksef_sim.settings import RateLimitMode
from ksef_sim.store import Store

T0 = 1_800_000_000.0  # a realistic epoch timestamp: float rounding must not disturb Retry-After
KEY = "Nip:5261040828|127.0.0.1"


def hit_n(limiter: RateLimiter, n: int, now: float, group: Group = Group.OTHER, key: str = KEY) -> None:
    for _ in range(n):
        limiter.hit(group, key, now)


def retry_after(limiter: RateLimiter, now: float, group: Group = Group.OTHER, key: str = KEY) -> int:
    with pytest.raises(TooManyRequests) as caught:
        limiter.hit(group, key, now)
    return caught.value.retry_after_s


def test_per_second_window_and_retry_after() -> None:
    limiter = RateLimiter(RateLimitMode.PRODUCTION)
    hit_n(limiter, 10, T0)
    assert retry_after(limiter, T0) == 1
    assert retry_after(limiter, T0 + 0.25) == 1  # 0.75 s left, rounded up
    hit_n(limiter, 1, T0 + 1.0)  # the burst at T0 has left the 1 s window


def test_per_minute_window_retry_after_counts_from_the_oldest_hit_keeping_it_full() -> None:
    limiter = RateLimiter(RateLimitMode.PRODUCTION)
    hit_n(limiter, 10, T0)
    hit_n(limiter, 10, T0 + 10)
    hit_n(limiter, 10, T0 + 20)
    assert retry_after(limiter, T0 + 30) == 30
    hit_n(limiter, 10, T0 + 60)  # the first ten slid out: room for ten more
    assert retry_after(limiter, T0 + 61) == 9  # next to leave: the hits at T0 + 10


def test_per_hour_window() -> None:
    limiter = RateLimiter(RateLimitMode.PRODUCTION)
    for minute in range(4):  # 4 × 30 = 120, spread so neither the second nor the minute window fills up
        for second in range(3):
            hit_n(limiter, 10, T0 + minute * 60 + second)
    assert retry_after(limiter, T0 + 240) == 3360  # the hits at T0 leave the hour at T0 + 3600
    hit_n(limiter, 10, T0 + 3600)


def test_rejected_requests_are_not_counted() -> None:
    limiter = RateLimiter(RateLimitMode.PRODUCTION)
    hit_n(limiter, 10, T0)
    for _ in range(5):
        retry_after(limiter, T0 + 0.5)
    hit_n(limiter, 10, T0 + 1)


def test_keys_and_groups_are_independent() -> None:
    limiter = RateLimiter(RateLimitMode.PRODUCTION)
    hit_n(limiter, 10, T0)
    hit_n(limiter, 10, T0, key="Nip:7010002137|127.0.0.1")
    hit_n(limiter, 10, T0, key="Nip:5261040828|10.0.0.1")
    hit_n(limiter, 8, T0, group=Group.INVOICE_METADATA)
    assert retry_after(limiter, T0, group=Group.INVOICE_METADATA) == 1


def test_modes() -> None:
    off = RateLimiter(RateLimitMode.OFF)
    hit_n(off, 1000, T0)
    custom = RateLimiter(RateLimitMode.PRODUCTION)
    custom.set_custom({Group.OTHER: Limit(1, 5, 5)})
    assert custom.mode is RateLimitMode.CUSTOM
    assert custom.effective()[Group.INVOICE_SEND] == PRODUCTION_LIMITS[Group.INVOICE_SEND]
    hit_n(custom, 1, T0)
    assert retry_after(custom, T0) == 1
    custom.reset()
    assert custom.effective() == PRODUCTION_LIMITS
    hit_n(custom, 10, T0)


def test_forced_429s_win_over_everything() -> None:
    limiter = RateLimiter(RateLimitMode.OFF)
    limiter.forced_429s = 2
    assert retry_after(limiter, T0) == 1
    assert retry_after(limiter, T0) == 1
    hit_n(limiter, 1, T0)


def test_context_override_applies_to_that_context_only_even_when_off() -> None:
    limiter = RateLimiter(RateLimitMode.OFF)
    limiter.set_context("Nip:5261040828", {Group.OTHER: Limit(2, 10, 10)})
    assert limiter.effective("Nip:5261040828")[Group.OTHER] == Limit(2, 10, 10)
    assert limiter.effective("Nip:7010002137")[Group.OTHER] == PRODUCTION_LIMITS[Group.OTHER]
    hit_n(limiter, 2, T0)
    assert retry_after(limiter, T0) == 1
    hit_n(limiter, 50, T0, key="Nip:7010002137|127.0.0.1")  # global mode off
    hit_n(limiter, 50, T0, key="127.0.0.1", group=Group.PUBLIC)  # public keys carry no context
    limiter.clear_context("Nip:5261040828")
    hit_n(limiter, 50, T0)


def test_context_of() -> None:
    assert context_of("Nip:5261040828|127.0.0.1") == "Nip:5261040828"
    assert context_of("::1") is None
    assert context_of("InternalId:5261040828-00015|::1") == "InternalId:5261040828-00015"


def test_configuration_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    limiter = RateLimiter.load(RateLimitMode.PRODUCTION, store)
    limiter.set_custom({Group.INVOICE_SEND: Limit(1, 2, 3)})
    limiter.set_context("Nip:5261040828", {Group.OTHER: Limit(4, 5, 6)})
    store.close()

    store = Store(path)
    again = RateLimiter.load(RateLimitMode.PRODUCTION, store)
    assert again.mode is RateLimitMode.CUSTOM
    assert again.effective()[Group.INVOICE_SEND] == Limit(1, 2, 3)
    assert again.effective("Nip:5261040828")[Group.OTHER] == Limit(4, 5, 6)
    store.close()

    # Restarting with another configured mode takes that mode, keeping the per-context values.
    store = Store(path)
    switched = RateLimiter.load(RateLimitMode.OFF, store)
    assert switched.mode is RateLimitMode.OFF
    assert switched.effective("Nip:5261040828")[Group.OTHER] == Limit(4, 5, 6)
    store.close()
