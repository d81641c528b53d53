"""notify-svc's failing webhook deliveries on ``GET /metrics`` (platform_common.metrics), per client NIP as the
operators' dashboard shows them (``GET /ops/webhooks/clients``). The backlog per subscription, the attempts and their
latency are the sender's own instruments (``webhook.backlog``, ``webhook.attempts``, ``webhook.attempt.duration``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from notify_svc.webhooks.repository import WebhookRepository
from platform_common.db import Database
from platform_common.metrics import GaugeSpec, Reading, ScrapedGauges

# Clients with a backlog or failures (the others are absent); beyond this many a scrape shows the worst ones.
MAX_CLIENTS = 1000

RETRYING = GaugeSpec("ksef_hub.webhooks.retrying", "Pending webhook deliveries that failed at least once")
GIVEN_UP = GaugeSpec(
    "ksef_hub.webhooks.given_up", "Webhook deliveries given up on after their retry window (replayable)"
)


def register_gauges(gauges: ScrapedGauges, db: Database) -> None:
    async def health() -> Mapping[str, Iterable[Reading]]:
        async with db.sessionmaker() as session:
            rows = await WebhookRepository(session).health_by_client(MAX_CLIENTS)
        return {
            RETRYING.name: [Reading(h.retrying, {"client_nip": h.client_nip}) for h in rows if h.retrying],
            GIVEN_UP.name: [Reading(h.failed, {"client_nip": h.client_nip}) for h in rows if h.failed],
        }

    gauges.group(health, RETRYING, GIVEN_UP)
