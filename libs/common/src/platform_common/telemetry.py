"""OpenTelemetry traces and metrics: OTLP export off unless enabled (exporters configured by the standard OTEL_*
variables); metrics for Prometheus on by default (``GET /metrics``, platform_common.metrics).

Providers are built per service and passed explicitly (never installed globally), so the embedded runner can
host five services in one process, each with its own ``service.name``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from prometheus_client import CollectorRegistry

from platform_common.settings import TelemetrySettings


@dataclass
class Telemetry:
    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    enabled: bool  # traces are recorded (OTLP export, or a test's exporter)
    # The service's own Prometheus registry (``GET /metrics``): never the process-wide default, so the embedded
    # runner's five services each expose only their own series.
    metrics_registry: CollectorRegistry | None = None
    _shutdown: list[Any] = field(default_factory=list)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    @property
    def instrumented(self) -> bool:
        """Whether requests and queries are instrumented: for traces, or for the RED metrics on /metrics."""
        return self.enabled or self.metrics_registry is not None

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
    """Build the service's providers. ``span_exporter`` and ``metric_reader`` (tests) replace the OTLP exporters.

    Metrics for Prometheus (``settings.metrics``, on by default) are independent of OTLP export (``settings.enabled``):
    a pull endpoint costs nothing until scraped and needs no collector.
    """
    # OTEL_SERVICE_NAME, when set, names the whole deployment unit; otherwise each service names itself.
    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name})
    export_otlp = settings.enabled and span_exporter is None
    shutdown: list[Any] = []

    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    if span_exporter is not None or export_otlp:
        sdk_tracer_provider = TracerProvider(resource=resource)
        if span_exporter is not None:
            sdk_tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            sdk_tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        tracer_provider = sdk_tracer_provider
        shutdown.append(sdk_tracer_provider)

    readers: list[MetricReader] = []
    registry = CollectorRegistry(auto_describe=False) if settings.metrics else None
    if registry is not None:
        readers.append(PrometheusMetricReader(registry=registry))
    if metric_reader is not None:
        readers.append(metric_reader)
    if export_otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    if readers:
        sdk_meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        meter_provider = sdk_meter_provider
        shutdown.append(sdk_meter_provider)
    return Telemetry(
        tracer_provider,
        meter_provider,
        enabled=span_exporter is not None or export_otlp,
        metrics_registry=registry,
        _shutdown=shutdown,
    )
