"""Every query of context ownership: the context leases and the replica heartbeats.

Each function runs on the caller's connection, inside the transaction ``ownership.service`` opened (and, on
SQLite, write-locked up front); the statements themselves are single conditional writes, so the lease rules hold
on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Table, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ksef_gateway.db import context_lease, gateway_replica


def _upsert(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that knows ON CONFLICT, in the connection's dialect."""
    return sqlite.insert(table) if conn.dialect.name == "sqlite" else postgresql.insert(table)


# --- context leases --------------------------------------------------------------------------------------------


async def take_lease(conn: AsyncConnection, nip: str, holder: str, now: datetime, expires: datetime) -> bool:
    """Extend ``holder``'s lease of ``nip`` or take an expired one; ``False`` when no row matched (none yet, or
    another holder's unexpired lease)."""
    table = context_lease
    updated = await conn.execute(
        update(table)
        .where(
            and_(
                table.c.context_nip == nip,
                or_(table.c.holder == holder, table.c.expires_at < now),
            )
        )
        .values(holder=holder, renewed_at=now, expires_at=expires)
    )
    return bool(updated.rowcount == 1)


async def insert_lease(conn: AsyncConnection, nip: str, holder: str, now: datetime, expires: datetime) -> bool:
    """The first lease of ``nip``; ``False`` when a row exists already (``ON CONFLICT DO NOTHING``)."""
    table = context_lease
    inserted = await conn.execute(
        _upsert(conn, table)
        .values(context_nip=nip, holder=holder, acquired_at=now, renewed_at=now, expires_at=expires)
        .on_conflict_do_nothing(index_elements=[table.c.context_nip])
    )
    return bool(inserted.rowcount == 1)


async def delete_lease(conn: AsyncConnection, nip: str, holder: str) -> None:
    """Only while ``holder`` still holds it."""
    await conn.execute(
        delete(context_lease).where(and_(context_lease.c.context_nip == nip, context_lease.c.holder == holder))
    )


async def delete_leases_of(conn: AsyncConnection, holder: str) -> None:
    await conn.execute(delete(context_lease).where(context_lease.c.holder == holder))


async def extend_leases(
    conn: AsyncConnection, holder: str, nips: Collection[str], now: datetime, expires: datetime
) -> None:
    """Those of ``nips`` that ``holder`` still holds."""
    table = context_lease
    await conn.execute(
        update(table)
        .where(and_(table.c.holder == holder, table.c.context_nip.in_(nips)))
        .values(renewed_at=now, expires_at=expires)
    )


async def held_of(conn: AsyncConnection, holder: str, nips: Collection[str]) -> set[str]:
    """Which of ``nips`` ``holder`` holds (expired or not)."""
    table = context_lease
    query = select(table.c.context_nip).where(and_(table.c.holder == holder, table.c.context_nip.in_(nips)))
    return set((await conn.execute(query)).scalars())


async def unexpired_leases(conn: AsyncConnection, now: datetime) -> dict[str, str]:
    """Context NIP -> holder of every lease not expired at ``now``."""
    leases = await conn.execute(
        select(context_lease.c.context_nip, context_lease.c.holder).where(context_lease.c.expires_at >= now)
    )
    return {nip: holder for nip, holder in leases.tuples()}


# --- replica heartbeats ----------------------------------------------------------------------------------------


async def beat(conn: AsyncConnection, replica_id: str, now: datetime, expires: datetime) -> None:
    table = gateway_replica
    await conn.execute(
        _upsert(conn, table)
        .values(replica_id=replica_id, started_at=now, renewed_at=now, expires_at=expires)
        .on_conflict_do_update(index_elements=[table.c.replica_id], set_={"renewed_at": now, "expires_at": expires})
    )


async def delete_replicas_expired_before(conn: AsyncConnection, cutoff: datetime) -> None:
    await conn.execute(delete(gateway_replica).where(gateway_replica.c.expires_at < cutoff))


async def delete_replica(conn: AsyncConnection, replica_id: str) -> None:
    await conn.execute(delete(gateway_replica).where(gateway_replica.c.replica_id == replica_id))


async def live_replicas(conn: AsyncConnection, now: datetime) -> frozenset[str]:
    """The replicas whose heartbeat has not expired at ``now``."""
    live = select(gateway_replica.c.replica_id).where(gateway_replica.c.expires_at >= now)
    return frozenset((await conn.execute(live)).scalars())
