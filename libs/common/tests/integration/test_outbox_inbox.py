"""Outbox and inbox against real PostgreSQL and SQLite (``db_url`` runs each test on both)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, String, Table, func, insert, select, text

from platform_common.db import Database, make_metadata
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.inbox import claim
from platform_common.messaging.outbox import OutboundMessage, Outbox, OutboxRelay
from platform_common.messaging.tables import OUTBOX_LANES, MessagingTables, add_messaging_tables
from platform_common.settings import DatabaseSettings, MessagingSettings

SCHEMA = "outbox_test"
metadata = make_metadata(SCHEMA)
tables: MessagingTables = add_messaging_tables(metadata)
invoice = Table(
    "invoice", metadata, Column("id", Integer, primary_key=True), Column("number", String(50), nullable=False)
)
SETTINGS = MessagingSettings(relay_batch_size=50, retry_initial_backoff_s=0.01)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(DatabaseSettings(url=db_url), SCHEMA)
    async with database.engine.begin() as conn:
        if not database.is_sqlite:
            await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
        await conn.execute(insert(tables.outbox_lane), [{"lane": n} for n in range(OUTBOX_LANES)])
    yield database
    await database.dispose()


class RecordingPublisher:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.published: list[OutboundMessage] = []
        self.delay = delay
        self.fail = fail

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        if self.fail:
            raise ConnectionError("broker unreachable")
        await asyncio.sleep(self.delay)  # holds the claim open, so a second relay runs meanwhile
        self.published.extend(messages)


def _event(key: str, n: int) -> Envelope:
    return Envelope(type="test.ping", version=1, producer="test", client_nip=key, payload={"n": n})


async def _pending(db: Database) -> int:
    async with db.sessionmaker() as s:
        return int(await s.scalar(select(func.count()).where(tables.outbox.c.published_at.is_(None))) or 0)


class TestOutbox:
    async def test_event_commits_with_the_state_change_and_vanishes_with_its_rollback(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            await session.execute(insert(invoice).values(id=1, number="FV/1"))
            await outbox.add(session, _event("5260250274", 1), topic="invoice.fetched")
        with pytest.raises(RuntimeError, match="use case failed"):
            async with db.sessionmaker() as session, session.begin():
                await session.execute(insert(invoice).values(id=2, number="FV/2"))
                await outbox.add(session, _event("5260250274", 2), topic="invoice.fetched")
                raise RuntimeError("use case failed")

        async with db.sessionmaker() as session:
            invoices = (await session.scalars(select(invoice.c.number))).all()
            rows = (await session.execute(select(tables.outbox))).all()
        assert invoices == ["FV/1"]
        assert len(rows) == 1
        assert rows[0].key == "5260250274"
        assert rows[0].topic == "invoice.fetched"
        assert Envelope.model_validate_json(rows[0].payload).payload == {"n": 1}

    async def test_commit_wakes_the_relay_and_rollback_does_not(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        woken = asyncio.Event()
        outbox.on_commit_wake(woken)
        with pytest.raises(RuntimeError):
            async with db.sessionmaker() as session, session.begin():
                await outbox.add(session, _event("1", 1), topic="t")
                raise RuntimeError
        assert not woken.is_set()
        async with db.sessionmaker() as session, session.begin():
            await outbox.add(session, _event("1", 2), topic="t")
        assert woken.is_set()

    async def test_a_batch_commits_with_the_state_change_in_the_given_order(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        woken = asyncio.Event()
        outbox.on_commit_wake(woken)
        batch = [_event(f"nip{n % 3}", n) for n in range(250)]
        async with db.sessionmaker() as session, session.begin():
            await session.execute(insert(invoice).values(id=1, number="FV/1"))
            await outbox.add_many(session, batch, topic="invoice.fetched")
        assert woken.is_set()

        async with db.sessionmaker() as session:
            rows = (await session.execute(select(tables.outbox).order_by(tables.outbox.c.seq))).all()
        assert [r.event_id for r in rows] == [e.id for e in batch]
        assert [r.key for r in rows] == [e.key for e in batch]
        assert {r.topic for r in rows} == {"invoice.fetched"}
        assert [Envelope.model_validate_json(r.payload).payload["n"] for r in rows] == list(range(250))
        assert rows[0].headers == {"event_type": "test.ping", "event_version": "1"}
        assert len({r.created_at for r in rows}) == 1

        publisher = RecordingPublisher()
        assert await OutboxRelay(db, tables, publisher, SETTINGS, name="t").drain() == 250
        assert [Envelope.from_bytes(m.value).payload["n"] for m in publisher.published] == list(range(250))

    async def test_a_rolled_back_batch_leaves_nothing_and_an_empty_one_is_a_no_op(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        woken = asyncio.Event()
        outbox.on_commit_wake(woken)
        with pytest.raises(RuntimeError, match="use case failed"):
            async with db.sessionmaker() as session, session.begin():
                await outbox.add_many(session, [_event("k", n) for n in range(10)], topic="t")
                raise RuntimeError("use case failed")
        async with db.sessionmaker() as session, session.begin():
            await outbox.add_many(session, [], topic="t")
        assert not woken.is_set()
        assert await _pending(db) == 0

    async def test_relay_publishes_pending_rows_in_order_and_marks_them(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            for n in range(120):
                await outbox.add(session, _event(f"key{n % 7}", n), topic="t")
        publisher = RecordingPublisher()
        relay = OutboxRelay(db, tables, publisher, SETTINGS, name="t")

        assert await relay.drain() == 120

        ns = [Envelope.from_bytes(m.value).payload["n"] for m in publisher.published]
        for k in range(7):
            mine = [n for n, m in zip(ns, publisher.published, strict=True) if m.key == f"key{k}"]
            assert mine == sorted(mine) and len(mine) == len(range(k, 120, 7))
        assert await _pending(db) == 0
        assert await relay.publish_pending() == 0

    async def test_a_failed_publish_keeps_rows_pending_and_counts_the_attempt(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            await outbox.add(session, _event("k", 1), topic="t")
        relay = OutboxRelay(db, tables, RecordingPublisher(fail=True), SETTINGS, name="t")

        with pytest.raises(ConnectionError):
            await relay.publish_pending()

        async with db.sessionmaker() as session:
            row = (await session.execute(select(tables.outbox))).one()
        assert row.published_at is None
        assert row.attempts == 1
        assert "broker unreachable" in row.last_error

    async def test_relay_loop_survives_a_broker_outage(self, db: Database) -> None:
        publisher = RecordingPublisher(fail=True)
        relay = OutboxRelay(db, tables, publisher, SETTINGS, name="t")
        outbox = Outbox(tables, producer="test")
        outbox.on_commit_wake(relay.wake_event)
        await relay.start()
        try:
            async with db.sessionmaker() as session, session.begin():
                await outbox.add(session, _event("k", 1), topic="t")
            from platform_common.testing import wait_until

            async def attempted() -> bool:
                async with db.sessionmaker() as s:
                    return bool(await s.scalar(select(tables.outbox.c.attempts)))

            await wait_until(attempted, what="a failed publish attempt")
            publisher.fail = False
            await wait_until(lambda: _is_zero(_pending(db)), what="the outbox to drain after recovery")
            assert len(publisher.published) == 1
        finally:
            await relay.stop()


async def _is_zero(value: Any) -> bool:
    return bool(await value == 0)


async def _rows(db: Database) -> list[Any]:
    async with db.sessionmaker() as s:
        return list((await s.execute(select(tables.outbox).order_by(tables.outbox.c.seq))).all())


class TestRetention:
    """Published rows do not stay in the table (and its WAL and backups) beyond the retention."""

    async def test_rows_published_longer_ago_than_the_retention_are_purged_in_batches(self, db: Database) -> None:
        settings = MessagingSettings(outbox_retention_s=3600, outbox_purge_batch_size=3)
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            await outbox.add_many(session, [_event(f"k{n % 4}", n) for n in range(10)], topic="t")
        relay = OutboxRelay(db, tables, RecordingPublisher(), settings, name="t")
        assert await relay.drain() == 10
        async with db.sessionmaker() as session, session.begin():
            await outbox.add(session, _event("k0", 99), topic="t")  # still pending: never purged

        assert await relay.purge_published() == 0  # within the retention
        assert len(await _rows(db)) == 11

        later = datetime.now(UTC) + timedelta(seconds=3601)
        assert await relay.purge_published(now=later) == 10  # 3 + 3 + 3 + 1, each batch its own transaction

        left = await _rows(db)
        assert [Envelope.model_validate_json(r.payload).payload["n"] for r in left] == [99]
        assert left[0].published_at is None
        assert await relay.purge_published(now=later) == 0

    async def test_a_zero_retention_deletes_each_row_once_it_is_published(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            await outbox.add_many(session, [_event(f"k{n % 3}", n) for n in range(7)], topic="t")
        publisher = RecordingPublisher()
        relay = OutboxRelay(db, tables, publisher, MessagingSettings(outbox_retention_s=0), name="t")

        assert await relay.drain() == 7

        assert [Envelope.from_bytes(m.value).payload["n"] for m in publisher.published] == list(range(7))
        assert await _rows(db) == []

    async def test_a_failed_publish_is_not_deleted_under_a_zero_retention(self, db: Database) -> None:
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            await outbox.add(session, _event("k", 1), topic="t")
        relay = OutboxRelay(
            db, tables, RecordingPublisher(fail=True), MessagingSettings(outbox_retention_s=0), name="t"
        )

        with pytest.raises(ConnectionError):
            await relay.publish_pending()

        assert [r.attempts for r in await _rows(db)] == [1]

    async def test_the_running_relay_purges_by_itself(self, db: Database) -> None:
        from platform_common.testing import wait_until

        settings = MessagingSettings(
            outbox_retention_s=0.001, outbox_purge_interval_s=0.001, relay_poll_interval_s=0.01
        )
        publisher = RecordingPublisher()
        relay = OutboxRelay(db, tables, publisher, settings, name="t")
        outbox = Outbox(tables, producer="test")
        outbox.on_commit_wake(relay.wake_event)
        await relay.start()
        try:
            async with db.sessionmaker() as session, session.begin():
                await outbox.add(session, _event("k", 1), topic="t")

            async def purged() -> bool:
                return len(publisher.published) == 1 and await _rows(db) == []

            await wait_until(purged, what="the published row to be purged by the relay loop")
        finally:
            await relay.stop()


class TestInbox:
    async def test_an_event_is_claimed_once_per_consumer(self, db: Database) -> None:
        event_id = uuid.uuid4()
        for consumer, expected in (("buffer", True), ("buffer", False), ("notify", True)):
            async with db.sessionmaker() as session, session.begin():
                got = await claim(session, tables.inbox, consumer=consumer, event_id=event_id, topic="t")
            assert got is expected, consumer

    async def test_a_rolled_back_effect_releases_the_claim(self, db: Database) -> None:
        event_id = uuid.uuid4()
        with pytest.raises(RuntimeError):
            async with db.sessionmaker() as session, session.begin():
                assert await claim(session, tables.inbox, consumer="c", event_id=event_id, topic="t")
                await session.execute(insert(invoice).values(id=1, number="FV/1"))
                raise RuntimeError("handler failed after its first write")
        async with db.sessionmaker() as session, session.begin():
            assert await claim(session, tables.inbox, consumer="c", event_id=event_id, topic="t")
            assert await session.scalar(select(func.count()).select_from(invoice)) == 0


@pytest.mark.postgres
async def test_concurrent_relays_share_the_work_without_duplicates_or_reordering(pg_url: str) -> None:
    db = Database(DatabaseSettings(url=pg_url), SCHEMA)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
            await conn.run_sync(metadata.create_all)
        outbox = Outbox(tables, producer="test")
        async with db.sessionmaker() as session, session.begin():
            for n in range(400):
                await outbox.add(session, _event(f"nip{n % 25}", n), topic="t")
        log: list[tuple[str, OutboundMessage]] = []

        class Shared(RecordingPublisher):
            def __init__(self, name: str) -> None:
                super().__init__(delay=0.02)
                self.name = name

            async def publish(self, messages: Sequence[OutboundMessage]) -> None:
                await super().publish(messages)
                log.extend((self.name, m) for m in messages)

        relays = [
            OutboxRelay(db, tables, Shared(f"r{i}"), MessagingSettings(relay_batch_size=20), name=f"r{i}")
            for i in range(3)
        ]
        for r in relays:
            await r.start()  # seeds the lanes, then competes for them
        try:
            from platform_common.testing import wait_until

            await wait_until(lambda: _is_zero(_pending(db)), what="all rows published")
        finally:
            for r in relays:
                await r.stop()

        seqs = [m.seq for _, m in log]
        assert sorted(seqs) == sorted(set(seqs)) and len(seqs) == 400, "a row was published twice or lost"
        assert len({name for name, _ in log}) > 1, "the relays did not share the work"
        for k in range(25):
            mine = [m.seq for _, m in log if m.key == f"nip{k}"]
            assert mine == sorted(mine), f"nip{k} published out of order"
    finally:
        await db.dispose()
