"""The operators' overview's pure rules: what the sync's bookkeeping says of the last run, merging keyset pages of
NIPs from several sources, the hourly window out of the budget's answer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from ksef_gateway.budget.service import EndpointGroup, RateBudget
from ksef_gateway.operations.domain import SyncOutcome, hour_budget, last_sync, max_lag, merge_pages
from ksef_gateway.settings import BudgetSettings

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("fields", "outcome", "finished"),
    [
        ({}, SyncOutcome.NEVER, None),
        ({"running": True, "last_run_at": T0}, SyncOutcome.RUNNING, None),
        # Started and not ended (on the context's owner, or cut short by a restart).
        ({"last_run_at": T0 + 9 * S, "last_success_at": T0}, SyncOutcome.RUNNING, None),
        ({"last_run_at": T0, "last_success_at": T0 + 5 * S}, SyncOutcome.OK, T0 + 5 * S),
        (
            {
                "last_run_at": T0,
                "last_success_at": T0 - S,
                "last_error": "2 invoice(s) rejected: …",
                "last_error_at": T0 + 3 * S,
            },
            SyncOutcome.REJECTED_INVOICES,
            T0 + 3 * S,
        ),
        (
            {"last_run_at": T0, "last_error": "KSeF 429", "last_error_at": T0 + 2 * S, "consecutive_failures": 1},
            SyncOutcome.FAILED,
            T0 + 2 * S,
        ),
        # Gave way to the budget after an earlier failure: the error is the new run's, its stamp the old one's.
        (
            {"last_run_at": T0, "last_error": "no slot", "last_error_at": T0 - 60 * S, "consecutive_failures": 1},
            SyncOutcome.DEFERRED,
            None,
        ),
        ({"last_run_at": T0, "last_success_at": T0 - 60 * S, "last_error": "lease lost"}, SyncOutcome.DEFERRED, None),
    ],
)
def test_the_last_run_as_the_engine_recorded_it(
    fields: dict[str, object], outcome: SyncOutcome, finished: object
) -> None:
    arguments: dict[str, object] = {
        "running": False,
        "last_run_at": None,
        "last_success_at": None,
        "last_error": None,
        "last_error_at": None,
        "consecutive_failures": 0,
    } | fields
    seen = last_sync(**arguments)  # type: ignore[arg-type]
    assert (seen.outcome, seen.finished_at) == (outcome, finished)


def test_merged_keyset_pages_walk_the_union_without_gaps_or_repeats() -> None:
    rng = random.Random(7)
    universe = sorted({f"{rng.randrange(10**9, 10**10)}" for _ in range(200)})
    sources = [sorted(rng.sample(universe, rng.randrange(0, 120))) for _ in range(4)]
    union = sorted(set().union(*sources))

    def first_after(source: list[str], after: str | None, n: int) -> list[str]:
        return [nip for nip in source if after is None or nip > after][:n]

    for limit in (1, 3, 50, 500):
        seen: list[str] = []
        after: str | None = None
        while True:
            page, more = merge_pages([first_after(s, after, limit + 1) for s in sources], limit)
            assert len(page) <= limit
            seen += page
            if not more:
                break
            after = page[-1]
        assert seen == union


def test_the_hourly_window_counts_calls_and_is_absent_when_nothing_is_limited() -> None:
    budget = RateBudget(BudgetSettings(restart_quiet_s=0))
    fresh = hour_budget(budget.remaining("5265877635", EndpointGroup.INVOICE_EXPORT))
    assert fresh is not None and fresh.used == 0 and fresh.remaining == fresh.limit == 18  # 90 % of KSeF's 20
    assert hour_budget(RateBudget(BudgetSettings(mode="off")).remaining("5265877635", EndpointGroup.OTHER)) is None
    assert max_lag([None, timedelta(minutes=3), timedelta(minutes=1)]) == timedelta(minutes=3)
    assert max_lag([None]) is None


async def test_the_hourly_window_moves_with_the_calls_made() -> None:
    budget = RateBudget(BudgetSettings(restart_quiet_s=0))
    for _ in range(3):
        async with budget.slot(environment="sim", context="5265877635", group=EndpointGroup.INVOICE_EXPORT) as slot:
            slot.report(status=200)
    window = hour_budget(budget.remaining("5265877635", EndpointGroup.INVOICE_EXPORT))
    assert window is not None and (window.used, window.remaining) == (3, window.limit - 3)
    other = hour_budget(budget.remaining("1112223303", EndpointGroup.INVOICE_EXPORT))
    assert other is not None and other.used == 0
    await budget.aclose()
