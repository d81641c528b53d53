"""200 client NIPs under KSeF's production rate limits, against the simulator over real HTTP with its production
limits on: a real gateway runtime on PostgreSQL (the sync scheduler, the real KSeF client, ``RateBudget`` in
production mode with the default 0.9 usable fraction, the communication log), one certificate credential per client.

- No 429 storm: the simulator answered no 429 at all (its ``/_sim/stats`` counts ``/v2`` answers per status) and
  the communication log holds no rate-limited call, although 200 contexts authenticate and sync at once from one IP
  (KSeF counts the auth endpoints per IP, the rest per context and IP: REFERENCE.md §13).
- Every invoice arrives exactly once: stored invoices and ``invoice.fetched`` outbox rows per client equal what the
  simulator holds for that buyer.
- Fair progress: no client is polled a second time before every client has had its first poll (the early finishers
  are due again long before the last client's first run starts, so a scheduler that let them run again would show).
- Outage: while the simulator answers every ``/v2`` call 503, the environment's circuit opens and the number of calls
  that still reach KSeF is bounded by the breaker (threshold + in flight + one probe per cooldown), not by the 200
  clients that all try to sync meanwhile; once it is lifted the circuit closes, the invoices seeded during the
  outage all arrive, and no client's checkpoint or HWM ever moved backwards (sampled throughout).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from ksef_gateway.budget.service import CircuitState, RateBudget
from ksef_gateway.communication.service import CommunicationLog
from ksef_gateway.db import communication_log, purchase_invoice, sync_state
from ksef_gateway.ksef.client import KsefClients
from ksef_gateway.ksef.credentials import Credential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.main import DEFINITION
from ksef_gateway.sessions.service import NoCredential, SessionManager
from ksef_gateway.settings import BudgetSettings, GatewaySettings, KsefSettings, SyncSettings
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.sync.engine import RunReport, SyncEngine
from ksef_gateway.sync.ksef import GatewayKsef
from ksef_gateway.sync.scheduler import SyncScheduler, SyncTarget
from ksef_gateway.testing import owner_certificate, valid_nips
from ksef_sim.domain.seed import SeedOptions, seed_invoices
from ksef_sim.records import StoredInvoice
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.contracts.invoices import InvoiceFetched
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing import wait_until

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
CLIENTS = 200
FIRST_ROUND = 3  # invoices per client before the first sync
DURING_OUTAGE = 2  # invoices per client that become final while KSeF is down
CIRCUIT_THRESHOLD = 5
CIRCUIT_COOLDOWN_S = 1.0
MAX_IN_FLIGHT = 8
# The simulator's 503s say "come back in a second", so recovery does not wait out its default minute.
OUTAGE_RETRY_AFTER_S = 1


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            rate_limits=RateLimitMode.PRODUCTION,
            # Final at once and no indexing lag: the HWM is the simulator's now, so an invoice seeded after a
            # checkpoint is always beyond it.
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=13,
        )

    with serve(settings) as running:
        yield running


class Clients:
    """The vault's part (credentials and the clients to sync), kept out of the way: one owner certificate each."""

    def __init__(self, nips: list[str]) -> None:
        self.credentials: dict[str, Credential] = {nip: owner_certificate(nip) for nip in nips}

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        if context_nip not in self.credentials:
            raise NoCredential(context_nip)
        return Environment.SIM, self.credentials[context_nip]

    async def targets(self) -> list[SyncTarget]:
        return [SyncTarget(nip, (SubjectType.SUBJECT2,)) for nip in self.credentials]


@dataclasses.dataclass(frozen=True)
class RunEvent:
    kind: str  # start | end
    nip: str
    at: float  # time.monotonic()
    report: RunReport | None = None


class RecordingEngine(SyncEngine):
    """The real engine, with the order in which the scheduler started and finished every run."""

    events: list[RunEvent]

    async def run(self, nip: str, subject: SubjectType) -> RunReport:
        self.events.append(RunEvent("start", nip, time.monotonic()))
        report = await super().run(nip, subject)
        self.events.append(RunEvent("end", nip, time.monotonic(), report))
        return report


class ManyClientsSync:
    """What ``wiring.Gateway`` builds for the sync (shared HTTP client, ``RateBudget``, communication log, session
    manager, engine, scheduler), with the test's credential source instead of the vault."""

    def __init__(self, runtime: ServiceRuntime, clients: Clients) -> None:
        settings = runtime.settings
        assert isinstance(settings, GatewaySettings)
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=MAX_IN_FLIGHT * 2))
        self.budget = RateBudget(settings.budget)
        self.log = CommunicationLog(runtime.db, settings.ksef.replica_id)
        ksef = KsefClients(self.http, settings=settings.ksef, budget=self.budget, observer=self.log)
        self.sessions = SessionManager(ksef, clients, None)
        self.engine = RecordingEngine(
            runtime.db.sessionmaker, runtime.outbox, GatewayKsef(self.sessions), settings.sync
        )
        self.engine.events = []
        self.scheduler = SyncScheduler(self.engine, clients, settings.sync)

    async def start(self) -> None:
        await self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.sessions.close()
        await self.budget.aclose()
        await self.http.aclose()


@pytest.fixture
async def runtimes() -> AsyncIterator[list[ServiceRuntime]]:
    started: list[ServiceRuntime] = []
    yield started
    for runtime in started:
        if runtime.started:
            await runtime.stop()


def numbers_in_sim(sim: RunningSim) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for invoice in sim.sim.store.all(StoredInvoice):
        found.setdefault(str(invoice.buyer_identifier.value), set()).add(invoice.ksef_number)
    return found


async def sim_stats(http: httpx.AsyncClient) -> dict[str, int]:
    response = await http.get("/_sim/stats")
    assert response.status_code == 200, response.text
    return {status: int(count) for status, count in response.json()["responsesByStatus"].items()}


async def put_faults(http: httpx.AsyncClient, **faults: Any) -> None:
    response = await (http.put("/_sim/faults", json=faults) if faults else http.delete("/_sim/faults"))
    assert response.status_code == 200, response.text


@dataclasses.dataclass(frozen=True)
class Position:
    checkpoint: datetime | None
    hwm: datetime | None
    last_error: str | None


async def positions(runtime: ServiceRuntime) -> dict[str, Position]:
    async with runtime.db.sessionmaker() as session:
        rows = (
            await session.execute(
                select(sync_state.c.client_nip, sync_state.c.checkpoint, sync_state.c.hwm, sync_state.c.last_error)
            )
        ).all()
    return {row.client_nip: Position(row.checkpoint, row.hwm, row.last_error) for row in rows}


async def stored_per_client(runtime: ServiceRuntime) -> dict[str, set[str]]:
    async with runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(purchase_invoice.c.client_nip, purchase_invoice.c.ksef_number))).all()
    found: dict[str, set[str]] = {}
    for nip, number in rows:
        found.setdefault(nip, set()).add(number)
    return found


async def events_per_client(runtime: ServiceRuntime) -> dict[str, list[str]]:
    outbox = runtime.definition.tables.outbox
    async with runtime.db.sessionmaker() as session:
        rows = (
            await session.execute(select(outbox.c.key, outbox.c.payload).where(outbox.c.topic == InvoiceFetched.topic))
        ).all()
    found: dict[str, list[str]] = {}
    for key, payload in rows:
        found.setdefault(key, []).append(Envelope.model_validate_json(payload).parse(InvoiceFetched).ksef_number)
    return found


async def log_outcomes(runtime: ServiceRuntime, since: datetime | None = None) -> dict[tuple[str, int | None], int]:
    log = communication_log
    query = select(log.c.outcome, log.c.http_status, func.count()).group_by(log.c.outcome, log.c.http_status)
    if since is not None:
        query = query.where(log.c.at >= since)
    async with runtime.db.sessionmaker() as session:
        rows = (await session.execute(query)).all()
    return {(outcome, status): int(count) for outcome, status, count in rows}


class PositionWatch:
    """Samples every client's checkpoint and HWM in the background and remembers any that moved backwards."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.highest: dict[tuple[str, str], datetime] = {}
        self.regressions: list[str] = []
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def observe(self, seen: dict[str, Position]) -> None:
        for nip, position in seen.items():
            for name, value in (("checkpoint", position.checkpoint), ("hwm", position.hwm)):
                key = (nip, name)
                before = self.highest.get(key)
                if before is not None and (value is None or value < before):
                    self.regressions.append(f"{nip} {name} {before.isoformat()} -> {value}")
                if value is not None and (before is None or value > before):
                    self.highest[key] = value
        self.samples += 1

    async def _loop(self) -> None:
        while True:
            self.observe(await positions(self.runtime))
            await asyncio.sleep(0.25)  # a sampling period, not a synchronisation

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.mark.postgres
async def test_200_clients_under_production_limits_no_429s_fair_progress_and_an_outage_that_loses_nothing(
    sim: RunningSim, pg_url: str, runtimes: list[ServiceRuntime]
) -> None:
    nips = valid_nips(CLIENTS, start=612_000_000)
    for nip in nips:
        # Straight into the simulator's store (it is idle): 600 signed FA(3) documents in one go.
        seed_invoices(sim.sim, SeedOptions(buyer_nip=nip, count=FIRST_ROUND, sellers=2, spread_days=10))
    assert sim.sim.limiter.mode is RateLimitMode.PRODUCTION

    sync = SyncSettings(
        # Polled again a second after a run: far more often than KSeF's 15 minutes, so early finishers are due
        # again while most clients still wait for their first run, and keep polling through the outage.
        min_poll_interval_s=1.0,
        tick_interval_s=0.2,
        export_poll_interval_s=0.05,
        export_poll_max_interval_s=0.1,
        retry_base_s=0.5,
        retry_max_s=2.0,
        backfill_months=1,
    )
    budget = BudgetSettings(
        mode="production",
        max_in_flight=MAX_IN_FLIGHT,
        circuit_failure_threshold=CIRCUIT_THRESHOLD,
        circuit_cooldown_s=CIRCUIT_COOLDOWN_S,
    )
    assert budget.usable_fraction == 0.9
    settings = GatewaySettings(
        db=DatabaseSettings(url=pg_url),
        messaging=MessagingSettings(transport="inprocess", relay_poll_interval_s=0.05),
        ksef=KsefSettings(
            sim_base_url=sim.api_url,
            replica_id=f"many-{uuid.uuid4().hex[:6]}",
            auth_poll_interval_s=0.02,
            retry_initial_backoff_s=0.05,
            retry_max_backoff_s=0.2,
        ),
        budget=budget,
        sync=sync,
    )
    clients = Clients(nips)
    holder: list[ManyClientsSync] = []

    def components(runtime: ServiceRuntime) -> tuple[ManyClientsSync]:
        holder.append(ManyClientsSync(runtime, clients))
        return (holder[-1],)

    runtime = ServiceRuntime(dataclasses.replace(DEFINITION, components=components), settings, migrate_on_start=True)
    began = time.monotonic()
    await runtime.start()
    runtimes.append(runtime)
    gateway = holder[0]
    events = gateway.engine.events

    async with httpx.AsyncClient(base_url=sim.root_url, timeout=httpx.Timeout(10.0, read=60.0)) as operator:
        # --- first round: every client's backlog, under production limits -----------------------------------------

        async def first_round_stored() -> bool:
            stored = await stored_per_client(runtime)
            return len(stored) == CLIENTS and all(len(numbers) == FIRST_ROUND for numbers in stored.values())

        await wait_until(first_round_stored, timeout=90, interval=0.5, what="every client's first invoices")
        first_round_s = time.monotonic() - began

        async def first_runs_ended_and_second_round_started() -> bool:
            ended = {e.nip for e in events if e.kind == "end"}
            return len(ended) == CLIENTS and len([e for e in events if e.kind == "start"]) > CLIENTS

        await wait_until(first_runs_ended_and_second_round_started, timeout=30, what="the second round of polls")

        starts: dict[str, list[float]] = {}
        ends: dict[str, list[RunEvent]] = {}
        for event in list(events):
            if event.kind == "start":
                starts.setdefault(event.nip, []).append(event.at)
            else:
                ends.setdefault(event.nip, []).append(event)
        assert set(starts) == set(nips)
        first_ends = {nip: ends[nip][0] for nip in nips}
        # Each client's first run caught up with its backlog by itself: no budget wait sent anyone away.
        assert all(e.report is not None and e.report.error is None for e in first_ends.values()), [
            e.report for e in first_ends.values() if e.report is not None and e.report.error
        ][:3]
        assert sum(e.report.stored for e in first_ends.values() if e.report) == CLIENTS * FIRST_ROUND
        # Fair progress. The precondition that makes it a test: clients that finished early were due again (min
        # poll interval after their first run) before the last client's first run had even started ...
        last_first_start = max(times[0] for times in starts.values())
        earliest_due_again = min(e.at for e in first_ends.values()) + sync.min_poll_interval_s
        assert earliest_due_again < last_first_start, (earliest_due_again - began, last_first_start - began)
        # ... and still nobody was polled twice before everybody had been polled once.
        second_starts = [times[1] for times in starts.values() if len(times) > 1]
        assert second_starts and min(second_starts) > last_first_start

        # No 429 storm: not a single 429 although 200 contexts authenticated and synced from one IP at once.
        answered = await sim_stats(operator)
        assert "429" not in answered, answered
        assert answered.get("200", 0) > CLIENTS * 4, answered  # auth + export + status + ... per client
        assert not {k: v for k, v in (await log_outcomes(runtime)).items() if k[0] != "ok"}

        # --- outage ----------------------------------------------------------------------------------------------
        watch = PositionWatch(runtime)
        before = await positions(runtime)
        watch.observe(before)
        assert all(p.checkpoint is not None and p.hwm is not None and p.last_error is None for p in before.values())
        watch.start()
        try:
            assert "503" not in await sim_stats(operator)  # so every 503 from here on is the outage's
            outage_began, outage_began_at = time.monotonic(), datetime.now(UTC)
            await put_faults(operator, outage=True, retryAfterSeconds=OUTAGE_RETRY_AFTER_S)
            reached_before = await sim_stats(operator)
            reached_before.pop("503", None)

            async def circuit_open() -> bool:
                return gateway.budget.circuit_state(Environment.SIM) is not CircuitState.CLOSED

            await wait_until(circuit_open, timeout=20, what="the circuit to open")

            async def every_client_tried() -> bool:
                # Each client's sync ran into the outage (a KSeF failure or the open circuit) and was rescheduled.
                return all(p.last_error is not None for p in (await positions(runtime)).values())

            await wait_until(every_client_tried, timeout=30, interval=0.2, what="every client to run into the outage")
            tried = await positions(runtime)
            stopped_by_circuit = [p for p in tried.values() if p.last_error and "is failing" in p.last_error]
            assert len(stopped_by_circuit) > CLIENTS / 2, [p.last_error for p in tried.values()][:5]

            outage_s = time.monotonic() - outage_began
            answered = await sim_stats(operator)
            reached = {status: answered.get(status, 0) - reached_before.get(status, 0) for status in answered}
            reached = {status: count for status, count in reached.items() if count}
            # Calls that reached KSeF meanwhile were answered 503 (only those already past its front door when the
            # outage began could still finish otherwise), and there were few of them: the ones that opened the
            # circuit, those already in flight, one probe per cooldown; not one per client.
            assert sum(count for status, count in reached.items() if status != "503") <= MAX_IN_FLIGHT, reached
            bound = CIRCUIT_THRESHOLD + MAX_IN_FLIGHT + math.ceil(outage_s / CIRCUIT_COOLDOWN_S) + 2
            assert reached["503"] <= bound < CLIENTS, (reached, bound, outage_s)
            # The communication log shows the calls that failed (each after one or more 503s), and no row for
            # the calls the open circuit refused before they left.
            logged = await log_outcomes(runtime, since=outage_began_at)
            assert 1 <= logged.get(("unavailable", 503), 0) <= reached["503"], (logged, reached)

            # Invoices that become final while KSeF is down, after every checkpoint the gateway holds and after the
            # answers given before the outage: the sync must pick them up from its HWM once KSeF is back.
            during = await positions(runtime)
            newest = max(p.checkpoint for p in during.values() if p.checkpoint is not None)
            sim_now = sim.sim.clock.now()
            start = sim_now - timedelta(milliseconds=500)
            assert newest < start, (newest, start)
            for nip in nips:
                response = await operator.post(
                    "/_sim/seed",
                    json={
                        "buyerNip": nip,
                        "count": DURING_OUTAGE,
                        "sellers": 1,
                        "start": start.isoformat(),
                        "spreadDays": 0.5 / 86400,
                    },
                )
                assert response.status_code == 201, response.text

            await put_faults(operator)

            # --- recovery ----------------------------------------------------------------------------------------
            expected = numbers_in_sim(sim)
            assert all(len(expected[nip]) == FIRST_ROUND + DURING_OUTAGE for nip in nips)

            async def all_arrived() -> bool:
                stored = await stored_per_client(runtime)
                return all(len(stored.get(nip, ())) == FIRST_ROUND + DURING_OUTAGE for nip in nips)

            await wait_until(all_arrived, timeout=60, interval=0.5, what="the invoices seeded during the outage")
            assert gateway.budget.circuit_state(Environment.SIM) is CircuitState.CLOSED
        finally:
            await watch.stop()
        after = await positions(runtime)
        watch.observe(after)

        # Still no 429 anywhere, recovery included.
        answered = await sim_stats(operator)
        assert "429" not in answered, answered

    # The HWM was never lost: no checkpoint or HWM moved backwards at any sample, and every client's moved on past
    # where it stood before the outage (its new invoices lie beyond it).
    assert watch.samples > 10 and not watch.regressions, watch.regressions[:5]
    for nip in nips:
        old, new = before[nip], after[nip]
        assert old.checkpoint is not None and new.checkpoint is not None and new.checkpoint > old.checkpoint
        assert old.hwm is not None and new.hwm is not None and new.hwm > old.hwm

    # Exactly once: what each client holds, and its invoice.fetched events, are what KSeF holds for it.
    stored = await stored_per_client(runtime)
    fetched = await events_per_client(runtime)
    for nip in nips:
        assert stored[nip] == expected[nip]
        assert sorted(fetched[nip]) == sorted(expected[nip])

    outcomes = await log_outcomes(runtime)
    assert not [k for k in outcomes if k[0] == "rate_limited" or k[1] == 429], outcomes
    print(f"first round {first_round_s:.1f} s; outage {outage_s:.1f} s; calls during the outage {reached}")
