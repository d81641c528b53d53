"""One contract, two transports: real Kafka (with PostgreSQL) and the in-process transport (with SQLite).

Every test here runs against both, through the same handler code (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from platform_common.messaging.outbox import OutboundMessage, OutboxRelay
from platform_common.testing import wait_until
from platform_common.testing.contract import MAX_ATTEMPTS, Harness


async def _applied_count(h: Harness, n: int) -> list[Any] | None:
    rows = await h.applied()
    return rows if len(rows) >= n else None


class TestOrdering:
    async def test_events_of_one_key_are_applied_in_the_order_they_were_written(self, harness: Harness) -> None:
        keys = ["5260250274", "7010002137", "1111111111", "5213003700"]
        # Interleaved across keys and split over several transactions, as concurrent use cases would write.
        for batch in range(4):
            await harness.emit([(k, {"idx": batch * 10 + i}) for i in range(10) for k in keys])

        rows = await wait_until(lambda: _applied_count(harness, 160), what="160 applied events")

        assert len(rows) == 160
        for key in keys:
            seen = [r.idx for r in rows if r.key == key]
            assert seen == list(range(40)), f"events of {key} applied out of order"
        assert await harness.pending_outbox() == 0


class TestRetriesAndDeadLetters:
    async def test_a_handler_that_fails_transiently_is_retried_and_applied_once(self, harness: Harness) -> None:
        (env,) = await harness.emit([("5260250274", {"idx": 1, "fail_times": MAX_ATTEMPTS - 1})])

        rows = await wait_until(lambda: _applied_count(harness, 1), what="the retried event")

        assert [r.event_id for r in rows] == [env.id]
        assert harness.calls[env.id] == MAX_ATTEMPTS
        assert await harness.dead_letters() == []

    async def test_a_handler_that_keeps_failing_is_dead_lettered_with_its_reason(self, harness: Harness) -> None:
        bad, good = await harness.emit([("5260250274", {"idx": 1, "fail_times": -1}), ("5260250274", {"idx": 2})])

        letters = await wait_until(harness.dead_letters, what="a dead letter")
        # The next event of the same key is not blocked forever by the poisoned one.
        rows = await wait_until(lambda: _applied_count(harness, 1), what="the event after the poisoned one")

        assert [r.event_id for r in rows] == [good.id]
        (letter,) = letters
        assert letter.event_id == bad.id
        assert letter.consumer == "main"
        assert letter.topic == harness.topic
        assert letter.attempts == MAX_ATTEMPTS
        assert "RuntimeError: handler exploded on attempt 3" in letter.reason
        assert harness.calls[bad.id] == MAX_ATTEMPTS
        # The dead-letter topic carries the event on (to operators' tooling) on both transports.
        await wait_until(lambda: _async(bad.id in harness.dlt_seen), what="the event on the dead-letter topic")

    async def test_a_permanent_failure_is_dead_lettered_without_retries(self, harness: Harness) -> None:
        (env,) = await harness.emit([("5260250274", {"idx": 1, "permanent": True})])

        (letter,) = await wait_until(harness.dead_letters, what="a dead letter")

        assert harness.calls[env.id] == 1
        assert letter.attempts == 1
        assert "PermanentFailure: the invoice is not for this client" in letter.reason

    async def test_a_malformed_message_is_dead_lettered_and_does_not_stop_the_stream(self, harness: Harness) -> None:
        await harness.producer.transport.publish(
            [OutboundMessage(topic=harness.topic, key="5260250274", value=b"{not json", headers=())]
        )
        await harness.emit([("5260250274", {"idx": 7})])

        (letter,) = await wait_until(harness.dead_letters, what="a dead letter")
        rows = await wait_until(lambda: _applied_count(harness, 1), what="the valid event")

        assert letter.event_id is None
        assert letter.reason.startswith("invalid envelope:")
        assert letter.payload == "{not json"
        assert [r.idx for r in rows] == [7]

    async def test_a_replayed_dead_letter_is_applied_once_its_cause_is_gone(self, harness: Harness) -> None:
        (env,) = await harness.emit([("5260250274", {"idx": 1, "fail_times": MAX_ATTEMPTS})])
        (letter,) = await wait_until(harness.dead_letters, what="a dead letter")

        outcome = await harness.consumer.dispatcher.replay_dead_letter(letter.id)

        assert outcome == "applied"
        assert [r.event_id for r in await harness.applied()] == [env.id]
        (replayed,) = await harness.dead_letters()
        assert replayed.replayed_at is not None
        with pytest.raises(LookupError):
            await harness.consumer.dispatcher.replay_dead_letter(letter.id)


class TestIdempotence:
    async def test_a_redelivered_event_is_applied_once(self, harness: Harness) -> None:
        (env,) = await harness.emit([("5260250274", {"idx": 1})])
        await wait_until(lambda: _applied_count(harness, 1), what="the first delivery")
        # The broker (or a relay retry) delivers the very same event again, twice.
        row = await _outbox_message(harness, env.id)
        await harness.producer.transport.publish([row, row])
        # A later event of the same key proves the redeliveries were consumed before it.
        (sentinel,) = await harness.emit([("5260250274", {"idx": 2})])

        rows = await wait_until(lambda: _applied_count(harness, 2), what="the sentinel event")

        assert [(r.event_id, r.idx) for r in rows] == [(env.id, 1), (sentinel.id, 2)]
        assert harness.calls[env.id] == 1, "the handler must not even run for a duplicate"


class RelayCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the relay catches it."""


class TestRelayCrash:
    async def test_a_relay_killed_between_publishing_and_marking_loses_and_duplicates_nothing(
        self, harness: Harness
    ) -> None:
        await harness.producer.relay.stop()
        crashed = asyncio.Event()
        doomed = _CrashingRelay(harness, crashed)
        envs = await harness.emit([(k, {"idx": i}) for i in range(5) for k in ("5260250274", "7010002137")])

        with pytest.raises(RelayCrash):
            await doomed.publish_pending()

        # Published but never marked: the rows are still pending, yet the consumer already applied them.
        assert crashed.is_set()
        assert await harness.pending_outbox() == 10
        await wait_until(lambda: _applied_count(harness, 10), what="the events published before the crash")

        # A new relay (the restarted process) publishes everything again.
        successor = OutboxRelay(
            harness.producer.db,
            harness.producer.definition.tables,
            harness.producer.transport,
            harness.producer.settings.messaging,
            name="successor",
        )
        assert await successor.drain() == 10
        (sentinel,) = await harness.emit([("5260250274", {"idx": 99})])
        assert await successor.drain() == 1

        rows = await wait_until(lambda: _applied_count(harness, 11), what="the sentinel after the republish")
        assert sorted(str(r.event_id) for r in rows) == sorted(str(e.id) for e in [*envs, sentinel])
        assert await harness.pending_outbox() == 0
        assert all(harness.calls[e.id] == 1 for e in envs)


class _CrashingRelay(OutboxRelay):
    def __init__(self, h: Harness, crashed: asyncio.Event) -> None:
        p = h.producer
        super().__init__(p.db, p.definition.tables, p.transport, p.settings.messaging, name="doomed")
        self._crashed = crashed

    async def after_publish(self, messages: Sequence[OutboundMessage]) -> None:
        self._crashed.set()
        raise RelayCrash


async def _outbox_message(h: Harness, event_id: Any) -> OutboundMessage:
    from sqlalchemy import select

    t = h.producer.definition.tables.outbox
    async with h.producer.db.sessionmaker() as session:
        row = (await session.execute(select(t).where(t.c.event_id == event_id))).one()
    return OutboundMessage(topic=row.topic, key=row.key, value=row.payload.encode(), headers=())


async def _async(value: bool) -> bool:
    return value
