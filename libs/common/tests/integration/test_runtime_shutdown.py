"""A stopping service disposes of its engine only after everything using it has finished: no database worker
thread outlives ``ServiceRuntime.stop`` (they used to log into closed streams at interpreter shutdown)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.db import Database
from platform_common.messaging.dispatch import Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.tables import MessagingTables
from platform_common.messaging.transport import InProcessBus
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.settings import DatabaseSettings, MessagingSettings, ServiceSettings
from platform_common.testing import wait_until
from platform_common.testing.contract import create_schema, make_schema


def _sqlite_worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_a_delivery_in_flight_finishes_before_the_engine_is_disposed(tmp_path: Path) -> None:
    before = _sqlite_worker_threads()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_handler(session: AsyncSession, event: Envelope) -> None:
        await session.execute(insert(applied).values(event_id=event.id, key=event.key, idx=0, subscription="slow"))
        entered.set()
        # Holds its connection while the consumer is asked to stop.
        await release.wait()

    messaging = MessagingSettings(transport="inprocess", relay_poll_interval_s=0.05)
    async with _two_services(tmp_path, messaging, slow_handler) as (producer, consumer, applied):
        try:
            await _publish_one(producer)
            await asyncio.wait_for(entered.wait(), timeout=30)

            stopping = asyncio.create_task(consumer.stop())

            async def transport_stopped() -> bool:
                try:
                    await consumer.transport.check_ready()
                except RuntimeError:
                    return True
                return False

            await wait_until(transport_stopped, what="the consumer to stop taking deliveries")
            # The engine is still there for the handler that is running.
            assert not stopping.done()
            release.set()
            await stopping
        finally:
            release.set()

    # The handler's work was committed, not cut off by the disposal.
    check = Database(consumer.settings.db, "consumer")
    try:
        async with check.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(applied)) == 1
    finally:
        await check.dispose()
    leftover = _sqlite_worker_threads() - before
    for thread in leftover:
        thread.join(timeout=10)
    assert [t.name for t in leftover if t.is_alive()] == []


@asynccontextmanager
async def _two_services(
    tmp_path: Path, messaging: MessagingSettings, handler: Callable[[AsyncSession, Envelope], Any]
) -> AsyncIterator[tuple[ServiceRuntime, ServiceRuntime, Any]]:
    """A producer and a consumer (``handler`` on ``shutdown.test``) on one in-process bus, both started; stopped on
    exit (stopping twice is harmless, so a test may stop either itself)."""
    bus = InProcessBus()
    p_meta, p_tables, _ = make_schema("producer")
    c_meta, c_tables, applied = make_schema("consumer")

    def runtime(
        name: str,
        meta: MetaData,
        tables: MessagingTables,
        subscriptions: Callable[[ServiceRuntime], Sequence[Subscription]],
    ) -> ServiceRuntime:
        definition = ServiceDefinition(
            name=name, schema=name, metadata=meta, tables=tables, migrations="", subscriptions=subscriptions
        )
        url = f"sqlite+aiosqlite:///{tmp_path / name}.db"
        return ServiceRuntime(definition, ServiceSettings(db=DatabaseSettings(url=url), messaging=messaging), bus=bus)

    producer = runtime("producer", p_meta, p_tables, lambda _rt: [])
    consumer = runtime("consumer", c_meta, c_tables, lambda _rt: [Subscription("slow", "shutdown.test", handler)])
    for rt in (producer, consumer):
        await create_schema(rt)
    await consumer.start()
    await producer.start()
    try:
        yield producer, consumer, applied
    finally:
        await producer.stop()
        await consumer.stop()


async def _publish_one(producer: ServiceRuntime) -> None:
    async with producer.db.sessionmaker() as session, session.begin():
        env = Envelope(type="test.ping", version=1, producer="producer", client_nip="5260250274", payload={})
        await producer.outbox.add(session, env, topic="shutdown.test")


async def test_a_stopping_relay_lets_the_delivery_it_carries_finish_and_frees_the_consumers_database(
    tmp_path: Path,
) -> None:
    """In one process the producer's relay task runs the consumer's handler. Cancelling that task half-way used to
    leave the handler's SQLite write transaction open, and the consumer's next writer waited for the lock until
    the abandoned connection was collected (tens of seconds, a flaky shutdown of the embedded runner)."""
    entered, release = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def slow_handler(session: AsyncSession, event: Envelope) -> None:
        await session.execute(insert(applied).values(event_id=event.id, key=event.key, idx=0, subscription="slow"))
        entered.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")

    messaging = MessagingSettings(transport="inprocess", relay_poll_interval_s=0.05, stop_grace_s=30)
    async with _two_services(tmp_path, messaging, slow_handler) as (producer, consumer, applied):
        try:
            await _publish_one(producer)
            await asyncio.wait_for(entered.wait(), timeout=30)
            stopping = asyncio.create_task(producer.stop())
            await wait_until(lambda: _async(producer.relay.stopping), what="the relay to be asked to stop")
            assert not stopping.done()  # waiting for the batch in flight, not cancelling it
            release.set()
            await asyncio.wait_for(stopping, timeout=30)
            assert outcome == ["finished"]
            # The consumer's database takes a writer at once: nothing holds its write lock.
            async with consumer.db.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA busy_timeout=100")
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                assert await conn.scalar(select(func.count()).select_from(applied)) == 1
                await conn.rollback()
        finally:
            release.set()


async def test_a_relay_whose_delivery_never_ends_is_cancelled_after_the_grace_period(tmp_path: Path) -> None:
    entered = asyncio.Event()

    async def stuck_handler(session: AsyncSession, event: Envelope) -> None:
        entered.set()
        await asyncio.Event().wait()

    messaging = MessagingSettings(transport="inprocess", relay_poll_interval_s=0.05, stop_grace_s=0.2)
    async with _two_services(tmp_path, messaging, stuck_handler) as (producer, _consumer, _):
        await _publish_one(producer)
        await asyncio.wait_for(entered.wait(), timeout=30)
        await asyncio.wait_for(producer.stop(), timeout=30)
        assert not producer.relay.running


async def _async(value: bool) -> bool:
    return value
