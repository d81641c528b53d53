"""Fair sharing of contexts between gateway replicas: each holds about ceil(active / live replicas) leases, a replica
joining later gets its share, one leaving (gracefully or by crashing) hands its contexts to the others, a context
with a run in flight is not handed over, and no two replicas ever hold the same context on the way.

Each replica here is a real ``ContextLeases`` (heartbeat and renewal on short periods) under the real
``SyncScheduler`` and ``LeasedVaultTargets``; only the engine is a stub, so a "run" is a task the test controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import combinations
from typing import cast

import pytest

from ksef_gateway.ksef import Environment
from ksef_gateway.ownership.service import ContextLeases
from ksef_gateway.settings import SyncSettings
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.sync.engine import RunReport, SyncEngine
from ksef_gateway.sync.ksef import SyncKsef
from ksef_gateway.sync.scheduler import LeasedVaultTargets, SyncScheduler, SyncTarget
from ksef_gateway.testing import valid_nips
from ksef_gateway.vault.domain import Scope
from ksef_gateway.vault.service import ActiveContext, Vault
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox
from platform_common.testing.helpers import wait_until

MigratedDb = Callable[[str], Awaitable[Database]]
CONTEXTS = valid_nips(20, start=640_000_000)
TTL_S, RENEW_S = 1.5, 0.2
SETTINGS = SyncSettings(tick_interval_s=0.05, max_concurrency=50)


class ActiveContexts:
    async def active_contexts(self) -> list[ActiveContext]:
        return [ActiveContext(nip, Environment.SIM, Scope.READ, False, False) for nip in CONTEXTS]


class StubEngine(SyncEngine):
    """Talks to no KSeF: a run returns at once, except for a context in ``held_open`` (work in flight)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db.sessionmaker, cast(Outbox, None), cast(SyncKsef, None), SETTINGS)
        self.held_open: dict[str, asyncio.Event] = {}
        self.running: set[str] = set()

    async def run(self, nip: str, subject: SubjectType) -> RunReport:
        self.running.add(nip)
        try:
            if nip in self.held_open:
                await self.held_open[nip].wait()
            return RunReport(nip, subject)
        finally:
            self.running.discard(nip)


class Fleet:
    """The replicas of one deployment, and a check after every tick of any of them that no context has two owners."""

    def __init__(self, make_db: Callable[[], Awaitable[Database]]) -> None:
        self._make_db = make_db
        self.replicas: dict[str, Replica] = {}
        self.overlaps: list[tuple[str, str, set[str]]] = []

    async def start(self, replica_id: str) -> Replica:
        replica = Replica(self, await self._make_db(), replica_id)
        self.replicas[replica_id] = replica
        await replica.leases.start()
        await replica.scheduler.start()
        return replica

    def check(self) -> None:
        for a, b in combinations(self.replicas.values(), 2):
            shared = a.leases.owned() & b.leases.owned()
            if shared:
                self.overlaps.append((a.leases.replica_id, b.leases.replica_id, shared))

    def counts(self) -> dict[str, int]:
        self.check()
        return {rid: len(r.leases.owned()) for rid, r in self.replicas.items() if not r.stopped}

    async def balanced(self, expected: list[int]) -> None:
        async def probe() -> bool:
            counts = self.counts()
            owned = set().union(*(r.leases.owned() for r in self.replicas.values() if not r.stopped))
            return sorted(counts.values(), reverse=True) == expected and owned == set(CONTEXTS)

        await wait_until(probe, timeout=20, what=f"contexts shared as {expected}")
        assert self.overlaps == []


class ObservedTargets(LeasedVaultTargets):
    def __init__(self, fleet: Fleet, leases: ContextLeases) -> None:
        super().__init__(cast(Vault, ActiveContexts()), leases)
        self._fleet = fleet

    async def targets(self) -> list[SyncTarget]:
        found = await super().targets()
        self._fleet.check()
        return found


class Replica:
    def __init__(self, fleet: Fleet, db: Database, replica_id: str) -> None:
        self.db = db
        self.leases = ContextLeases(db, replica_id, ttl_s=TTL_S, renew_interval_s=RENEW_S)
        self.engine = StubEngine(db)
        self.scheduler = SyncScheduler(self.engine, ObservedTargets(fleet, self.leases), SETTINGS)
        self.stopped = False

    async def stop(self, *, crash: bool = False) -> None:
        """Graceful: stop syncing, release every lease and the heartbeat. Crash: just stop renewing."""
        self.stopped = True
        await self.scheduler.stop()
        await self.leases.stop(release=not crash)


@pytest.fixture
async def fleet(db_url: str, migrated_db: MigratedDb) -> AsyncIterator[Fleet]:
    await (await migrated_db(db_url)).dispose()
    fleet = Fleet(lambda: migrated_db(db_url))
    yield fleet
    for replica in fleet.replicas.values():
        if not replica.stopped:
            await replica.stop()
        await replica.db.dispose()


async def test_replicas_share_contexts_fairly_as_they_join_and_leave(fleet: Fleet) -> None:
    a = await fleet.start("replica-a")
    await fleet.balanced([20])  # alone, it takes every context

    await fleet.start("replica-b")
    await fleet.balanced([10, 10])

    await fleet.start("replica-c")
    await fleet.balanced([7, 7, 6])

    # A graceful stop hands its contexts over at once (no waiting for the TTL).
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await a.stop()
    await fleet.balanced([10, 10])
    assert loop.time() - stopped_at < TTL_S


async def test_a_crashed_replica_s_contexts_are_taken_over_after_expiry(fleet: Fleet) -> None:
    await fleet.start("replica-a")
    b = await fleet.start("replica-b")
    await fleet.balanced([10, 10])
    held_by_b = b.leases.owned()

    await b.stop(crash=True)  # no release, no goodbye: its leases and heartbeat just stop being renewed

    await fleet.balanced([20])
    assert fleet.replicas["replica-a"].leases.owned() >= held_by_b


async def test_a_context_with_a_run_in_flight_is_not_handed_over(fleet: Fleet) -> None:
    a = await fleet.start("replica-a")
    await fleet.balanced([20])
    busy = set(CONTEXTS[:12])
    a.engine.held_open = {nip: asyncio.Event() for nip in busy}

    async def all_running() -> bool:
        return a.engine.running >= busy

    await wait_until(all_running, what="the long runs to start")

    await fleet.start("replica-b")
    # A can hand over only its 8 idle contexts: 12/8 until the runs end, then 10/10.
    await fleet.balanced([12, 8])
    assert a.leases.owned() == busy

    for gate in a.engine.held_open.values():
        gate.set()
    await fleet.balanced([10, 10])


async def test_contexts_a_live_replica_does_not_take_are_picked_up_after_a_ttl(
    sqlite_url: str, migrated_db: MigratedDb
) -> None:
    """A replica with a heartbeat but no scheduler (sync disabled there) lowers everyone's share; the contexts left
    free are still synced: after a TTL the others take them beyond their share."""
    db_a, db_idle = await migrated_db(sqlite_url), await migrated_db(sqlite_url)
    a = ContextLeases(db_a, "replica-a", ttl_s=TTL_S, renew_interval_s=RENEW_S)
    idle = ContextLeases(db_idle, "replica-idle", ttl_s=TTL_S, renew_interval_s=RENEW_S)
    try:
        await idle.start()
        await a.start()
        assert len(await a.balance(CONTEXTS)) == 10
        assert a.live_replicas == {"replica-a", "replica-idle"}

        async def all_taken() -> bool:
            return len(await a.balance(CONTEXTS)) == 20

        await wait_until(all_taken, timeout=10, what="replica A to take the stranded contexts")
        assert idle.owned() == set()
    finally:
        await a.stop()
        await idle.stop()
        await db_a.dispose()
        await db_idle.dispose()
