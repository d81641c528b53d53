"""``ScrapedGauges``: levels read at scrape time, each bounded, a failing one absent rather than stale."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest

from platform_common.metrics import Reading, ScrapedGauges
from platform_common.settings import TelemetrySettings
from platform_common.telemetry import setup_telemetry
from platform_common.testing.metrics import Scrape, parse

Gauges = tuple[ScrapedGauges, Callable[[], Scrape]]


@pytest.fixture
def meter_and_render() -> Gauges:
    telemetry = setup_telemetry("gauges-test", TelemetrySettings())
    assert telemetry.metrics_registry is not None
    registry = telemetry.metrics_registry
    gauges = ScrapedGauges(telemetry.meter_provider.get_meter("test"))

    def render() -> Scrape:
        return parse(generate_latest(registry).decode())

    return gauges, render


async def test_each_refresh_reads_the_level_anew(meter_and_render: Gauges) -> None:
    gauges, render = meter_and_render
    level = {"5260250274": 3.0}

    async def queue() -> list[Reading]:
        return [Reading(v, {"client_nip": k}) for k, v in level.items()]

    gauges.gauge("test.queue", queue, description="a queue")
    await gauges.refresh()
    assert render().value("test_queue", client_nip="5260250274") == 3
    level["5260250274"] = 0.0
    level["7777777702"] = 2.0
    await gauges.refresh()
    after = render()
    assert after.value("test_queue", client_nip="5260250274") == 0
    assert after.value("test_queue", client_nip="7777777702") == 2


async def test_a_failing_or_hanging_level_is_absent_and_counted(
    meter_and_render: Gauges,
) -> None:
    gauges, render = meter_and_render
    broken = False

    async def flaky() -> list[Reading]:
        if broken:
            raise ConnectionError("database away")
        return [Reading(5)]

    async def hanging() -> list[Reading]:
        await asyncio.Event().wait()
        return []

    async def healthy() -> list[Reading]:
        return [Reading(1)]

    gauges.gauge("test.flaky", flaky, description="")
    gauges.gauge("test.hanging", hanging, description="")
    gauges.gauge("test.healthy", healthy, description="")
    await gauges.refresh(timeout_s=0.05)
    first = render()
    assert first.value("test_flaky") == 5
    assert first.value("test_hanging") is None
    assert first.value("test_healthy") == 1

    broken = True
    await gauges.refresh(timeout_s=0.05)
    second = render()
    assert second.value("test_flaky") is None  # not the last good 5
    assert second.value("test_healthy") == 1
    assert second.value("ksef_hub_metrics_sample_failures_total", gauge="test.flaky") == 1
    assert second.value("ksef_hub_metrics_sample_failures_total", gauge="test.hanging") == 2


def test_a_gauge_name_is_registered_once(meter_and_render: Gauges) -> None:
    gauges, _ = meter_and_render

    async def level() -> list[Reading]:
        return []

    gauges.gauge("test.once", level, description="")
    with pytest.raises(ValueError, match="duplicate"):
        gauges.gauge("test.once", level, description="")
