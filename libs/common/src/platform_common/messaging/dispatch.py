"""Consumer-side delivery shared by both transports: inbox, retries with backoff, dead letters.

A transport hands every received message to ``Dispatcher.deliver``; the outcome tells it whether it may
acknowledge (commit the offset, mark the outbox row). Nothing is acknowledged before the handler's
transaction (effect + inbox row) or the dead letter is durably stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

import pydantic
from opentelemetry import metrics, propagate, trace
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.db import Database
from platform_common.messaging.envelope import Envelope, UnsupportedEvent
from platform_common.messaging.inbox import claim
from platform_common.messaging.tables import MessagingTables
from platform_common.settings import MessagingSettings

log = logging.getLogger(__name__)

DLT_SUFFIX = ".dlt"

Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help (bad data); the event is dead-lettered at once."""


@dataclass(frozen=True)
class Subscription:
    """One handler of one topic. ``name`` identifies it in the inbox, so it must never change."""

    name: str
    topic: str
    handler: Handler


class UnknownDeadLetter(LookupError):
    """No pending dead letter has this id (never one, or already replayed)."""


class NoSubscription(LookupError):
    """The letter's subscription is not (or no longer) part of this service."""


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class DeadLetter:
    consumer: str
    topic: str
    key: str | None
    value: bytes
    reason: str
    attempts: int
    source: str
    event_id: uuid.UUID | None


class DeadLetterSink(Protocol):
    async def __call__(self, letter: DeadLetter) -> None: ...


@dataclass
class Dispatcher:
    """All subscriptions of one service (one consumer group), bound to the service's database."""

    group: str
    db: Database
    tables: MessagingTables
    settings: MessagingSettings
    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer(__name__))
    meter: metrics.Meter = field(default_factory=lambda: metrics.NoOpMeter(__name__))
    # Transports add their dead-letter topic publisher here; the table record is always written.
    dead_letter_sinks: list[DeadLetterSink] = field(default_factory=list)
    _by_topic: dict[str, list[Subscription]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        # Deliveries running now: an in-process one runs in the publishing service's relay task, which this
        # service's stop cannot cancel, so it waits for them (``wait_idle``) before disposing of its engine.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._outcomes = self.meter.create_counter(
            "ksef_hub.events.consumed", description="Events handled, by subscription and outcome"
        )
        self._duration = self.meter.create_histogram(
            "ksef_hub.events.handle_duration", unit="s", description="Handler time, retries included"
        )

    def subscribe(self, subscription: Subscription) -> None:
        if any(s.name == subscription.name for subs in self._by_topic.values() for s in subs):
            raise ValueError(f"duplicate subscription name {subscription.name!r}")
        self._by_topic[subscription.topic].append(subscription)

    @property
    def topics(self) -> list[str]:
        return sorted(self._by_topic)

    def subscriptions(self, topic: str) -> Sequence[Subscription]:
        return self._by_topic.get(topic, ())

    async def deliver(self, topic: str, key: str | None, value: bytes, *, source: str) -> list[Outcome]:
        self._in_flight += 1
        self._idle.clear()
        try:
            return [await self._deliver_to(sub, topic, key, value, source) for sub in self.subscriptions(topic)]
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no delivery is running (new ones may start: detach from the transport first)."""
        await self._idle.wait()

    async def _deliver_one(
        self, sub: Subscription, topic: str, key: str | None, value: bytes, envelope: Envelope, source: str
    ) -> Outcome:
        parent = propagate.extract(envelope.trace)
        attempt = 0
        while True:
            attempt += 1
            with self.tracer.start_as_current_span(
                f"{topic} process",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.destination.name": topic,
                    "messaging.message.id": str(envelope.id),
                    "messaging.consumer.group.name": self.group,
                    "ksef_hub.subscription": sub.name,
                    "ksef_hub.attempt": attempt,
                },
            ) as span:
                try:
                    async with self.db.sessionmaker() as session, session.begin():
                        if not await claim(
                            session, self.tables.inbox, consumer=sub.name, event_id=envelope.id, topic=topic
                        ):
                            span.set_attribute("ksef_hub.duplicate", True)
                            return Outcome.DUPLICATE
                        await sub.handler(session, envelope)
                    return Outcome.APPLIED
                except (PermanentFailure, UnsupportedEvent, pydantic.ValidationError) as exc:
                    span.record_exception(exc)
                    reason = f"permanent failure: {_describe(exc)}"
                    await self._dead_letter(sub, topic, key, value, reason, attempt, source, envelope.id)
                    return Outcome.DEAD_LETTERED
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                    if attempt >= self.settings.max_attempts:
                        reason = f"failed {attempt} times; last error: {_describe(exc)}"
                        await self._dead_letter(sub, topic, key, value, reason, attempt, source, envelope.id)
                        return Outcome.DEAD_LETTERED
                    log.warning(
                        "handler %s failed on event %s (attempt %d/%d): %s",
                        sub.name,
                        envelope.id,
                        attempt,
                        self.settings.max_attempts,
                        _describe(exc),
                    )
            await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        return float(min(self.settings.retry_max_backoff_s, self.settings.retry_initial_backoff_s * 2 ** (attempt - 1)))

    async def _dead_letter(
        self,
        sub: Subscription,
        topic: str,
        key: str | None,
        value: bytes,
        reason: str,
        attempts: int,
        source: str,
        event_id: uuid.UUID | None,
    ) -> None:
        log.error(
            "dead-lettering %s for %s from %s: %s",
            event_id or "unparseable message",
            sub.name,
            source,
            reason,
        )
        letter = DeadLetter(sub.name, topic, key, value, reason, attempts, source, event_id)
        t = self.tables.dead_letter
        async with self.db.sessionmaker() as session, session.begin():
            ins = sqlite_insert if self.db.is_sqlite else pg_insert
            await session.execute(
                ins(t)
                .values(
                    consumer=sub.name,
                    topic=topic,
                    event_id=event_id,
                    message_key=key,
                    payload=value.decode("utf-8", errors="replace"),
                    reason=reason,
                    attempts=attempts,
                    source=source,
                    created_at=datetime.now(UTC),
                )
                .on_conflict_do_nothing()
            )
        # A letter from a dead-letter topic stays in the table: no cascade of .dlt.dlt topics.
        if not topic.endswith(DLT_SUFFIX):
            for sink in self.dead_letter_sinks:
                await sink(letter)

    async def replay_dead_letter(self, dead_letter_id: int) -> Outcome:
        """Run a dead-lettered event through its handler again, once its cause is fixed.

        The letter is marked replayed first; if the handler fails again, a new pending letter is recorded.
        """
        t = self.tables.dead_letter
        async with self.db.sessionmaker() as session, session.begin():
            # Marked in the statement that finds it: of two concurrent replays of one letter, one runs it.
            row = (
                await session.execute(
                    update(t)
                    .where(t.c.id == dead_letter_id, t.c.replayed_at.is_(None))
                    .values(replayed_at=datetime.now(UTC))
                    .returning(t.c.consumer, t.c.topic, t.c.message_key, t.c.payload)
                )
            ).one_or_none()
            if row is None:
                raise UnknownDeadLetter(f"no pending dead letter {dead_letter_id}")
            sub = next((s for s in self.subscriptions(row.topic) if s.name == row.consumer), None)
            if sub is None:
                # Raising rolls the mark back: the letter stays pending for a release that has the handler.
                raise NoSubscription(f"no subscription {row.consumer!r} for {row.topic}")
        return await self._deliver_to(sub, row.topic, row.message_key, row.payload.encode(), f"replay:{dead_letter_id}")

    async def _deliver_to(self, sub: Subscription, topic: str, key: str | None, value: bytes, source: str) -> Outcome:
        started = time.perf_counter()
        try:
            envelope = Envelope.from_bytes(value)
        except (pydantic.ValidationError, ValueError) as exc:
            await self._dead_letter(sub, topic, key, value, f"invalid envelope: {_describe(exc)}", 0, source, None)
            outcome = Outcome.DEAD_LETTERED
        else:
            outcome = await self._deliver_one(sub, topic, key, value, envelope, source)
        attributes = {"topic": topic, "subscription": sub.name, "outcome": outcome.value}
        self._outcomes.add(1, attributes)
        self._duration.record(time.perf_counter() - started, attributes)
        return outcome


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", "; ")
    return f"{type(exc).__name__}: {text}"[:2000] if text else type(exc).__name__
