"""One trace spans HTTP request -> outbox -> transport -> consumer, on Kafka and in-process alike."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, Request
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncSession

from platform_common.app import create_service_app
from platform_common.db import make_metadata
from platform_common.messaging.dispatch import Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.outbox import current_trace_context
from platform_common.messaging.tables import add_messaging_tables
from platform_common.messaging.transport import InProcessBus
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings, ServiceSettings
from platform_common.telemetry import setup_telemetry
from platform_common.testing import wait_until
from platform_common.testing.contract import create_schema


@pytest.mark.parametrize("kind", ["inprocess", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.postgres])])
async def test_consumer_span_continues_the_trace_of_the_http_request(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:10]
    topic = f"traced.{suffix}"
    exporter = InMemorySpanExporter()
    metrics = InMemoryMetricReader()
    if kind == "kafka":
        url_a = url_b = request.getfixturevalue("pg_url")
        kafka = KafkaSettings(bootstrap_servers=request.getfixturevalue("kafka_bootstrap"), topic_partitions=1)
    else:
        url_a, url_b = (f"sqlite+aiosqlite:///{tmp_path}/{n}.db" for n in "ab")
        kafka = KafkaSettings()
    messaging = MessagingSettings(transport=kind, relay_poll_interval_s=0.05)
    bus = InProcessBus()
    handled: list[Envelope] = []

    router = APIRouter()

    @router.post("/emit", status_code=202)
    async def emit(req: Request) -> dict[str, str]:
        runtime: ServiceRuntime = req.app.state.runtime
        async with runtime.db.sessionmaker() as session, session.begin():
            env = Envelope(
                type="test.traced",
                version=1,
                producer="a",
                client_nip="5260250274",
                payload={},
                trace=current_trace_context(),
            )
            await runtime.outbox.add(session, env, topic=topic)
        return {"event_id": str(env.id)}

    async def consume(session: AsyncSession, event: Envelope) -> None:
        handled.append(event)

    def definition(name: str, subs: list[Subscription], routers: list[APIRouter]) -> ServiceDefinition:
        meta = make_metadata(f"{name}_{suffix}")
        return ServiceDefinition(
            name=f"{name}-{suffix}",
            schema=meta.schema or "",
            metadata=meta,
            tables=add_messaging_tables(meta),
            migrations="",
            routers=routers,
            subscriptions=lambda _rt: subs,
        )

    producer_app = create_service_app(
        definition("a", [], [router]),
        ServiceSettings(db=DatabaseSettings(url=url_a), kafka=kafka, messaging=messaging),
        bus=bus,
        telemetry=setup_telemetry("a", ServiceSettings().telemetry, span_exporter=exporter),
    )
    consumer_app = create_service_app(
        definition("b", [Subscription("b.traced", topic, consume)], []),
        ServiceSettings(db=DatabaseSettings(url=url_b), kafka=kafka, messaging=messaging),
        bus=bus,
        telemetry=setup_telemetry("b", ServiceSettings().telemetry, span_exporter=exporter, metric_reader=metrics),
    )
    for app in (producer_app, consumer_app):
        await create_schema(app.state.runtime)
    if kind == "kafka":
        producer_app.state.runtime.transport.declare_topics(topic)

    async with LifespanManager(consumer_app), LifespanManager(producer_app) as manager:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://a")
        async with client:
            response = await client.post("/emit")
        assert response.status_code == 202
        await wait_until(lambda: _truthy(handled), what="the event at the consumer")
        await wait_until(lambda: _truthy(_named(exporter, f"{topic} process")), what="the consumer span")

    spans = exporter.get_finished_spans()
    (http_span,) = [s for s in spans if s.name == "POST /emit"]
    (consumer_span,) = _named(exporter, f"{topic} process")
    trace_id = http_span.context.trace_id
    assert consumer_span.context.trace_id == trace_id
    assert handled[0].trace["traceparent"].split("-")[1] == format(trace_id, "032x")
    assert consumer_span.resource.attributes["service.name"] == "b"
    # The consumer's parent is a span of the request's own trace (the HTTP handler's span).
    request_span_ids = {s.context.span_id for s in spans if s.context.trace_id == trace_id}
    assert consumer_span.parent is not None and consumer_span.parent.span_id in request_span_ids
    # The same handling is counted in the consumer's metrics.
    consumed = _counter(metrics, "ksef_hub.events.consumed")
    assert consumed == {(("outcome", "applied"), ("subscription", "b.traced"), ("topic", topic)): 1}


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def _truthy(value: object) -> bool:
    return bool(value)


def _counter(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, object], ...], float]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        tuple(sorted((point.attributes or {}).items())): point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
        if isinstance(point, NumberDataPoint)
    }
