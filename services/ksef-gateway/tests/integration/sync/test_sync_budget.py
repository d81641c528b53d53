"""The purchase sync under a tight rate-limit budget, through the real KSeF client and ``RateBudget`` against the
simulator over HTTP: the sync's budget hints (month-close priority, ``budget_max_wait_s``) reach every slot, a client
whose window is exhausted is rescheduled (``BudgetExhausted``) instead of holding the only worker, and the scheduler
moves on to the next client; the client nearer its month-close deadline is served first."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

import ksef_sim.domain.exports as sim_exports
from ksef_gateway.budget.service import EndpointGroup, RateBudget, Slot
from ksef_gateway.ksef.client import KsefClients
from ksef_gateway.ksef.credentials import Credential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.main import DEFINITION
from ksef_gateway.purchases import repository as purchases
from ksef_gateway.sessions.service import NoCredential, SessionManager
from ksef_gateway.settings import BudgetSettings, GatewaySettings, GroupLimits, KsefSettings, SyncSettings
from ksef_gateway.sync import repository as sync_repository
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.sync.engine import SyncEngine
from ksef_gateway.sync.ksef import GatewayKsef
from ksef_gateway.sync.scheduler import SyncScheduler, SyncTarget
from ksef_gateway.testing import owner_certificate, valid_nips
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.runtime import ServiceRuntime
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing import wait_until

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
EXPORT_CAP = 5
WARSAW = ZoneInfo("Europe/Warsaw")


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    real_build = sim_exports.build_archive

    def capped(*args: Any, **kwargs: Any) -> sim_exports.BuiltArchive:
        # Five invoices per package: a client with twelve needs three export windows.
        kwargs["max_invoices"] = min(kwargs.get("max_invoices", EXPORT_CAP), EXPORT_CAP)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(sim_exports, "build_archive", capped)

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            rate_limits=RateLimitMode.OFF,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=7,
        )

    with serve(settings) as running:
        yield running


class RecordingBudget:
    """``RateBudget`` with a record of what every caller asked for."""

    def __init__(self, inner: RateBudget) -> None:
        self.inner = inner
        self.asked: list[tuple[str | None, EndpointGroup, float, float | None]] = []

    def slot(
        self,
        *,
        environment: str,
        context: str | None,
        group: EndpointGroup,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> AbstractAsyncContextManager[Slot]:
        self.asked.append((context, EndpointGroup(group), priority, max_wait_s))
        return self.inner.slot(
            environment=environment, context=context, group=group, priority=priority, max_wait_s=max_wait_s
        )


class Clients:
    def __init__(self, nips: list[str]) -> None:
        self.credentials: dict[str, Credential] = {nip: owner_certificate(nip) for nip in nips}

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        if context_nip not in self.credentials:
            raise NoCredential(context_nip)
        return Environment.SIM, self.credentials[context_nip]

    async def targets(self) -> list[SyncTarget]:
        return [SyncTarget(nip, (SubjectType.SUBJECT2,)) for nip in self.credentials]


class BudgetedSync:
    def __init__(self, runtime: ServiceRuntime, clients: Clients, budget: RecordingBudget) -> None:
        settings = runtime.settings
        assert isinstance(settings, GatewaySettings)
        self.http = httpx.AsyncClient(timeout=30)
        self.sessions = SessionManager(KsefClients(self.http, settings=settings.ksef, budget=budget), clients, None)
        self.engine = SyncEngine(runtime.db.sessionmaker, runtime.outbox, GatewayKsef(self.sessions), settings.sync)
        self.scheduler = SyncScheduler(self.engine, clients, settings.sync)
        self.budget = budget

    async def start(self) -> None:
        pass  # the test starts the scheduler once the clients' month-close days are set

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.sessions.close()
        await self.budget.inner.aclose()
        await self.http.aclose()


@pytest.fixture
async def runtime_factory() -> AsyncIterator[list[ServiceRuntime]]:
    started: list[ServiceRuntime] = []
    yield started
    for runtime in started:
        if runtime.started:
            await runtime.stop()


async def seed(sim: RunningSim, nip: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=sim.root_url) as http:
        body = {"buyerNip": nip, "count": count, "sellers": 3, "spreadDays": 20}
        response = await http.post("/_sim/seed", json=body)
        assert response.status_code == 201, response.text


def close_days() -> tuple[int, int]:
    """A month-close day whose deadline is tonight, and one whose deadline is days later."""
    today = datetime.now(UTC).astimezone(WARSAW).day
    return today, (today - 1 if today > 1 else 28)


async def test_an_exhausted_client_is_rescheduled_and_the_scheduler_moves_on_nearest_deadline_first(
    sim: RunningSim, sqlite_url: str, runtime_factory: list[ServiceRuntime]
) -> None:
    near, far = valid_nips(2, start=731_000_000)
    await seed(sim, near, 12)
    await seed(sim, far, 3)
    clients = Clients([near, far])
    sync = SyncSettings(
        min_poll_interval_s=0.2,
        tick_interval_s=0.05,
        export_poll_interval_s=0.05,
        export_poll_max_interval_s=0.1,
        backfill_months=2,
        # One worker: a client waiting for its budget would block everyone else.
        max_concurrency=1,
        budget_max_wait_s=0.5,
    )
    # One export per hour per context: the near client's second window has no slot for an hour.
    tight = BudgetSettings(
        mode="custom",
        usable_fraction=1.0,
        limits={"invoiceExport": GroupLimits(per_second=1, per_minute=1, per_hour=1)},
    )
    budget = RecordingBudget(RateBudget(tight))
    settings = GatewaySettings(
        db=DatabaseSettings(url=sqlite_url),
        messaging=MessagingSettings(transport="inprocess"),
        ksef=KsefSettings(sim_base_url=sim.api_url, replica_id=f"test-{uuid.uuid4().hex[:6]}"),
        sync=sync,
    )
    holder: list[BudgetedSync] = []

    def components(runtime: ServiceRuntime) -> tuple[BudgetedSync]:
        holder.append(BudgetedSync(runtime, clients, budget))
        return (holder[-1],)

    runtime = ServiceRuntime(dataclasses.replace(DEFINITION, components=components), settings, migrate_on_start=True)
    await runtime.start()
    runtime_factory.append(runtime)
    component = holder[0]
    near_day, far_day = close_days()
    async with runtime.db.sessionmaker() as session, session.begin():
        now = datetime.now(UTC)
        await sync_repository.upsert_client(session, far, now, month_close_day=far_day)
        await sync_repository.upsert_client(session, near, now, month_close_day=near_day)
    started_at = datetime.now(UTC)
    await component.scheduler.start()

    async def stored(nip: str) -> int:
        async with runtime.db.sessionmaker() as session:
            return await purchases.count_invoices(session, nip)

    async def near_rescheduled() -> bool:
        async with runtime.db.sessionmaker() as session:
            state = await sync_repository.load_state(session, near, SubjectType.SUBJECT2)
        return state is not None and state.last_error is not None and "invoiceExport" in state.last_error

    async def far_done() -> bool:
        return await stored(far) == 3

    # Without the hints reaching the budget the near client's run would wait an hour for its slot, holding the
    # only worker, and the far client would never be synced.
    await wait_until(near_rescheduled, timeout=20, what="the near client to be rescheduled for lack of budget")
    await wait_until(far_done, timeout=20, what="the far client to be synced meanwhile")

    assert await stored(near) == EXPORT_CAP  # its first window, stored before the budget ran out
    async with runtime.db.sessionmaker() as session:
        state = await sync_repository.load_state(session, near, SubjectType.SUBJECT2)
    assert state is not None and state.next_run_at is not None
    # Rescheduled for when the hourly window frees a slot, not retried in a tight loop.
    assert state.next_run_at >= started_at + timedelta(minutes=50), state

    metered = [a for a in budget.asked if a[1] is not EndpointGroup.PUBLIC and a[0] in (near, far)]
    sync_calls = [a for a in metered if a[1] in (EndpointGroup.INVOICE_EXPORT, EndpointGroup.INVOICE_EXPORT_STATUS)]
    assert sync_calls
    assert {a[3] for a in sync_calls} == {sync.budget_max_wait_s}
    # The month-close priority reaches the budget: the near client's calls rank ahead of the far one's.
    near_priorities = {a[2] for a in sync_calls if a[0] == near}
    far_priorities = {a[2] for a in sync_calls if a[0] == far}
    assert near_priorities and far_priorities
    assert max(near_priorities) < min(far_priorities)
    # Nearest deadline first: the first export the scheduler started was the near client's.
    first_export = next(a for a in sync_calls if a[1] is EndpointGroup.INVOICE_EXPORT)
    assert first_export[0] == near
