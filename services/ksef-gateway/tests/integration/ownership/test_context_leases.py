"""Context ownership: leases in the database are exclusive under concurrency, expire and get taken over, and two
gateway runtimes on one PostgreSQL never authenticate for the same context (asserted from the simulator's own
records of who authenticated)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from ksef_gateway.ksef import Credential, Environment
from ksef_gateway.main import create_app
from ksef_gateway.ownership.service import ContextLeases, LeaseView
from ksef_gateway.sessions.service import ContextNotOwned, NoCredential, SessionManager
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.testing import ksef_settings_for, owner_certificate, valid_nips
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.auth import AuthOperation
from ksef_sim.testing import RunningSim
from platform_common.db import Database
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import FakeClock

MigratedDb = Callable[[str], Awaitable[Database]]
CONTEXTS = valid_nips(12, start=620_000_000)


@pytest.fixture
async def two_replicas(
    db_url: str, migrated_db: MigratedDb
) -> AsyncIterator[tuple[ContextLeases, ContextLeases, FakeClock]]:
    db_a, db_b = await migrated_db(db_url), await migrated_db(db_url)
    clock = FakeClock()
    a = ContextLeases(db_a, "replica-a", ttl_s=60, renew_interval_s=20, clock=clock)
    b = ContextLeases(db_b, "replica-b", ttl_s=60, renew_interval_s=20, clock=clock)
    yield a, b, clock
    await db_a.dispose()
    await db_b.dispose()


async def test_racing_replicas_never_hold_the_same_context(
    two_replicas: tuple[ContextLeases, ContextLeases, FakeClock],
) -> None:
    a, b = two_replicas[0], two_replicas[1]

    results = await asyncio.gather(*(leases.try_acquire(nip) for nip in CONTEXTS for leases in (a, b)))

    assert sum(results) == len(CONTEXTS)
    assert a.owned().isdisjoint(b.owned())
    assert a.owned() | b.owned() == set(CONTEXTS)
    # Asking again changes nothing: the holder keeps (and extends) its lease, the other is refused.
    for nip in CONTEXTS:
        holder, other = (a, b) if nip in a.owned() else (b, a)
        assert await holder.try_acquire(nip) and not await other.try_acquire(nip)


async def test_a_replica_connecting_while_a_peer_holds_the_write_lock_on_a_fresh_file_is_not_refused(
    tmp_path: Path, migrated_db: MigratedDb
) -> None:
    """The cause of the racing test's rare failure: migrations leave a SQLite file in rollback-journal mode, and
    switching it to WAL from every new connection failed at once ("database is locked", without the busy wait)
    whenever another connection held the write lock, as the peers' BEGIN IMMEDIATE lease writes do. Here the peer's
    lock is taken explicitly on a file as migrations left it, then a replica opens its first connection."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    db = await migrated_db(url)
    peer = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
    try:
        peer.execute("BEGIN IMMEDIATE")  # a peer replica in the middle of a lease write
        leases = ContextLeases(db, "replica-a", ttl_s=60, renew_interval_s=20, clock=FakeClock())

        assert await leases.view() == LeaseView(frozenset(), {})  # a first connection, no retry around it
    finally:
        peer.execute("ROLLBACK")
        peer.close()
        await db.dispose()
    assert await asyncio.to_thread(_journal_mode, tmp_path / "gateway.db") == "wal"


def _journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


async def test_an_unrenewed_lease_expires_and_is_taken_over(
    two_replicas: tuple[ContextLeases, ContextLeases, FakeClock],
) -> None:
    a, b, clock = two_replicas
    nip = CONTEXTS[0]
    lost: list[str] = []
    a.on_lost(lost.append)
    assert await a.try_acquire(nip)

    clock.advance(45)
    assert await a.renew() == set()  # renewed: good for another 60 s
    clock.advance(45)
    assert not await b.try_acquire(nip)
    # Replica A stops renewing (hung, partitioned); after the TTL replica B takes over.
    clock.advance(61)
    assert a.owned() == set() and lost == [nip]
    assert await b.try_acquire(nip)
    assert await a.renew() == set()  # nothing left to renew
    assert not await a.try_acquire(nip)

    # A graceful stop releases at once instead of making peers wait for the TTL.
    await b.stop()
    assert await a.try_acquire(nip)


async def test_a_renewal_finds_a_lease_taken_over_and_gives_it_up(
    two_replicas: tuple[ContextLeases, ContextLeases, FakeClock],
) -> None:
    a, b, clock = two_replicas
    nip = CONTEXTS[1]
    assert await a.try_acquire(nip)
    clock.advance(61)
    assert await b.try_acquire(nip)
    # A's clock runs behind (or A was paused): it still believes in its lease until a renewal tells it otherwise.
    clock.advance(-30)

    assert nip in a.owned()
    assert await a.renew() == {nip}
    assert nip not in a.owned() and nip in b.owned()


class Owners:
    def __init__(self, credentials: dict[str, Credential]) -> None:
        self.credentials = credentials

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        if context_nip not in self.credentials:
            raise NoCredential(context_nip)
        return Environment.SIM, self.credentials[context_nip]


@pytest.mark.postgres
async def test_two_gateway_runtimes_authenticate_each_context_from_one_replica_only(
    running: RunningSim, pg_url: str, tmp_path: Path
) -> None:
    credentials: dict[str, Credential] = {nip: owner_certificate(nip) for nip in CONTEXTS}
    async with AsyncExitStack() as stack:
        gateways: dict[str, Gateway] = {}
        for replica in ("replica-a", "replica-b"):
            settings = GatewaySettings(
                db=DatabaseSettings(url=pg_url),
                messaging=MessagingSettings(transport="inprocess"),
                ksef=ksef_settings_for(running.api_url, replica),
                data_dir=tmp_path / replica,
            )
            app = create_app(settings, migrate_on_start=True)
            await stack.enter_async_context(LifespanManager(app))
            gateways[replica] = Gateway.of(app.state.runtime)
        managers = {
            replica: SessionManager(gateway.ksef, Owners(credentials), gateway.leases)
            for replica, gateway in gateways.items()
        }

        async def authenticate(replica: str, nip: str) -> tuple[str, str] | None:
            try:
                await managers[replica].access_token(nip)
            except ContextNotOwned:
                return None
            return replica, nip

        results = await asyncio.gather(*(authenticate(r, nip) for nip in CONTEXTS for r in managers))
        served = [r for r in results if r is not None]

        assert sorted(nip for _, nip in served) == sorted(CONTEXTS)
        owners = {nip: replica for replica, nip in served}
        for replica, gateway in gateways.items():
            assert gateway.leases.owned() == {nip for nip, r in owners.items() if r == replica}

    # KSeF's side of it: every context saw authentications from exactly one replica, the one holding its lease.
    agents: dict[str, set[str]] = {}
    for operation in running.sim.store.all(AuthOperation):
        agents.setdefault(operation.context.value, set()).add(operation.user_agent)
    assert set(agents) == set(CONTEXTS)
    for nip, seen in agents.items():
        assert len(seen) == 1, (nip, seen)
        assert f"(replica {owners[nip]})" in next(iter(seen))
