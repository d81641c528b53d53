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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from ksef_gateway.db import context_lease
from ksef_gateway.ksef.client import Clock, system_clock
from platform_common.db import Database

log = logging.getLogger(__name__)

LeaseListener = Callable[[str], None]
T = TypeVar("T")


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
        """``work`` in its own transaction. SQLite in WAL mode refuses a writer whose read snapshot went stale while
        it waited for the lock ("database is locked" at once, no busy wait); the transaction is then simply run
        again on a fresh snapshot. PostgreSQL never needs it (the UPDATE re-checks the locked row)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._db.engine.begin() as conn:
                    return await work(conn)
            except OperationalError as error:
                if not self._db.is_sqlite or "locked" not in str(error) or attempt >= 20:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.02 * attempt))  # jitter between contending writers

    async def try_acquire(self, nip: str) -> bool:
        """Take (or keep, and extend) the lease of ``nip``; ``False`` while another replica holds it."""
        now = self._clock()
        expires = now + self._ttl
        table = context_lease

        async def acquire(conn: AsyncConnection) -> bool:
            updated = await conn.execute(
                update(table)
                .where(
                    and_(
                        table.c.context_nip == nip,
                        or_(table.c.holder == self.replica_id, table.c.expires_at < now),
                    )
                )
                .values(holder=self.replica_id, renewed_at=now, expires_at=expires)
            )
            if updated.rowcount == 1:
                return True
            insert = pg_insert(table) if not self._db.is_sqlite else sqlite_insert(table)
            inserted = await conn.execute(
                insert.values(
                    context_nip=nip, holder=self.replica_id, acquired_at=now, renewed_at=now, expires_at=expires
                ).on_conflict_do_nothing(index_elements=[table.c.context_nip])
            )
            return bool(inserted.rowcount == 1)

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
            await conn.execute(
                delete(context_lease).where(
                    and_(context_lease.c.context_nip == nip, context_lease.c.holder == self.replica_id)
                )
            )

        await self._write(release)

    async def renew(self) -> set[str]:
        """Extend every lease this replica holds; returns the contexts lost on the way."""
        held = set(self._expires)
        if not held:
            return set()
        now = self._clock()
        expires = now + self._ttl
        table = context_lease

        async def renew(conn: AsyncConnection) -> set[str]:
            await conn.execute(
                update(table)
                .where(and_(table.c.holder == self.replica_id, table.c.context_nip.in_(held)))
                .values(renewed_at=now, expires_at=expires)
            )
            query = select(table.c.context_nip).where(
                and_(table.c.holder == self.replica_id, table.c.context_nip.in_(held))
            )
            return set((await conn.execute(query)).scalars())

        try:
            still = await self._write(renew)
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

    async def _renew_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._renew_interval_s)
            if self._stopping.is_set():
                return
            await self.renew()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._renew_forever(), name=f"context-leases:{self.replica_id}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop renewing; by default release every lease so peers take the contexts over at once."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        if release:
            for nip in list(self._expires):
                try:
                    await self.release(nip)
                except Exception:
                    log.exception("releasing the lease of %s failed; it will expire", nip)
