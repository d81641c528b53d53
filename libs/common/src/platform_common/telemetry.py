"""OpenTelemetry traces and metrics, off unless enabled; exporters configured by the standard OTEL_* variables.

Providers are built per service and passed explicitly (never installed globally), so the embedded runner can
host five services in one process, each with its own ``service.name``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from platform_common.settings import TelemetrySettings


@dataclass
class Telemetry:
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    enabled: bool
    _shutdown: list[Any] = field(default_factory=list)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def shutdown(self) -> None:
        for provider in self._shutdown:
            provider.shutdown()


def disabled_telemetry() -> Telemetry:
    return Telemetry(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), enabled=False)


def setup_telemetry(
    service_name: str,
    settings: TelemetrySettings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Build the service's providers. ``span_exporter`` and ``metric_reader`` (tests) replace the OTLP exporters."""
    if not settings.enabled and span_exporter is None:
        return disabled_telemetry()
    # OTEL_SERVICE_NAME, when set, names the whole deployment unit; otherwise each service names itself.
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name})
    tracer_provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        readers = [metric_reader] if metric_reader is not None else []
        test_meters = MeterProvider(resource=resource, metric_readers=readers)
        return Telemetry(tracer_provider, test_meters, enabled=True, _shutdown=[tracer_provider, test_meters])

    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    sdk_meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
    )
    return Telemetry(tracer_provider, sdk_meter_provider, enabled=True, _shutdown=[tracer_provider, sdk_meter_provider])
