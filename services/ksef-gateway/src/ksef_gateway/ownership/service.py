"""Exactly one gateway replica acts for a KSeF context at a time: a lease per context NIP in the database.

KSeF counts limits per (context, IP) and a refresh token belongs to one process; two replicas working the same
client would split its budget, double its authentications and race on its sync checkpoints (REFERENCE.md §20.12).

A lease row names its holder (the replica id) and when it expires. Acquiring is one conditional statement, so it
is atomic on PostgreSQL (the UPDATE's WHERE is re-checked on the locked row) and on SQLite (writers serialise):

- ``UPDATE … SET holder = me … WHERE nip = :nip AND (holder = me OR expires_at < now)``, and when no row matched,
- ``INSERT … ON CONFLICT DO NOTHING``; whoever inserted or updated holds the lease.

A background renewer extends every lease this replica holds each ``lease_renew_interval_s``. A lease the renewal
did not find ours any more is lost at once; when the database cannot be reached, the leases that would expire
before the next renewal are given up (another replica may take them over by then). ``owned()`` never reports a
lease past its expiry by this replica's clock.

Fair sharing. Every replica also keeps a heartbeat row (``gateway_replica``), written with each renewal and expiring
like a lease. ``balance(active)``, called by the sync scheduler on every tick, holds this replica at its fair share
``ceil(active contexts / live replicas)``:

- under its share it takes free contexts (no lease, or an expired one), the ones it ranks highest first (rendezvous
  hashing of replica id and NIP, so each replica prefers a different, stable set and racing for the same row is rare);
- over its share, and only when no active context is left free, it releases half its surplus (rounded up) per
  renewal period, never a context the caller reports busy (a sync run or export in flight), and the ones it ranks
  lowest first. Handing contexts over gradually spreads the new owner's authentications (each costs KSeF an auth
  round) and damps oscillation while replicas still disagree about how many are live;
- a context left free for a whole TTL is taken even over the share: some live replica is not taking its share (its
  scheduler is disabled or stuck), and an unowned context is not synced at all. Releasing then pauses for a while, or
  the surplus would bounce between the idle replica's share and this one.

A graceful stop deletes the heartbeat and releases every lease in one transaction; a crash leaves both to expire.
Taking a context still goes through ``try_acquire`` only, so the one-holder guarantee does not depend on the
replicas agreeing about shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from ksef_gateway.ksef.client import Clock, system_clock
from ksef_gateway.ownership import repository
from platform_common.db import Database

log = logging.getLogger(__name__)

LeaseListener = Callable[[str], None]
T = TypeVar("T")

# After taking a context nobody else took (see the module docstring), surplus is kept this many TTLs.
STRANDED_RELEASE_PAUSE_TTLS = 10


@dataclass(frozen=True)
class LeaseView:
    """What the database says right now: the live replicas and the holder of every unexpired lease."""

    live_replicas: frozenset[str]
    holders: dict[str, str]


def _rank(replica_id: str, nip: str) -> int:
    """Rendezvous hashing: how much ``replica_id`` prefers ``nip`` (stable, and independent across replicas)."""
    return int.from_bytes(hashlib.blake2b(f"{replica_id}\x00{nip}".encode(), digest_size=8).digest(), "big")


class ContextLeases:
    def __init__(
        self,
        db: Database,
        replica_id: str,
        *,
        ttl_s: float = 60.0,
        renew_interval_s: float = 20.0,
        clock: Clock = system_clock,
    ) -> None:
        if renew_interval_s >= ttl_s:
            raise ValueError("the renewal interval must be shorter than the lease TTL")
        self.replica_id = replica_id
        self._db = db
        self._ttl = timedelta(seconds=ttl_s)
        self._renew_interval_s = renew_interval_s
        self._clock = clock
        self._expires: dict[str, datetime] = {}
        self._lost_listeners: list[LeaseListener] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._live_replicas: frozenset[str] = frozenset()
        self._free_since: dict[str, datetime] = {}
        self._next_release: datetime | None = None

    def on_lost(self, listener: LeaseListener) -> None:
        """``listener(nip)`` runs when this replica stops holding a context (lost, released or expired)."""
        self._lost_listeners.append(listener)

    def _forget(self, nip: str) -> None:
        if self._expires.pop(nip, None) is not None:
            for listener in self._lost_listeners:
                try:
                    listener(nip)
                except Exception:
                    log.exception("lease listener failed for %s", nip)

    def owned(self) -> set[str]:
        now = self._clock()
        for nip in [n for n, until in self._expires.items() if until <= now]:
            self._forget(nip)
        return set(self._expires)

    def holds(self, nip: str) -> bool:
        return nip in self.owned()

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` in its own transaction. On SQLite it starts with ``BEGIN IMMEDIATE``: a deferred transaction
        that reads before it writes holds a WAL snapshot, and when another writer commits first SQLite refuses the
        upgrade at once ("database is locked", SQLITE_BUSY_SNAPSHOT, no busy wait). Every transaction here happens
        to write first (which takes the lock with busy waiting already); taking the write lock up front keeps that
        true whatever a transaction does first. The retry stays for lock waits that still time out. PostgreSQL needs
        neither (the UPDATE re-checks the locked row)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._db.engine.connect() as conn:
                    if self._db.is_sqlite:
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    result = await work(conn)
                    await conn.commit()
                    return result
            except OperationalError as error:
                if not self._db.is_sqlite or "locked" not in str(error) or attempt >= 20:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.02 * attempt))  # jitter between contending writers

    async def try_acquire(self, nip: str) -> bool:
        """Take (or keep, and extend) the lease of ``nip``; ``False`` while another replica holds it."""
        now = self._clock()
        expires = now + self._ttl

        async def acquire(conn: AsyncConnection) -> bool:
            if await repository.take_lease(conn, nip, self.replica_id, now, expires):
                return True
            return await repository.insert_lease(conn, nip, self.replica_id, now, expires)

        acquired = await self._write(acquire)
        if acquired:
            if nip not in self._expires:
                log.info("replica %s now owns context %s", self.replica_id, nip)
            self._expires[nip] = expires
        else:
            self._forget(nip)
        return acquired

    async def release(self, nip: str) -> None:
        """Give ``nip`` up now, so another replica need not wait for the lease to expire."""
        self._forget(nip)

        async def release(conn: AsyncConnection) -> None:
            await repository.delete_lease(conn, nip, self.replica_id)

        await self._write(release)

    @property
    def live_replicas(self) -> frozenset[str]:
        """The replicas whose heartbeat was current at the last renewal (this one always among them)."""
        return self._live_replicas | {self.replica_id}

    def fair_share(self, active: int) -> int:
        return math.ceil(active / len(self.live_replicas))

    async def _heartbeat(self, conn: AsyncConnection, now: datetime, expires: datetime) -> frozenset[str]:
        """Write this replica's heartbeat and read the live ones (expired rows of crashed peers are purged)."""
        await repository.beat(conn, self.replica_id, now, expires)
        await repository.delete_replicas_expired_before(conn, now - self._ttl)
        return await repository.live_replicas(conn, now)

    async def renew(self) -> set[str]:
        """Beat this replica's heart and extend every lease it holds; returns the contexts lost on the way."""
        held = set(self._expires)
        now = self._clock()
        expires = now + self._ttl

        async def renew(conn: AsyncConnection) -> tuple[frozenset[str], set[str]]:
            live = await self._heartbeat(conn, now, expires)
            if not held:
                return live, set()
            await repository.extend_leases(conn, self.replica_id, held, now, expires)
            return live, await repository.held_of(conn, self.replica_id, held)

        try:
            self._live_replicas, still = await self._write(renew)
        except Exception:
            # Unknown whether the renewal happened: keep only the leases that outlive the next attempt.
            horizon = now + timedelta(seconds=self._renew_interval_s)
            lost = {nip for nip in held if self._expires.get(nip, now) <= horizon}
            log.exception("renewing context leases failed; giving up %d of %d", len(lost), len(held))
            for nip in lost:
                self._forget(nip)
            return lost
        lost = held - still
        for nip in held & still:
            if nip in self._expires:
                self._expires[nip] = expires
        for nip in lost:
            log.warning("replica %s lost context %s (taken over or removed)", self.replica_id, nip)
            self._forget(nip)
        return lost

    async def view(self) -> LeaseView:
        """The live replicas and the unexpired leases, as the database has them now (a read, no lock)."""
        now = self._clock()
        async with self._db.engine.connect() as conn:
            live = await repository.live_replicas(conn, now)
            return LeaseView(live, await repository.unexpired_leases(conn, now))

    async def balance(self, active: Collection[str], *, busy: Callable[[str], bool] = lambda nip: False) -> set[str]:
        """Move this replica towards its fair share of ``active`` (see the module docstring); returns the active
        contexts it holds afterwards. ``busy(nip)``: work in flight that a handover would cut off."""
        now = self._clock()
        view = await self.view()
        self._live_replicas = view.live_replicas
        wanted = set(active)
        share = self.fair_share(len(wanted))
        mine = self.owned() & wanted
        # Free for us: nobody's unexpired lease, or a row of ours we lost track of (a restart under the same id).
        free = {nip for nip in wanted - mine if view.holders.get(nip, self.replica_id) == self.replica_id}
        self._free_since = {nip: self._free_since.get(nip, now) for nip in free}
        stranded = {nip for nip in free if now - self._free_since[nip] >= self._ttl}
        left_free = False
        for nip in sorted(free, key=lambda n: _rank(self.replica_id, n), reverse=True):
            if len(mine) >= share and nip not in stranded:
                left_free = True
                continue
            if await self.try_acquire(nip):
                mine.add(nip)
                if nip in stranded:
                    log.warning(
                        "replica %s took context %s, unowned for %s, beyond its share of %d: a live replica is not "
                        "taking its share",
                        self.replica_id,
                        nip,
                        now - self._free_since[nip],
                        share,
                    )
                    self._next_release = now + self._ttl * STRANDED_RELEASE_PAUSE_TTLS
        surplus = len(mine) - share
        if surplus > 0 and not left_free and (self._next_release is None or now >= self._next_release):
            idle = sorted((nip for nip in mine if not busy(nip)), key=lambda n: _rank(self.replica_id, n))
            for nip in idle[: math.ceil(surplus / 2)]:
                log.info(
                    "replica %s hands context %s over (holds %d, fair share %d)", self.replica_id, nip, len(mine), share
                )
                await self.release(nip)
                mine.discard(nip)
            self._next_release = now + timedelta(seconds=self._renew_interval_s)
        return mine

    async def _renew_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._renew_interval_s)
            if self._stopping.is_set():
                return
            await self.renew()

    async def start(self) -> None:
        self._stopping.clear()
        try:
            await self.renew()  # the heartbeat: peers count this replica in their fair share from now on
        except Exception:
            log.exception("the first heartbeat of replica %s failed; the renewer retries", self.replica_id)
        self._task = asyncio.create_task(self._renew_forever(), name=f"context-leases:{self.replica_id}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop renewing; by default release every lease so peers take the contexts over at once."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if not release:
            return
        # Heartbeat and leases go together: a peer never sees this replica live with its contexts already free
        # (it would leave them for "our" share) nor dead while still holding them.
        held = list(self._expires)
        for nip in held:
            self._forget(nip)

        async def leave(conn: AsyncConnection) -> None:
            await repository.delete_replica(conn, self.replica_id)
            await repository.delete_leases_of(conn, self.replica_id)

        try:
            await self._write(leave)
        except Exception:
            log.exception("releasing %d lease(s) of replica %s failed; they will expire", len(held), self.replica_id)
