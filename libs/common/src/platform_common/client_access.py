"""Which office may read which client right now: each service's own projection of approval-svc's integrations.

An office principal's token does not list its clients (a list in a token would outlive a revocation by the
token's lifetime). Instead every service that serves a client's data keeps this table, fed by
``integration.changed`` through its inbox, and ``require(..., client_nip_param=...)`` looks the pair up on every
request: a revoke or suspend closes the client in each service as soon as that service has consumed the event
(milliseconds; the embedded and distributed revocation tests print the figure), not when a token expires.

One row per (office, client) pair, holding the newest integration between them. A change applies when it is
newer than the row: a higher revision of the same integration, or another integration changed no earlier than
the one held (a renewed request after a revoke starts again at revision 1). Events of one client are keyed by
its NIP, so they arrive in order; the comparison keeps a dead letter replayed late from undoing newer state.

A service opts in with ``ServiceDefinition(client_access=add_client_access_table(metadata))`` and a migration
that calls ``platform_common.migrations.create_client_access_v1``; the runtime then subscribes
``<service>.access.integration-changed`` and the app installs the gate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.contracts.integrations import (
    INTEGRATION_TOPIC,
    READABLE_STATES,
    IntegrationChange,
    parse_integration_change,
)
from platform_common.db import Database, UtcDateTime
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope

TABLE_NAME = "client_access"


def add_client_access_table(metadata: MetaData) -> Table:
    """The table in a service's metadata; its migration calls ``platform_common.migrations.create_client_access_v1``."""
    return Table(
        TABLE_NAME,
        metadata,
        Column("office_id", Uuid, primary_key=True),
        Column("client_nip", String(10), primary_key=True),
        Column("integration_id", Uuid, nullable=False),
        Column("revision", Integer, nullable=False),
        Column("state", String(16), nullable=False),
        Column("changed_at", UtcDateTime, nullable=False),
        Column("applied_at", UtcDateTime, nullable=False),
    )


@dataclass(frozen=True)
class Access:
    office_id: uuid.UUID
    client_nip: str
    integration_id: uuid.UUID
    revision: int
    state: str
    changed_at: datetime

    @property
    def readable(self) -> bool:
        return self.state in READABLE_STATES


def _is_newer(change: IntegrationChange, held: Access) -> bool:
    if change.integration_id == held.integration_id:
        return change.revision > held.revision
    return change.changed_at >= held.changed_at


class ClientAccessProjection:
    """The projection over one service's table: ``follow`` inside a consumer's transaction, ``allows`` per request."""

    def __init__(self, table: Table, db: Database) -> None:
        self.table = table
        self.db = db

    async def held(self, session: AsyncSession, office_id: uuid.UUID, client_nip: str) -> Access | None:
        t = self.table
        row = (
            (await session.execute(select(t).where(t.c.office_id == office_id, t.c.client_nip == client_nip)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        return Access(
            office_id=row["office_id"],
            client_nip=row["client_nip"],
            integration_id=row["integration_id"],
            revision=row["revision"],
            state=row["state"],
            changed_at=row["changed_at"],
        )

    async def follow(self, session: AsyncSession, change: IntegrationChange) -> bool:
        """Apply ``change`` if it is newer than what is held; True when it changed the row."""
        held = await self.held(session, change.office_id, change.client_nip)
        if held is not None and not _is_newer(change, held):
            return False
        await self._write(
            session,
            change.office_id,
            change.client_nip,
            held is not None,
            integration_id=change.integration_id,
            revision=change.revision,
            state=change.state,
            changed_at=change.changed_at,
        )
        return True

    async def seed(
        self, session: AsyncSession, office_id: uuid.UUID, client_nips: Iterable[str], *, state: str = "active"
    ) -> None:
        """Put pairs in directly, as if their integrations had been consumed: for tests of one service alone
        (the platform itself only ever follows events)."""
        for nip in client_nips:
            held = await self.held(session, office_id, nip)
            await self._write(
                session,
                office_id,
                nip,
                held is not None,
                integration_id=uuid.uuid4(),
                revision=1,
                state=state,
                changed_at=datetime.now(UTC),
            )

    async def _write(
        self, session: AsyncSession, office_id: uuid.UUID, client_nip: str, exists: bool, **values: object
    ) -> None:
        t = self.table
        values["applied_at"] = datetime.now(UTC)
        if exists:
            await session.execute(
                update(t).where(t.c.office_id == office_id, t.c.client_nip == client_nip).values(**values)
            )
        else:
            await session.execute(insert(t).values(office_id=office_id, client_nip=client_nip, **values))

    async def allows(self, office_id: uuid.UUID, client_nip: str) -> bool:
        """May this office read this client now (the integration between them is active)?"""
        async with self.db.sessionmaker() as session:
            held = await self.held(session, office_id, client_nip)
        return held is not None and held.readable

    def subscription(self, service_name: str) -> Subscription:
        async def on_integration_changed(session: AsyncSession, envelope: Envelope) -> None:
            try:
                change = parse_integration_change(envelope.type, envelope.version, envelope.payload)
            except ValueError as exc:
                raise PermanentFailure(f"malformed {envelope.type}: {type(exc).__name__}") from None
            if change is not None:  # a type or version this library does not know yet changes no access
                await self.follow(session, change)

        # The name is the inbox identity: never rename it.
        return Subscription(f"{service_name}.access.integration-changed", INTEGRATION_TOPIC, on_integration_changed)
