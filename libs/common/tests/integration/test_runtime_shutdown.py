"""A stopping service disposes of its engine only after everything using it has finished: no database worker
thread outlives ``ServiceRuntime.stop`` (they used to log into closed streams at interpreter shutdown)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

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
    bus = InProcessBus()
    messaging = MessagingSettings(transport="inprocess", relay_poll_interval_s=0.05)
    p_meta, p_tables, _ = make_schema("producer")
    c_meta, c_tables, applied = make_schema("consumer")
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_handler(session: AsyncSession, event: Envelope) -> None:
        await session.execute(insert(applied).values(event_id=event.id, key=event.key, idx=0, subscription="slow"))
        entered.set()
        # Holds its connection while the consumer is asked to stop.
        await release.wait()

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
    consumer = runtime("consumer", c_meta, c_tables, lambda _rt: [Subscription("slow", "shutdown.test", slow_handler)])
    for rt in (producer, consumer):
        await create_schema(rt)
    await consumer.start()
    await producer.start()
    try:
        async with producer.db.sessionmaker() as session, session.begin():
            env = Envelope(type="test.ping", version=1, producer="producer", client_nip="5260250274", payload={})
            await producer.outbox.add(session, env, topic="shutdown.test")
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
        await producer.stop()
        await consumer.stop()

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
