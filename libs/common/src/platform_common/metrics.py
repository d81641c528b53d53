"""``GET /metrics``: a service's OpenTelemetry metrics in the Prometheus text format, and gauges read at scrape time.

Counters and histograms are recorded where things happen (requests by the FastAPI instrumentation, events consumed,
outbox publishes, KSeF calls). Levels that live in a table or in the broker (outbox depth, consumer lag, sync lag, the
offline queue, the webhook backlog) are ``ScrapedGauges``: OpenTelemetry calls an observable gauge's callback
synchronously while the exposition is rendered, where no query can be awaited, so the scrape handler first awaits
every sampler (concurrently, each bounded in time) and the callbacks return what they read. A level is thus as fresh
as the scrape, and nothing polls the database between scrapes.

The series carry client NIPs (KSeF calls per context, sync lag per client), so the endpoint is for the platform's
scraper only: it answers a bearer token equal to ``<PREFIX>_TELEMETRY__METRICS_TOKEN`` and 404 when none is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request, Response
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from platform_common.auth import public
from platform_common.problems import Problem

log = logging.getLogger(__name__)

# A scrape waits at most this long for a level; Prometheus' own default scrape timeout is 10 s.
SAMPLE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Reading:
    value: float
    attributes: Mapping[str, str] = field(default_factory=dict)


Sampler = Callable[[], Awaitable[Iterable[Reading]]]
# One query behind several gauges (a table's counts by kind): readings by gauge name.
GroupSampler = Callable[[], Awaitable[Mapping[str, Iterable[Reading]]]]


@dataclass(frozen=True)
class GaugeSpec:
    name: str
    description: str
    unit: str = ""


@dataclass
class _Group:
    names: tuple[str, ...]
    sample: GroupSampler
    readings: dict[str, list[Reading]] = field(default_factory=dict)


class ScrapedGauges:
    """A service's gauges whose values need I/O, refreshed by ``refresh`` (the scrape) before they are observed."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._meter = meter
        self._groups: list[_Group] = []
        self._specs: list[GaugeSpec] = []
        self._failures = meter.create_counter(
            "ksef_hub.metrics.sample_failures", description="Scrapes at which a gauge could not be read, by gauge"
        )
        self._lock = asyncio.Lock()

    def gauge(self, name: str, sample: Sampler, *, description: str, unit: str = "") -> None:
        async def one() -> Mapping[str, Iterable[Reading]]:
            return {name: await sample()}

        self.group(one, GaugeSpec(name, description, unit))

    def group(self, sample: GroupSampler, *specs: GaugeSpec) -> None:
        """Gauges read together by one sampler, so that one scrape shows them from the same query."""
        for spec in specs:
            if spec.name in self.names:
                raise ValueError(f"duplicate gauge {spec.name!r}")
        group = _Group(tuple(spec.name for spec in specs), sample)
        self._groups.append(group)
        self._specs.extend(specs)
        for spec in specs:
            # A zero from the start, so that ``increase()`` sees the first failure (a series born at 1 shows none).
            self._failures.add(0, {"gauge": spec.name})

            def observe(_options: CallbackOptions, name: str = spec.name) -> Iterable[Observation]:
                return [Observation(r.value, dict(r.attributes)) for r in group.readings.get(name, ())]

            self._meter.create_observable_gauge(
                spec.name, callbacks=[observe], unit=spec.unit, description=spec.description
            )

    @property
    def names(self) -> Sequence[str]:
        return [name for g in self._groups for name in g.names]

    @property
    def specs(self) -> Sequence[GaugeSpec]:
        return list(self._specs)

    async def refresh(self, timeout_s: float = SAMPLE_TIMEOUT_S) -> None:
        # One refresh at a time: two scrapes at once (two Prometheus replicas) would otherwise double the queries.
        async with self._lock:
            await asyncio.gather(*(self._refresh(g, timeout_s) for g in self._groups))

    async def _refresh(self, group: _Group, timeout_s: float) -> None:
        try:
            found = await asyncio.wait_for(group.sample(), timeout=timeout_s)
            group.readings = {name: list(found.get(name, ())) for name in group.names}
        except Exception as exc:
            # Absent series, not stale or made-up values: alerts on ``absent()`` and the failure counter see it.
            log.warning("gauges %s could not be read: %s", ", ".join(group.names), type(exc).__name__)
            group.readings = {}
            for name in group.names:
                self._failures.add(1, {"gauge": name})


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics (for the platform's scraper, with its bearer token)",
        response_class=Response,
        include_in_schema=False,
        dependencies=[Depends(public("Prometheus scrape; admitted by the scrape token checked in the handler"))],
    )
    async def scrape(request: Request) -> Response:
        telemetry = request.app.state.runtime.telemetry
        token = request.app.state.settings.telemetry.metrics_token
        if telemetry.metrics_registry is None or token is None:
            raise Problem(404, "Not Found", "Metrics are not enabled on this service.", code="metrics-disabled")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        # Compared as digests: equal length, so the comparison's time says nothing about the token.
        if scheme.lower() != "bearer" or not hmac.compare_digest(_digest(presented), _digest(token.get_secret_value())):
            raise Problem(
                401,
                "Unauthorized",
                "A bearer scrape token is required.",
                code="metrics-token-required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        await request.app.state.runtime.gauges.refresh()
        return Response(generate_latest(telemetry.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return router
