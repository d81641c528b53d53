"""The rate-limit budget and the communication log with many contexts, against the simulator with KSeF's production
limits (REFERENCE.md §13):

- the public endpoints (challenge, KSeF-token and XAdES submission) are limited per IP, not per context: a hundred
  and twenty clients starting their authentication at once share one window and KSeF answers no 429;
- a call whose attempts reached KSeF and failed before the circuit opened is in the communication log even though
  the open circuit refused its next retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from ksef_gateway.budget.service import CircuitOpen, CircuitState, MonotonicClock, RateBudget
from ksef_gateway.ksef import Environment, KsefClient, KsefClients
from ksef_gateway.settings import BudgetSettings
from ksef_gateway.testing import RecordingObserver, ksef_settings_for, valid_nips
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve

CONTEXTS = 120
PUBLIC_PER_SECOND = 54  # KSeF's 60 a second per IP, times the default usable fraction 0.9


@pytest.fixture
def production(tmp_path: Path) -> Iterator[RunningSim]:
    def settings(port: int) -> SimSettings:
        return SimSettings(database_path=tmp_path / "ksef-sim.sqlite3", rate_limits=RateLimitMode.PRODUCTION)

    with serve(settings) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


class StoppableClock(MonotonicClock):
    """Real time until ``stop()``: then two reads of the sliding windows see the same instant (a burst's oldest
    entries leave the per-second window while time runs, so two reads a moment apart may differ by one)."""

    stopped_at: float | None = None

    def now(self) -> float:
        return super().now() if self.stopped_at is None else self.stopped_at

    def stop(self) -> None:
        self.stopped_at = super().now()


def client_of(
    running: RunningSim, http: httpx.AsyncClient, budget: RateBudget, recorder: RecordingObserver
) -> KsefClient:
    clients = KsefClients(http, settings=ksef_settings_for(running.api_url), budget=budget, observer=recorder)
    return clients.for_environment(Environment.SIM)


async def test_public_endpoints_share_one_per_ip_window_across_contexts(
    production: RunningSim, http: httpx.AsyncClient
) -> None:
    clock = StoppableClock()
    budget = RateBudget(BudgetSettings(mode="production"), clock)
    recorder = RecordingObserver()
    client = client_of(production, http, budget, recorder)

    started = time.monotonic()
    try:
        await asyncio.gather(*(client.challenge(nip) for nip in valid_nips(CONTEXTS, start=815_000_000)))
    finally:
        await budget.aclose()
    elapsed = time.monotonic() - started

    # Counted per context, every client would have had a public window of its own and KSeF would have refused most
    # of the burst; counted per IP as KSeF does, the burst is spaced out over the 1 s window and none is refused.
    assert 429 not in production.sim.traffic.by_status, production.sim.traffic.by_status
    assert [c.outcome for c in recorder.calls] == ["ok"] * CONTEXTS
    assert elapsed >= (CONTEXTS - 1) // PUBLIC_PER_SECOND
    clock.stop()
    assert budget.remaining(None, "public") == budget.remaining("1234563218", "public")


async def test_failed_attempts_are_logged_when_the_open_circuit_refuses_the_retry(
    production: RunningSim, http: httpx.AsyncClient
) -> None:
    budget = RateBudget(BudgetSettings(mode="production", circuit_failure_threshold=2, circuit_cooldown_s=30))
    recorder = RecordingObserver()
    client = client_of(production, http, budget, recorder)
    response = await http.put(f"{production.root_url}/_sim/faults", json={"outage": True, "retryAfterSeconds": 0})
    assert response.status_code == 200, response.text

    try:
        with pytest.raises(CircuitOpen):
            await client.public_keys()  # idempotent: retried on 503, up to three times
        assert budget.circuit_state(Environment.SIM) is CircuitState.OPEN
    finally:
        await budget.aclose()

    # Two attempts reached KSeF and opened the circuit; the third never left. The log has the call as it happened.
    assert production.sim.traffic.by_status == {503: 2}
    (call,) = recorder.calls
    assert (call.operation, call.outcome, call.http_status, call.attempts) == (
        "security.public_keys",
        "unavailable",
        503,
        2,
    )
