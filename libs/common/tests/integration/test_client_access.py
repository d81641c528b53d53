"""The client-access projection against real PostgreSQL and SQLite: which office may read which client, in
revision order, across renewed integrations, robust to late replays; its consumer refuses malformed events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from platform_common.client_access import ClientAccessProjection, add_client_access_table
from platform_common.contracts.integrations import (
    INTEGRATION_TOPIC,
    IntegrationActivated,
    IntegrationChange,
    IntegrationResumed,
    IntegrationRevoked,
    IntegrationSuspended,
)
from platform_common.db import Database, make_metadata
from platform_common.messaging.dispatch import PermanentFailure
from platform_common.messaging.envelope import Envelope
from platform_common.settings import DatabaseSettings

SCHEMA = "access_test"
metadata = make_metadata(SCHEMA)
table = add_client_access_table(metadata)
OFFICE, OTHER_OFFICE = uuid.uuid4(), uuid.uuid4()
CLIENT, OTHER_CLIENT = "7777777702", "1112223303"
T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
async def projection(db_url: str) -> AsyncIterator[ClientAccessProjection]:
    database = Database(DatabaseSettings(url=db_url), SCHEMA)
    async with database.engine.begin() as conn:
        if not database.is_sqlite:
            await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
    yield ClientAccessProjection(table, database)
    await database.dispose()


def change(
    contract: type[IntegrationChange],
    revision: int,
    *,
    integration: uuid.UUID,
    at: datetime = T0,
    office: uuid.UUID = OFFICE,
    client: str = CLIENT,
) -> Any:
    state = {
        IntegrationActivated: "active",
        IntegrationSuspended: "suspended",
        IntegrationResumed: "active",
        IntegrationRevoked: "revoked",
    }[contract]
    return contract(
        integration_id=integration,
        revision=revision,
        state=state,
        office_id=office,
        office_nip="5265877635",
        office_name="Biuro",
        client_nip=client,
        changed_at=at + timedelta(minutes=revision),
        changed_by_side="client",
    )


async def follow(projection: ClientAccessProjection, *changes: IntegrationChange) -> list[bool]:
    db = projection.db
    applied = []
    for c in changes:
        async with db.sessionmaker() as session, session.begin():
            applied.append(await projection.follow(session, c))
    return applied


async def test_access_follows_the_lifecycle_per_office_and_client(projection: ClientAccessProjection) -> None:
    one = uuid.uuid4()
    assert not await projection.allows(OFFICE, CLIENT)
    await follow(projection, change(IntegrationActivated, 3, integration=one))
    assert await projection.allows(OFFICE, CLIENT)
    assert not await projection.allows(OTHER_OFFICE, CLIENT)
    assert not await projection.allows(OFFICE, OTHER_CLIENT)
    await follow(projection, change(IntegrationSuspended, 4, integration=one))
    assert not await projection.allows(OFFICE, CLIENT)
    await follow(projection, change(IntegrationResumed, 5, integration=one))
    assert await projection.allows(OFFICE, CLIENT)
    await follow(projection, change(IntegrationRevoked, 6, integration=one))
    assert not await projection.allows(OFFICE, CLIENT)


async def test_an_older_revision_never_undoes_a_newer_one(projection: ClientAccessProjection) -> None:
    one = uuid.uuid4()
    applied = await follow(
        projection,
        change(IntegrationActivated, 3, integration=one),
        change(IntegrationRevoked, 4, integration=one),
        change(IntegrationActivated, 3, integration=one),  # a redelivery, or a dead letter replayed late
    )
    assert applied == [True, True, False]
    assert not await projection.allows(OFFICE, CLIENT)


async def test_a_renewed_integration_starts_again_and_an_old_one_replayed_late_does_not_win(
    projection: ClientAccessProjection,
) -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    await follow(projection, change(IntegrationActivated, 3, integration=old))
    await follow(projection, change(IntegrationRevoked, 4, integration=old))
    # The office asked again after the revoke: the new integration's revisions start from 1, later in time.
    renewed = change(IntegrationActivated, 3, integration=new, at=T0 + timedelta(days=1))
    assert await follow(projection, renewed) == [True]
    assert await projection.allows(OFFICE, CLIENT)
    assert await follow(projection, change(IntegrationRevoked, 4, integration=old)) == [False]
    assert await projection.allows(OFFICE, CLIENT)


async def test_the_consumer_applies_known_changes_and_dead_letters_malformed_ones(
    projection: ClientAccessProjection,
) -> None:
    subscription = projection.subscription("some-svc")
    assert subscription.name == "some-svc.access.integration-changed"
    assert subscription.topic == INTEGRATION_TOPIC
    event = change(IntegrationActivated, 3, integration=uuid.uuid4())
    db = projection.db
    async with db.sessionmaker() as session, session.begin():
        await subscription.handler(session, Envelope.wrap(event, producer="approval-svc", client_nip=CLIENT))
    assert await projection.allows(OFFICE, CLIENT)

    broken = Envelope(type="integration.revoked", version=1, producer="approval-svc", payload={"revision": 0})
    async with db.sessionmaker() as session, session.begin():
        with pytest.raises(PermanentFailure, match=r"malformed integration\.revoked"):
            await subscription.handler(session, broken)
        unknown = Envelope(type="integration.renamed", version=9, producer="approval-svc", payload={})
        await subscription.handler(session, unknown)  # a future type changes no access
    assert await projection.allows(OFFICE, CLIENT)


async def test_seeding_opens_and_closes_pairs(projection: ClientAccessProjection) -> None:
    db = projection.db
    async with db.sessionmaker() as session, session.begin():
        await projection.seed(session, OFFICE, [CLIENT, OTHER_CLIENT])
    assert await projection.allows(OFFICE, OTHER_CLIENT)
    async with db.sessionmaker() as session, session.begin():
        await projection.seed(session, OFFICE, [OTHER_CLIENT], state="revoked")
    assert not await projection.allows(OFFICE, OTHER_CLIENT)
    assert await projection.allows(OFFICE, CLIENT)
