"""The gateway's levels on ``GET /metrics`` (platform_common.metrics): sync lag, the offline queue with its nearest
legal deadline, invoices stuck in processing, KSeF's availability. Read from the same use cases as the operators'
overview, once per scrape; KSeF calls and 429s are counted where they happen (``ksef/client.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ksef_gateway.operations.service import Operations
from ksef_gateway.sales.deadlines import WARSAW
from platform_common.metrics import GaugeSpec, Reading, ScrapedGauges

SYNC_LAG = GaugeSpec(
    "ksef_hub.sync.lag",
    "How far a client's purchase sync is behind now (its oldest enabled subject's high-water mark)",
    "s",
)
OFFLINE_QUEUE = GaugeSpec(
    "ksef_hub.sales.offline_queue",
    "Sales invoices issued offline and not yet in KSeF, per client (clients with none are absent)",
)
OFFLINE_DEADLINE = GaugeSpec(
    "ksef_hub.sales.offline_deadline_days",
    "Calendar days left to the nearest legal deadline of a client's offline invoices (0: today)",
    "d",
)
STUCK = GaugeSpec("ksef_hub.sales.stuck", "Sales invoices sending or submitted without progress, per client")


def register_gauges(gauges: ScrapedGauges, operations: Operations) -> None:
    async def clients() -> Mapping[str, Iterable[Reading]]:
        levels = await operations.levels()
        today = operations.clock().astimezone(WARSAW).date()
        return {
            SYNC_LAG.name: [
                Reading(c.sync_lag.total_seconds(), {"client_nip": c.client_nip})
                for c in levels
                if c.sync_lag is not None
            ],
            OFFLINE_QUEUE.name: [
                Reading(c.offline_queued, {"client_nip": c.client_nip}) for c in levels if c.offline_queued
            ],
            OFFLINE_DEADLINE.name: [
                Reading((c.offline_nearest_deadline - today).days, {"client_nip": c.client_nip})
                for c in levels
                if c.offline_nearest_deadline is not None
            ],
            STUCK.name: [Reading(c.stuck, {"client_nip": c.client_nip}) for c in levels if c.stuck],
        }

    async def available() -> list[Reading]:
        return [Reading(1.0 if (await operations.ksef_state()).available else 0.0)]

    gauges.group(clients, SYNC_LAG, OFFLINE_QUEUE, OFFLINE_DEADLINE, STUCK)
    gauges.gauge("ksef_hub.ksef.available", available, description="1 while no KSeF outage is open, else 0")
