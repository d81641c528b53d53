"""The sync scheduler starts work on events, not on its tick: a new credential or a "fetch now" runs at once, and
between events it sleeps until the next known due time. The fallback tick is an hour here, so a run that starts
during a test was started by the event; the engine and the target source are fakes, the clock is fixed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest

from ksef_gateway.settings import SyncSettings
from ksef_gateway.sync.domain import DueSubject, SubjectType
from ksef_gateway.sync.engine import DuePlan, RunReport, SyncEngine
from ksef_gateway.sync.scheduler import SyncScheduler, SyncTarget
from platform_common.testing.helpers import wait_until

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
HOUR_S = 3600.0
NIP = "5260250274"


class Targets:
    """The clients with a credential; every scheduler look asks for them, so ``looks`` counts the ticks."""

    def __init__(self) -> None:
        self.clients: list[str] = []
        self.looks = 0

    async def targets(self) -> list[SyncTarget]:
        self.looks += 1
        return [SyncTarget(nip, (SubjectType.SUBJECT2,)) for nip in self.clients]


class FakeEngine:
    """Every pair offered is due unless it already ran; a run reports ``next_run_at`` (kept, as the sync state
    would keep it) and records that it began."""

    def __init__(self) -> None:
        self.ran: set[str] = set()
        self.started: dict[str, asyncio.Event] = {}
        self.next_at: datetime | None = None
        self.report_next_run_at: datetime | None = None

    def began(self, nip: str) -> asyncio.Event:
        return self.started.setdefault(nip, asyncio.Event())

    async def plan(self, pairs: Sequence[tuple[str, SubjectType]], now: datetime) -> DuePlan:
        due = [DueSubject(nip, subject, None, 20) for nip, subject in pairs if nip not in self.ran]
        return DuePlan(due, self.next_at)

    async def run(self, nip: str, subject: SubjectType) -> RunReport:
        self.ran.add(nip)
        self.began(nip).set()
        if self.report_next_run_at is not None:
            self.next_at = self.report_next_run_at
        return RunReport(nip, subject, next_run_at=self.report_next_run_at)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def targets() -> Targets:
    return Targets()


@pytest.fixture
async def scheduler(engine: FakeEngine, targets: Targets) -> AsyncIterator[SyncScheduler]:
    scheduler = SyncScheduler(
        cast(SyncEngine, engine), targets, SyncSettings(tick_interval_s=HOUR_S), clock=lambda: NOW
    )
    await scheduler.start()
    try:
        yield scheduler
    finally:
        await scheduler.stop()


async def _ticked(targets: Targets, times: int = 1) -> None:
    async def probe() -> bool:
        return targets.looks >= times

    await wait_until(probe, timeout=60, what=f"{times} scheduler tick(s)")


async def test_a_new_credential_starts_its_run_at_once(
    scheduler: SyncScheduler, engine: FakeEngine, targets: Targets
) -> None:
    await _ticked(targets)  # the look on start; what follows arrives while the loop sleeps
    targets.clients.append(NIP)  # the vault now holds the client's credential

    await scheduler.credential_changed(NIP)

    # Bounded by an hour-long tick: only the wake-up can have started it.
    await asyncio.wait_for(engine.began(NIP).wait(), timeout=60)


async def test_fetch_now_wakes_the_scheduler_at_once(
    scheduler: SyncScheduler, engine: FakeEngine, targets: Targets
) -> None:
    await _ticked(targets)
    targets.clients.append(NIP)
    await scheduler.credential_changed(NIP)
    await asyncio.wait_for(engine.began(NIP).wait(), timeout=60)

    async def finished() -> bool:
        return not scheduler.is_running(NIP, SubjectType.SUBJECT2)

    await wait_until(finished, timeout=60, what="the first run to finish")
    engine.ran.discard(NIP)  # "fetch now" made it due again
    engine.started.pop(NIP)

    scheduler.wake()

    await asyncio.wait_for(engine.began(NIP).wait(), timeout=60)


async def test_it_sleeps_until_the_next_due_time_not_a_fixed_tick(
    scheduler: SyncScheduler, engine: FakeEngine, targets: Targets
) -> None:
    await _ticked(targets)  # the look on start; the loop then sleeps for the hour, undisturbed by these ticks
    assert scheduler.sleep_s() == HOUR_S
    targets.clients.append(NIP)  # nothing known: the fallback
    engine.next_at = NOW + timedelta(seconds=30)
    await scheduler.tick()
    assert scheduler.sleep_s() == 30.0
    engine.next_at = NOW - timedelta(seconds=1)  # already past: look again at once
    await scheduler.tick()
    assert scheduler.sleep_s() == 0.0


async def test_a_finished_run_brings_the_next_look_forward(
    scheduler: SyncScheduler, engine: FakeEngine, targets: Targets
) -> None:
    await _ticked(targets)  # the look on start; what follows arrives while the loop sleeps
    engine.report_next_run_at = NOW + timedelta(seconds=2)  # e.g. rescheduled after a busy budget
    targets.clients.append(NIP)

    await scheduler.credential_changed(NIP)  # look 2 starts the run

    # Look 3 comes from the finished run alone (the hour-long tick is far off), and it sleeps only until then.
    await _ticked(targets, 3)
    assert scheduler.sleep_s() == 2.0
