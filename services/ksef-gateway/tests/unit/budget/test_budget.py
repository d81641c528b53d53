"""RateBudget: windows, 429 blocks, backoff, the circuit breaker and fair scheduling, on a manual clock."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from typing import Any

import pytest

from ksef_gateway.budget.domain import Limits
from ksef_gateway.budget.service import (
    BudgetExhausted,
    CircuitOpen,
    CircuitState,
    EndpointGroup,
    RateBudget,
    Slot,
)
from ksef_gateway.settings import BudgetSettings, GroupLimits

ENV = "test"
META = EndpointGroup.INVOICE_METADATA
DOWNLOAD = EndpointGroup.INVOICE_DOWNLOAD
OTHER = EndpointGroup.OTHER


class ManualClock:
    """Monotonic time that moves only on ``advance``; sleepers wake in deadline order as it passes them."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, at)
            if not future.done():
                future.set_result(None)
            await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 50) -> None:
    """Let every task that can run, run (yields to the loop; no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def budget_of(clock: ManualClock, *, rng: random.Random | None = None, **overrides: Any) -> RateBudget:
    fields: dict[str, Any] = {
        "mode": "custom",
        "usable_fraction": 1.0,
        "restart_quiet_s": 0.0,  # these tests start from a quiet past; the restart seam has its own test
        "limits": {
            "invoiceMetadata": GroupLimits(per_second=2, per_minute=5, per_hour=100),
            "other": GroupLimits(per_second=10_000, per_minute=100_000, per_hour=1_000_000),
        },
    }
    fields.update(overrides)
    return RateBudget(BudgetSettings(**fields), clock, rng=rng)


class Caller:
    """Starts calls that take a slot, note when they got it, and finish when told to."""

    def __init__(self, budget: RateBudget, clock: ManualClock) -> None:
        self.budget = budget
        self.clock = clock
        self.served: list[tuple[str | None, float]] = []

    def start(
        self,
        context: str | None,
        group: EndpointGroup = META,
        *,
        status: int | None = 200,
        retry_after_s: float | None = None,
        hold: asyncio.Event | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> asyncio.Task[float]:
        async def call() -> float:
            slot: Slot
            async with self.budget.slot(
                environment=ENV, context=context, group=group, priority=priority, max_wait_s=max_wait_s
            ) as slot:
                got_at = self.clock.now()
                self.served.append((context, got_at))
                if hold is not None:
                    await hold.wait()
                slot.report(status=status, retry_after_s=retry_after_s)
                return got_at

        return asyncio.create_task(call())


async def test_windows_admit_the_configured_count_and_the_rest_as_they_slide() -> None:
    clock = ManualClock()
    budget = budget_of(clock)  # invoiceMetadata: 2/s, 5/min
    caller = Caller(budget, clock)
    t0 = clock.now()
    tasks = [caller.start("1111111111") for _ in range(7)]
    await settle()
    assert [t - t0 for _, t in caller.served] == [0.0, 0.0]
    assert budget.queued(ENV) == 5

    await clock.advance(0.999)
    assert len(caller.served) == 2
    await clock.advance(0.001)
    assert [t - t0 for _, t in caller.served] == [0.0, 0.0, 1.0, 1.0]
    await clock.advance(1.0)
    # The minute allows five: the fifth goes at 2 s, the sixth waits for the first two to be a minute old.
    assert [t - t0 for _, t in caller.served] == [0.0, 0.0, 1.0, 1.0, 2.0]
    await clock.advance(57.0)
    assert len(caller.served) == 5
    await clock.advance(1.0)
    assert [t - t0 for _, t in caller.served][5:] == [60.0, 60.0]
    await asyncio.gather(*tasks)
    # Another context has its own windows the whole time.
    other = caller.start("2222222222")
    await settle()
    assert other.done()


async def test_a_429_with_retry_after_blocks_only_that_context_and_group() -> None:
    clock = ManualClock()
    budget = budget_of(clock)
    caller = Caller(budget, clock)
    await caller.start("1111111111", status=429, retry_after_s=30)

    blocked = caller.start("1111111111", META)
    same_context_other_group = caller.start("1111111111", DOWNLOAD)
    other_context_same_group = caller.start("2222222222", META)
    await settle()
    assert same_context_other_group.done() and other_context_same_group.done()
    assert not blocked.done()
    assert budget.remaining("1111111111", META)["blocked_for_s"] == 30.0
    with pytest.raises(BudgetExhausted) as refused:
        async with budget.slot(environment=ENV, context="1111111111", group=META, max_wait_s=10):
            pass
    assert refused.value.retry_after_s == pytest.approx(30.0)
    assert refused.value.context == "1111111111" and refused.value.group is META

    await clock.advance(29.9)
    assert not blocked.done()
    await clock.advance(0.1)
    assert blocked.done() and blocked.result() == pytest.approx(clock.now())


async def test_a_429_without_retry_after_backs_off_exponentially() -> None:
    clock = ManualClock()
    budget = budget_of(clock, backoff_base_s=1.0, backoff_max_s=3.0)
    caller = Caller(budget, clock)
    got: list[float] = []
    start = clock.now()
    for _ in range(4):
        task = caller.start("1111111111", OTHER, status=429)
        for _ in range(40):
            if task.done():
                break
            await clock.advance(0.25)
        got.append(task.result() - start)
    # Blocks of 1 s, 2 s, then capped at 3 s after each 429.
    assert got == [0.0, 1.0, 3.0, 6.0]
    # A success resets the streak.
    await clock.advance(3.0)
    await caller.start("1111111111", OTHER, status=200)
    task = caller.start("1111111111", OTHER, status=429)
    await settle()
    assert task.done()
    follow_up = caller.start("1111111111", OTHER)
    await clock.advance(0.75)
    assert not follow_up.done()
    await clock.advance(0.25)
    assert follow_up.done()


async def test_circuit_opens_fails_fast_half_opens_and_closes_on_a_good_probe() -> None:
    clock = ManualClock()
    budget = budget_of(
        clock, circuit_failure_threshold=3, circuit_cooldown_s=10.0, backoff_base_s=0.001, max_in_flight=3
    )
    caller = Caller(budget, clock)
    hold = asyncio.Event()
    failing = [caller.start(f"{i}" * 10, OTHER, status=503, hold=hold) for i in range(1, 4)]
    waiting = caller.start("4444444444", OTHER)  # behind the in-flight cap
    await settle()
    assert budget.queued(ENV) == 1
    hold.set()
    await asyncio.gather(*failing)
    assert budget.circuit_state(ENV) is CircuitState.OPEN
    # Whoever was waiting is told at once rather than left hanging.
    with pytest.raises(CircuitOpen):
        await waiting

    with pytest.raises(CircuitOpen) as refused:
        async with budget.slot(environment=ENV, context="5555555555", group=OTHER):
            pass
    assert refused.value.retry_after_s == pytest.approx(10.0)
    assert refused.value.environment == ENV

    await clock.advance(10.0)
    assert budget.circuit_state(ENV) is CircuitState.HALF_OPEN
    probe_hold = asyncio.Event()
    probe = caller.start("5555555555", OTHER, status=200, hold=probe_hold)
    await settle()
    assert caller.served[-1][0] == "5555555555"
    # Only one probe at a time: the others still fail fast.
    with pytest.raises(CircuitOpen):
        async with budget.slot(environment=ENV, context="6666666666", group=OTHER):
            pass
    probe_hold.set()
    await probe
    assert budget.circuit_state(ENV) is CircuitState.CLOSED
    await caller.start("6666666666", OTHER)


async def test_a_failed_probe_opens_the_circuit_for_another_cooldown() -> None:
    clock = ManualClock()
    budget = budget_of(clock, circuit_failure_threshold=2, circuit_cooldown_s=5.0, backoff_base_s=0.001)
    caller = Caller(budget, clock)
    for _ in range(2):
        task = caller.start("1111111111", OTHER, status=None)  # transport errors count too
        await clock.advance(0.01)
        await task
    assert budget.circuit_state(ENV) is CircuitState.OPEN
    await clock.advance(5.0)
    await caller.start("1111111111", OTHER, status=500)
    assert budget.circuit_state(ENV) is CircuitState.OPEN
    await clock.advance(4.9)
    assert budget.circuit_state(ENV) is CircuitState.OPEN
    await clock.advance(0.1)
    assert budget.circuit_state(ENV) is CircuitState.HALF_OPEN


async def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    clock = ManualClock()
    budget = budget_of(clock, circuit_failure_threshold=1, circuit_cooldown_s=5.0)
    caller = Caller(budget, clock)
    await caller.start("1111111111", OTHER, status=502)
    await clock.advance(5.0)
    stuck = caller.start("1111111111", OTHER, hold=asyncio.Event())
    await settle()
    stuck.cancel()
    await settle()
    await caller.start("2222222222", OTHER)
    assert budget.circuit_state(ENV) is CircuitState.CLOSED


async def test_after_a_5xx_callers_wait_a_full_jitter_delay() -> None:
    class Highest(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    clock = ManualClock()
    budget = budget_of(clock, rng=Highest(), backoff_base_s=2.0, circuit_failure_threshold=10)
    caller = Caller(budget, clock)
    await caller.start("1111111111", OTHER, status=500)
    failed_at = clock.now()
    retry = caller.start("2222222222", OTHER, status=500)  # any context of the environment waits
    await clock.advance(1.99)
    assert not retry.done()
    await clock.advance(0.01)
    assert await retry == pytest.approx(failed_at + 2.0)
    # Second consecutive failure: the ceiling doubles.
    again = caller.start("2222222222", OTHER)
    await clock.advance(3.99)
    assert not again.done()
    await clock.advance(0.01)
    assert await again == pytest.approx(clock.now())
    # Success cleared the failures: no delay any more.
    await caller.start("3333333333", OTHER)


async def test_one_noisy_context_cannot_starve_the_others() -> None:
    clock = ManualClock()
    budget = budget_of(clock, max_in_flight=1)
    caller = Caller(budget, clock)
    hold = asyncio.Event()
    noisy = [caller.start("9999999999", OTHER, hold=hold if i == 0 else None) for i in range(100)]
    others = [caller.start(f"10000000{i:02d}", OTHER) for i in range(10)]
    await settle()
    assert budget.queued(ENV) == 109
    hold.set()
    await asyncio.gather(*noisy, *others)

    order = [context for context, _ in caller.served]
    noisy_positions = [i for i, context in enumerate(order) if context == "9999999999"]
    last_other = max(i for i, context in enumerate(order) if context != "9999999999")
    assert last_other < noisy_positions[10]
    # In fact round-robin: one noisy call, then every other context, then the noisy rest.
    assert order[0] == "9999999999" and set(order[1:11]) == {f"10000000{i:02d}" for i in range(10)}


async def test_the_nearer_deadline_goes_first() -> None:
    clock = ManualClock()
    budget = budget_of(clock, max_in_flight=1, priority_band_s=3600.0)
    caller = Caller(budget, clock)
    hold = asyncio.Event()
    holder = caller.start("1111111111", OTHER, hold=hold)
    far = caller.start("2222222222", OTHER, priority=48 * 3600)
    near = caller.start("3333333333", OTHER, priority=2 * 3600)
    await settle()
    hold.set()
    await asyncio.gather(holder, far, near)
    assert [context for context, _ in caller.served] == ["1111111111", "3333333333", "2222222222"]


async def test_off_mode_never_waits() -> None:
    clock = ManualClock()
    budget = RateBudget(BudgetSettings(mode="off", max_in_flight=1), clock)
    caller = Caller(budget, clock)
    hold = asyncio.Event()
    tasks = [caller.start("1111111111", META, status=429, retry_after_s=60, hold=hold) for _ in range(500)]
    await settle()
    assert len(caller.served) == 500
    hold.set()
    await asyncio.gather(*tasks)
    await caller.start("1111111111", META)
    assert budget.remaining("1111111111", META) == {"group": "invoiceMetadata", "limited": False}


async def test_max_wait_refuses_with_the_time_to_the_next_slot() -> None:
    clock = ManualClock()
    budget = budget_of(clock)  # invoiceMetadata: 2/s
    caller = Caller(budget, clock)
    await asyncio.gather(caller.start("1111111111"), caller.start("1111111111"))
    await clock.advance(0.25)
    with pytest.raises(BudgetExhausted) as refused:
        async with budget.slot(environment=ENV, context="1111111111", group=META, max_wait_s=0.5):
            pass
    assert refused.value.retry_after_s == pytest.approx(0.75)
    assert budget.queued(ENV) == 0
    # Within the allowed wait it simply waits.
    patient = caller.start("1111111111", max_wait_s=1.0)
    await clock.advance(0.75)
    assert await patient == pytest.approx(clock.now())


async def test_max_wait_also_bounds_a_wait_for_the_in_flight_cap() -> None:
    clock = ManualClock()
    budget = budget_of(clock, max_in_flight=1)
    caller = Caller(budget, clock)
    hold = asyncio.Event()
    holder = caller.start("1111111111", OTHER, hold=hold)
    impatient = caller.start("2222222222", OTHER, max_wait_s=5.0)
    await clock.advance(4.9)
    assert not impatient.done()
    await clock.advance(0.1)
    with pytest.raises(BudgetExhausted):
        await impatient
    hold.set()
    await holder
    assert budget.queued(ENV) == 0


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    clock = ManualClock()
    budget = budget_of(clock, max_in_flight=1)
    caller = Caller(budget, clock)
    hold = asyncio.Event()
    holder = caller.start("1111111111", OTHER, hold=hold)
    gone = caller.start("2222222222", OTHER)
    next_one = caller.start("3333333333", OTHER)
    await settle()
    gone.cancel()
    hold.set()
    await asyncio.gather(holder, next_one)
    assert [c for c, _ in caller.served] == ["1111111111", "3333333333"]
    # And the cap was not leaked: another call goes at once.
    await caller.start("4444444444", OTHER)


async def test_remaining_shows_the_budget_left() -> None:
    clock = ManualClock()
    budget = budget_of(clock)
    caller = Caller(budget, clock)
    await asyncio.gather(caller.start("1111111111"), caller.start("1111111111"))
    left = budget.remaining("1111111111", META)
    assert left == {
        "group": "invoiceMetadata",
        "limited": True,
        "windows": {
            "per_second": {"limit": 2, "used": 2, "remaining": 0},
            "per_minute": {"limit": 5, "used": 2, "remaining": 3},
            "per_hour": {"limit": 100, "used": 2, "remaining": 98},
        },
        "blocked_for_s": 0.0,
        "next_slot_in_s": 1.0,
    }
    fresh = budget.remaining("2222222222", "invoiceMetadata")
    assert fresh["windows"]["per_second"]["remaining"] == 2 and fresh["next_slot_in_s"] == 0.0


async def test_a_new_budget_waits_out_the_second_its_previous_life_may_have_filled() -> None:
    # A restart right after a burst: KSeF's 1 s window may still hold the old process's calls, which this budget
    # cannot see. It admits nothing until that window has slid by, then its full share at once.
    clock = ManualClock()
    budget = RateBudget(BudgetSettings(), clock)  # production, restart_quiet_s = 1
    caller = Caller(budget, clock)
    tasks = [caller.start("1111111111") for _ in range(7)]
    await settle()
    assert caller.served == []
    assert budget.remaining("1111111111", "invoiceMetadata")["next_slot_in_s"] == pytest.approx(1.0)
    await clock.advance(0.999)
    assert caller.served == []
    await clock.advance(0.001)
    await asyncio.gather(*tasks)
    assert len(caller.served) == 7


async def test_production_mode_keeps_the_safety_margin() -> None:
    clock = ManualClock()
    budget = RateBudget(BudgetSettings(restart_quiet_s=0), clock)  # production, 90 %
    caller = Caller(budget, clock)
    tasks = [caller.start("1111111111") for _ in range(8)]
    await settle()
    # KSeF allows 8 metadata queries a second; we use 7.
    assert len(caller.served) == 7
    await clock.advance(1.0)
    await asyncio.gather(*tasks)


async def test_random_arrivals_never_exceed_any_window() -> None:
    """Calls arrive at random moments across contexts and groups with random latencies; KSeF's own counter
    (stamping each request anywhere between send and answer) never sees a window over its limit."""
    rng = random.Random(20261201)
    clock = ManualClock()
    limits = {"invoiceMetadata": Limits(3, 7, 12), "invoiceDownload": Limits(2, 9, 30)}
    budget = budget_of(
        clock,
        max_in_flight=3,
        limits={group: GroupLimits(**vars(limit)) for group, limit in limits.items()},
    )
    stamps: dict[tuple[str, str], list[float]] = {}

    async def call(context: str, group: EndpointGroup, latency: float, where: float) -> None:
        async with budget.slot(environment=ENV, context=context, group=group) as slot:
            sent_at = clock.now()
            await clock.sleep(latency)
            stamps.setdefault((context, group.value), []).append(sent_at + latency * where)
            slot.report(status=200)

    tasks = []
    for _ in range(150):
        group = rng.choice([META, DOWNLOAD])
        tasks.append(asyncio.create_task(call(rng.choice("AB") * 10, group, rng.uniform(0, 2), rng.random())))
        await clock.advance(rng.expovariate(1.0))
    for _ in range(200):  # 200 simulated minutes is plenty; more would mean a stall
        if all(t.done() for t in tasks):
            break
        await clock.advance(60.0)
    await asyncio.gather(*tasks)

    for (_, group_name), arrivals in stamps.items():
        arrivals.sort()
        for i, t in enumerate(arrivals):
            for span, limit in zip((1.0, 60.0, 3600.0), limits[group_name].counts, strict=True):
                assert sum(1 for u in arrivals[:i] if u > t - span) < limit
    assert sum(len(a) for a in stamps.values()) == 150
