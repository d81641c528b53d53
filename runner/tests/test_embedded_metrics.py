"""``/metrics`` of every service on the embedded platform with its demo data, and the dashboards and alert rules in
``deploy/observability`` against it: every metric they query is one the running services expose, or a gauge they
declare that is absent only while its level is empty (the demo's offline invoice reaches KSeF at once; no invoice is
stuck and no webhook fails). Those levels are shown with values by the services' own tests
(``test_operations_metrics.py``, ``test_delivery.py``)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import yaml
from fastapi import FastAPI
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from starlette.routing import Mount

from auth_svc.demo import CLIENT_ACTIVE, DEMO_PASSWORD, OFFICE_ADMIN
from ksef_hub.embedded import METRICS_TOKEN_FILE, SERVICES
from platform_common.metrics import GaugeSpec
from platform_common.runtime import CONSUMER_LAG, ServiceRuntime
from platform_common.testing import wait_until
from platform_common.testing.metrics import Scrape, parse, scrape

Hub = Callable[[], AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
# Grafana's template variables, replaced by what they may stand for before the PromQL is parsed.
GRAFANA_VARIABLES = {"$service": ".*", "$__all": ".*"}
NIP = CLIENT_ACTIVE[1]


def _runtimes(app: FastAPI) -> dict[str, ServiceRuntime]:
    mounted = {r.path: r.app for r in app.routes if isinstance(r, Mount) and isinstance(r.app, FastAPI)}
    return {s.prefix: mounted[s.prefix].state.runtime for s in SERVICES}


def _exposed_name(spec: GaugeSpec) -> str:
    """The name the Prometheus exporter gives this gauge once it has a value (its unit may add a suffix)."""
    registry = CollectorRegistry(auto_describe=False)
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])

    def one(_options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(1)

    provider.get_meter("naming").create_observable_gauge(spec.name, callbacks=[one], unit=spec.unit)
    (name,) = {s.name for s in parse(generate_latest(registry).decode()).samples} - {"target_info"}
    provider.shutdown()
    return name


def _selected(node: Any, found: set[str]) -> set[str]:
    """The metric names of every vector selector in a parsed PromQL expression."""
    if isinstance(node, list | tuple):
        for item in node:
            _selected(item, found)
    elif isinstance(node, promql_parser.VectorSelector):
        assert node.name, f"a selector without a metric name: {node}"  # {__name__=~...} would escape the check
        found.add(node.name)
    elif node is not None:
        for child in ("lhs", "rhs", "expr", "param", "args", "vector_selector"):
            _selected(getattr(node, child, None), found)
    return found


def _queried() -> dict[str, set[str]]:
    """Metric names per expression of the dashboards and the alert rules, each parsed as PromQL (a syntax error
    fails here, as it would fail Prometheus' rule loading or blank the panel)."""
    expressions: list[str] = []
    for group in yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"]:
        expressions += [rule["expr"] for rule in group["rules"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                expressions.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for dashboard in (OBSERVABILITY / "grafana").glob("*.json"):
        walk(json.loads(dashboard.read_text()))
    queried: dict[str, set[str]] = {}
    for expression in expressions:
        concrete = expression
        for variable, value in GRAFANA_VARIABLES.items():
            concrete = concrete.replace(variable, value)
        queried[expression] = _selected(promql_parser.parse(concrete), set())
    return queried


async def test_dashboards_and_alerts_query_only_metrics_the_services_expose(hub: Hub, tmp_path: Path) -> None:
    queried = _queried()
    assert len(queried) >= 30
    assert all(queried.values()), "an expression that selects no metric"
    # `up` is Prometheus' own, one per scraped target.
    queried = {e: names - {"up"} for e, names in queried.items()}
    async with hub() as (app, client):
        token_file = tmp_path / "data" / METRICS_TOKEN_FILE
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        await app.state.demo_sales
        await app.state.demo_month

        async def gateway_levels() -> Scrape | None:
            seen = await scrape(client, token, "/gateway/metrics")
            return seen if seen.value("ksef_hub_sync_lag_seconds", client_nip=NIP) is not None else None

        await wait_until(gateway_levels, timeout=90, interval=0.2, what="the demo client's sync lag")
        # Requests through the services' APIs (the demo itself works through the use cases, not over HTTP).
        login = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        for path in (f"/gateway/clients/{NIP}/invoices", f"/buffer/clients/{NIP}/whoami"):
            assert (await client.get(path, headers=bearer)).status_code == 200, path
        exposed: set[str] = set()
        # The embedded runner has no broker: consumer lag is shown on Kafka (test_ops_messaging.py's Kafka test).
        declared: set[str] = {_exposed_name(CONSUMER_LAG)}
        for prefix, runtime in _runtimes(app).items():
            refused = await client.get(f"{prefix}/metrics", headers={"Authorization": "Bearer not-the-token"})
            assert refused.status_code == 401, prefix
            exposed |= (await scrape(client, token, f"{prefix}/metrics")).names
            declared |= {_exposed_name(spec) for spec in runtime.gauges.specs}

    missing = {name: e for e, names in queried.items() for name in names if name not in exposed | declared}
    assert not missing, f"queried but exposed by no service: {missing}"
    # The demo's traffic makes the core series real, not only declared.
    assert {
        "http_server_duration_milliseconds_bucket",
        "ksef_hub_ksef_calls_total",
        "ksef_hub_sync_lag_seconds",
        "ksef_hub_outbox_pending",
        "ksef_hub_events_consumed_total",
        "webhook_attempts_total",
    } <= exposed
