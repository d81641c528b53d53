"""``/ops/messaging`` and ``/ops/dead-letters``: every service's messaging, for the platform operators' dashboard.

``create_service_app`` installs this router in every service, behind the ``ops`` permission (the definition's
``operator`` dependency: auth-svc, the issuer, checks it with its own verification). Nothing here returns an
event's payload: it may carry client data, so a dead letter shows its size only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from platform_common.messaging.dispatch import NoSubscription, Outcome, UnknownDeadLetter
from platform_common.messaging.monitoring import MessagingMonitor
from platform_common.messaging.transport import KafkaTransport
from platform_common.problems import Problem
from platform_common.runtime import ServiceRuntime

log = logging.getLogger(__name__)

# The broker may be slow or away; the dashboard still gets the database's figures.
KAFKA_LAG_TIMEOUT_S = 5.0


class OutboxOut(BaseModel):
    pending: int = Field(description="Events written and not yet published.")
    oldest_pending_age_s: float | None = Field(description="Age of the oldest unpublished event; null when none.")
    published_last_hour: int | None = Field(
        description="Events published in the last hour; null when published rows are kept less than an hour "
        "(MESSAGING__OUTBOX_RETENTION_S), so that the count would be too low."
    )


class ConsumerOut(BaseModel):
    name: str = Field(description="The subscription's name: its inbox identity.")
    topic: str | None = Field(description="The topic it handles; null for an inbox identity no longer subscribed.")
    processed: int = Field(description="Events it has processed (inbox rows).")
    last_processed_at: datetime | None
    lag: int | None = Field(
        description="Kafka: messages of its topic the service's consumer group has not committed yet; "
        "null with the in-process bus (see lag.oldest_pending_age_s) or while unknown."
    )


class PartitionLagOut(BaseModel):
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None


class LagOut(BaseModel):
    transport: Literal["inprocess", "kafka"]
    messages: int | None = Field(
        description="Kafka: the consumer group's total lag over its partitions; null with the in-process bus."
    )
    oldest_pending_age_s: float | None = Field(
        description="In-process: consumers of this service's events get them inside its outbox relay, so they "
        "are behind by exactly this outbox's oldest unpublished event. Null with Kafka or when none is pending."
    )
    partitions: list[PartitionLagOut] = Field(default_factory=list)
    unavailable: str | None = Field(default=None, description="Why the Kafka offsets could not be read now.")


class DeadLettersOut(BaseModel):
    pending: int = Field(description="Dead letters not replayed yet.")


class MessagingOut(BaseModel):
    service: str
    outbox: OutboxOut
    consumers: list[ConsumerOut]
    lag: LagOut
    dead_letters: DeadLettersOut


class DeadLetterOut(BaseModel):
    id: int
    consumer: str = Field(description="The subscription that failed on it.")
    topic: str
    event_id: uuid.UUID | None = Field(description="Null for a message that was not a readable event.")
    key: str | None
    reason: str = Field(description="Why it failed; values quoted from the event are redacted.")
    attempts: int
    source: str | None = Field(description="Where it came from (topic/partition@offset, or a replay).")
    created_at: datetime
    replayed_at: datetime | None
    payload_bytes: int = Field(description="The stored event's size; the body itself is never returned.")


class ReplayOut(BaseModel):
    id: int
    outcome: Outcome = Field(description="applied, duplicate (already processed) or dead_lettered (failed again).")
    dead_letter_id: int | None = Field(description="The new pending letter when it failed again.")


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    if not runtime.started:
        raise Problem(
            503, "Service Unavailable", "The service is starting.", code="not-ready", headers={"Retry-After": "1"}
        )
    return runtime


Runtime = Annotated[ServiceRuntime, Depends(_runtime)]


def _monitor(runtime: ServiceRuntime) -> MessagingMonitor:
    return MessagingMonitor(
        runtime.db, runtime.definition.tables, outbox_retention_s=runtime.settings.messaging.outbox_retention_s
    )


async def _kafka_lag(transport: KafkaTransport) -> LagOut:
    try:
        partitions = await asyncio.wait_for(transport.consumer_lag(), timeout=KAFKA_LAG_TIMEOUT_S)
    except Exception as exc:
        log.warning("consumer lag unavailable: %s", type(exc).__name__)
        return LagOut(
            transport="kafka", messages=None, oldest_pending_age_s=None, unavailable=f"broker: {type(exc).__name__}"
        )
    known = [p.lag for p in partitions if p.lag is not None]
    return LagOut(
        transport="kafka",
        messages=sum(known) if known else None,
        oldest_pending_age_s=None,
        partitions=[
            PartitionLagOut(topic=p.topic, partition=p.partition, committed=p.committed, end=p.end, lag=p.lag)
            for p in partitions
        ],
    )


def ops_router(operator: Callable[..., Any]) -> APIRouter:
    """The router, each route behind ``operator`` (a dependency carrying an ``ops`` permission rule)."""
    router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[Depends(operator)])

    @router.get(
        "/messaging", summary="Outbox depth, consumers' progress and lag, dead letters", response_model=MessagingOut
    )
    async def messaging(runtime: Runtime) -> MessagingOut:
        monitor = _monitor(runtime)
        outbox = await monitor.outbox()
        progress = {c.name: c for c in await monitor.consumers()}
        if isinstance(runtime.transport, KafkaTransport):
            lag = await _kafka_lag(runtime.transport)
        else:
            lag = LagOut(transport="inprocess", messages=None, oldest_pending_age_s=outbox.oldest_pending_age_s)
        by_topic: dict[str, int] = {}
        for p in lag.partitions:
            if p.lag is not None:
                by_topic[p.topic] = by_topic.get(p.topic, 0) + p.lag
        dispatcher = runtime.dispatcher
        consumers = []
        for topic in dispatcher.topics:
            for sub in dispatcher.subscriptions(topic):
                seen = progress.pop(sub.name, None)
                consumers.append(
                    ConsumerOut(
                        name=sub.name,
                        topic=topic,
                        processed=seen.processed if seen else 0,
                        last_processed_at=seen.last_processed_at if seen else None,
                        lag=by_topic.get(topic),
                    )
                )
        consumers.extend(
            ConsumerOut(name=c.name, topic=None, processed=c.processed, last_processed_at=c.last_processed_at, lag=None)
            for c in progress.values()
        )
        return MessagingOut(
            service=runtime.definition.name,
            outbox=OutboxOut(
                pending=outbox.pending,
                oldest_pending_age_s=outbox.oldest_pending_age_s,
                published_last_hour=outbox.published_last_hour,
            ),
            consumers=consumers,
            lag=lag,
            dead_letters=DeadLettersOut(pending=await monitor.pending_dead_letters()),
        )

    @router.get("/dead-letters", summary="Dead letters, newest first", response_model=list[DeadLetterOut])
    async def dead_letters(
        runtime: Runtime,
        before: Annotated[int | None, Query(ge=1, description="The last id of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[DeadLetterOut]:
        found = await _monitor(runtime).dead_letters(limit=limit, before=before)
        return [DeadLetterOut(**vars(letter)) for letter in found]

    @router.post(
        "/dead-letters/{dead_letter_id}/replay",
        summary="Run one dead letter through its handler again, once its cause is fixed",
        response_model=ReplayOut,
    )
    async def replay(runtime: Runtime, dead_letter_id: Annotated[int, Path(ge=1)]) -> ReplayOut:
        monitor = _monitor(runtime)
        try:
            outcome = await runtime.dispatcher.replay_dead_letter(dead_letter_id)
        except UnknownDeadLetter:
            raise Problem(
                404,
                "No such dead letter",
                "No pending dead letter has this id (it may be replayed already).",
                code="no-dead-letter",
            ) from None
        except NoSubscription:
            raise Problem(
                409,
                "No handler",
                "This service no longer has the subscription the letter belongs to.",
                code="no-subscription",
            ) from None
        again = None
        if outcome is Outcome.DEAD_LETTERED:
            identity = await monitor.letter_identity(dead_letter_id)
            if identity is not None and identity[1] is not None:
                again = await monitor.pending_letter_of(identity[0], identity[1])
        return ReplayOut(id=dead_letter_id, outcome=outcome, dead_letter_id=again)

    return router
