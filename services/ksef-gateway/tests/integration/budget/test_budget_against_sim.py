"""The rate-limit budget in front of the real client against the simulator's limiter (REFERENCE.md §13): a burst of
metadata queries for one context is spaced out so that KSeF never answers 429, while the same burst without the
budget is refused."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from ksef_gateway.budget.service import RateBudget, Unlimited
from ksef_gateway.ksef import Environment, KsefClients, KsefRateLimited
from ksef_gateway.settings import BudgetSettings, GroupLimits
from ksef_gateway.testing import KsefHarness, RecordingObserver, ksef_settings_for, valid_nips
from ksef_sim.ratelimit import PRODUCTION_LIMITS
from ksef_sim.testing import RunningSim

(BUYER,) = valid_nips(1, start=931_000_000)
PER_SECOND = 3
BURST = 10


async def test_a_burst_of_metadata_queries_is_spaced_out_and_never_refused(
    ksef: KsefHarness, running: RunningSim
) -> None:
    session = await ksef.client.authenticate(BUYER, await ksef.token_credential(BUYER))
    # Small limits for this context only (TEST's /testdata/rate-limits), so the test spans seconds, not minutes;
    # every other group keeps KSeF's production values.
    table = {group.value: limit.as_json() for group, limit in PRODUCTION_LIMITS.items() if group.value != "public"}
    table["invoiceMetadata"] = {"perSecond": PER_SECOND, "perMinute": 100, "perHour": 1000}
    response = await ksef.http.post(
        f"{running.api_url}/testdata/rate-limits",
        json={"rateLimits": table},
        headers={"Authorization": f"Bearer {session.access_token}"},
    )
    assert response.status_code == 200, response.text

    # The budget knows the same numbers and uses all of them (no safety margin): the exactness is the point.
    budget = RateBudget(
        BudgetSettings(
            mode="custom",
            usable_fraction=1.0,
            limits={"invoiceMetadata": GroupLimits(per_second=PER_SECOND, per_minute=100, per_hour=1000)},
        )
    )
    recorder = RecordingObserver()
    clients = KsefClients(ksef.http, settings=ksef_settings_for(running.api_url), budget=budget, observer=recorder)
    client = clients.for_environment(Environment.SIM)
    filters: dict[str, Any] = {
        "subjectType": "Subject2",
        "dateRange": {
            "dateType": "PermanentStorage",
            "from": (running.sim.clock.now() - timedelta(days=7)).isoformat(),
        },
    }

    started = time.monotonic()
    pages = await asyncio.gather(*(client.query_metadata(session.access_token, filters) for _ in range(BURST)))
    elapsed = time.monotonic() - started
    await budget.aclose()

    assert len(pages) == BURST
    queries = [c for c in recorder.calls if c.operation == "invoices.query_metadata"]
    assert [(c.http_status, c.outcome, c.attempts) for c in queries] == [(200, "ok", 1)] * BURST
    # Ten queries at three a second: the last batch can only go once three full seconds have passed.
    assert elapsed >= (BURST - 1) // PER_SECOND
    assert budget.remaining(BUYER, "invoiceMetadata")["windows"]["per_minute"]["used"] == BURST

    # Control: the same burst without the budget is refused by the simulator, so the limits above were real.
    unlimited = KsefClients(ksef.http, settings=ksef_settings_for(running.api_url), budget=Unlimited())
    control = await asyncio.gather(
        *(
            unlimited.for_environment(Environment.SIM).query_metadata(session.access_token, filters)
            for _ in range(BURST)
        ),
        return_exceptions=True,
    )
    assert any(isinstance(outcome, KsefRateLimited) for outcome in control)
