"""Two transports behind one interface; handler code is the same for both.

- ``KafkaTransport``: aiokafka; idempotent producer with acks=all; one consumer group per service; offsets
  committed only after the handler's transaction (or the dead letter) is stored.
- ``InProcessTransport``: for the embedded mode. Publishing delivers straight to the subscribed handlers of
  every service in the process, and the relay marks an outbox row published only after all of them have
  committed or dead-lettered it. The outbox is the durable queue, so a crash between publish and handler
  loses nothing: the row is delivered again on restart and the inboxes absorb the repeat.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from platform_common.messaging.dispatch import DLT_SUFFIX, DeadLetter, Dispatcher
from platform_common.messaging.outbox import OutboundMessage
from platform_common.settings import KafkaSettings
from platform_common.tasks import STOP_GRACE_S, finish_or_cancel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    # None until the group has committed an offset there (nothing consumed yet): the lag is unknown then.
    committed: int | None
    end: int

    @property
    def lag(self) -> int | None:
        return max(0, self.end - self.committed) if self.committed is not None else None


class Transport(abc.ABC):
    def __init__(self) -> None:
        self._dispatchers: list[Dispatcher] = []

    def add_dispatcher(self, dispatcher: Dispatcher) -> None:
        self._dispatchers.append(dispatcher)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def publish(self, messages: Sequence[OutboundMessage]) -> None: ...

    @abc.abstractmethod
    async def check_ready(self) -> None:
        """Raise when the transport cannot deliver right now."""


class InProcessBus:
    """Routes messages between the services of one process. Shared by their ``InProcessTransport``s."""

    def __init__(self) -> None:
        self._dispatchers: dict[str, list[Dispatcher]] = defaultdict(list)

    def attach(self, dispatcher: Dispatcher) -> None:
        for topic in dispatcher.topics:
            self._dispatchers[topic].append(dispatcher)

    def detach(self, dispatcher: Dispatcher) -> None:
        for dispatchers in self._dispatchers.values():
            if dispatcher in dispatchers:
                dispatchers.remove(dispatcher)

    async def deliver(self, topic: str, key: str | None, value: bytes, source: str) -> None:
        for dispatcher in list(self._dispatchers.get(topic, ())):
            await dispatcher.deliver(topic, key, value, source=source)


class InProcessTransport(Transport):
    def __init__(self, bus: InProcessBus) -> None:
        super().__init__()
        self.bus = bus
        self._started = False

    async def start(self) -> None:
        for d in self._dispatchers:
            d.dead_letter_sinks.append(self._publish_dead_letter)
            self.bus.attach(d)
        self._started = True

    async def stop(self) -> None:
        for d in self._dispatchers:
            self.bus.detach(d)
            if self._publish_dead_letter in d.dead_letter_sinks:
                d.dead_letter_sinks.remove(self._publish_dead_letter)
        self._started = False

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        # Sequential delivery keeps the per-key order (and the global order, which embedded mode can afford).
        for m in messages:
            await self.bus.deliver(m.topic, m.key, m.value, source=f"inprocess:{m.topic}#{m.seq}")

    async def _publish_dead_letter(self, letter: DeadLetter) -> None:
        await self.bus.deliver(letter.topic + DLT_SUFFIX, letter.key, letter.value, source=letter.source)

    async def check_ready(self) -> None:
        if not self._started:
            raise RuntimeError("in-process transport is not started")


class KafkaTransport(Transport):
    def __init__(
        self, settings: KafkaSettings, *, client_id: str, topics: Sequence[str] = (), stop_grace_s: float = STOP_GRACE_S
    ) -> None:
        super().__init__()
        self._stop_grace_s = stop_grace_s
        self.settings = settings
        self.client_id = settings.client_id or client_id
        self._extra_topics = set(topics)
        self._producer: Any = None
        self._consumers: list[Any] = []
        self._consumed: list[tuple[Any, Dispatcher]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def declare_topics(self, *topics: str) -> None:
        """Topics this service produces to, created on start (with their dead-letter twins) when missing."""
        self._extra_topics.update(topics)

    @property
    def producer(self) -> Any:
        if self._producer is None:
            raise RuntimeError("Kafka transport is not started")
        return self._producer

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        if self.settings.create_topics:
            await self.ensure_topics()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=self.settings.request_timeout_ms,
        )
        await producer.start()
        self._producer = producer
        self._stopping.clear()
        for dispatcher in self._dispatchers:
            if not dispatcher.topics:
                continue
            dispatcher.dead_letter_sinks.append(self._publish_dead_letter)
            consumer = await self._start_consumer(dispatcher)
            self._consumers.append(consumer)
            self._consumed.append((consumer, dispatcher))
            self._tasks.append(
                asyncio.create_task(self._consume(consumer, dispatcher), name=f"kafka-consumer:{dispatcher.group}")
            )

    async def ensure_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        wanted = set(self._extra_topics)
        for d in self._dispatchers:
            wanted.update(d.topics)
        wanted.update({t + DLT_SUFFIX for t in wanted if not t.endswith(DLT_SUFFIX)})
        if not wanted:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            request_timeout_ms=self.settings.request_timeout_ms,
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = sorted(wanted - existing)
            if missing:
                # Another service may create the same topic at the same moment; that is fine.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [
                            NewTopic(
                                t,
                                num_partitions=self.settings.topic_partitions,
                                replication_factor=self.settings.topic_replication_factor,
                            )
                            for t in missing
                        ]
                    )
        finally:
            await admin.close()

    async def _start_consumer(self, dispatcher: Dispatcher) -> Any:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            *dispatcher.topics,
            bootstrap_servers=self.settings.bootstrap_servers,
            client_id=f"{self.client_id}-{dispatcher.group}",
            group_id=dispatcher.group,
            enable_auto_commit=False,
            auto_offset_reset=self.settings.auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=self.settings.heartbeat_interval_ms,
            request_timeout_ms=self.settings.request_timeout_ms + 5_000,
            # A handler may retry with backoff for a while; keep the member in the group meanwhile.
            max_poll_interval_ms=600_000,
        )
        await consumer.start()
        return consumer

    async def _consume(self, consumer: Any, dispatcher: Dispatcher) -> None:
        from aiokafka.errors import KafkaError

        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError:
                log.exception("Kafka consumer %s could not fetch; retrying", dispatcher.group)
                await asyncio.sleep(1)
                continue
            # Partitions are independent: process them concurrently, each strictly in offset order.
            await asyncio.gather(
                *(self._process_partition(consumer, dispatcher, tp, msgs) for tp, msgs in batches.items())
            )

    async def _process_partition(self, consumer: Any, dispatcher: Dispatcher, tp: Any, msgs: list[Any]) -> None:
        from aiokafka.errors import CommitFailedError, KafkaError

        done = 0
        try:
            for msg in msgs:
                if self._stopping.is_set():
                    break  # what is done is committed below; the rest is redelivered to whoever takes over
                await dispatcher.deliver(
                    msg.topic,
                    msg.key.decode() if msg.key is not None else None,
                    msg.value or b"",
                    source=f"{msg.topic}/{msg.partition}@{msg.offset}",
                )
                done += 1
        except Exception:
            # Neither applied nor dead-lettered (e.g. the database is down): never skip it. Rewind to it
            # and let the next fetch try again after a pause.
            log.exception("delivery from %s@%d failed outside the handler; rewinding", tp, msgs[done].offset)
            consumer.seek(tp, msgs[done].offset)
            await asyncio.sleep(1)
        if done == 0:
            return
        try:
            await consumer.commit({tp: msgs[done - 1].offset + 1})
        except (CommitFailedError, KafkaError) as exc:
            # The partition moved to another member during processing; it will redeliver from the last
            # committed offset and the inbox makes the repeat harmless.
            log.warning("offset commit for %s failed (%s); messages will be redelivered", tp, exc)

    async def _publish_dead_letter(self, letter: DeadLetter) -> None:
        headers = [
            ("x-dlt-reason", letter.reason.encode()),
            ("x-dlt-consumer", letter.consumer.encode()),
            ("x-dlt-attempts", str(letter.attempts).encode()),
            ("x-dlt-source", letter.source.encode()),
        ]
        if letter.event_id is not None:
            headers.append(("event_id", str(letter.event_id).encode()))
        await self.producer.send_and_wait(
            letter.topic + DLT_SUFFIX,
            value=letter.value,
            key=letter.key.encode() if letter.key is not None else None,
            headers=headers,
        )

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        producer = self.producer
        futures = [
            await producer.send(m.topic, value=m.value, key=m.key.encode(), headers=list(m.headers)) for m in messages
        ]
        # Only when every send is acknowledged by all in-sync replicas may the relay mark the rows.
        await asyncio.gather(*futures)

    async def check_ready(self) -> None:
        ok = await asyncio.wait_for(self.producer.client.force_metadata_update(), timeout=5)
        if not ok:
            raise RuntimeError("Kafka metadata update failed")
        for task in self._tasks:
            if task.done():
                raise RuntimeError(f"Kafka consumer task {task.get_name()} stopped")

    async def positioned(self) -> bool:
        """Whether every consumer has joined its group, holds partitions and knows where it reads from in each.

        A consumer group new to the broker with ``auto_offset_reset="latest"`` starts at the end of the topics only
        once this is true: a test on a shared broker publishes after it, and skips what other tests left there."""
        for consumer in self._consumers:
            assigned = consumer.assignment()
            if not assigned:
                return False
            for partition in assigned:
                await consumer.position(partition)
        return bool(self._consumers)

    async def consumer_lag(self) -> list[PartitionLag]:
        """Per partition of every topic this service's consumer group reads: the group's committed offset against
        the partition's end, asked of the broker through the running consumer (one OffsetFetch per partition, one
        ListOffsets per leader). Covers the whole group, not only this replica's partitions: committed offsets are
        the group's, whoever committed them."""
        from aiokafka import TopicPartition

        found: list[PartitionLag] = []
        for consumer, dispatcher in self._consumed:
            partitions = [
                TopicPartition(topic, p)
                for topic in dispatcher.topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                continue
            ends = await consumer.end_offsets(partitions)
            committed = await asyncio.gather(*(consumer.committed(tp) for tp in partitions))
            found.extend(
                PartitionLag(tp.topic, tp.partition, c, int(ends[tp]))
                for tp, c in zip(partitions, committed, strict=True)
            )
        return found

    async def stop(self) -> None:
        # Stop between deliveries rather than cancel one half-way (its transaction would stay open until the
        # connection is collected); a fetch waits at most 500 ms, so the loops end quickly.
        self._stopping.set()
        for task in self._tasks:
            await finish_or_cancel(task, grace_s=self._stop_grace_s, what=task.get_name())
        self._tasks.clear()
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        self._consumers.clear()
        self._consumed.clear()
        for d in self._dispatchers:
            if self._publish_dead_letter in d.dead_letter_sinks:
                d.dead_letter_sinks.remove(self._publish_dead_letter)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
