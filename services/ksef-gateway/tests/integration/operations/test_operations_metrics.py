"""The gateway's ``GET /metrics`` against the simulator: KSeF calls and 429s per context, the sync lag, the offline
queue with its deadline and KSeF's availability follow what really happened (the same world as the overview's)."""

from __future__ import annotations

from datetime import date, datetime

from integration.operations.conftest import SCRAPE_TOKEN, World
from integration.operations.test_operations_overview import force_429s, sim_faults
from ksef_gateway.sales.deadlines import WARSAW
from ksef_gateway.sync.domain import SubjectType
from platform_common.testing import wait_until
from platform_common.testing.metrics import Scrape, scrape


async def metrics(world: World) -> Scrape:
    return await scrape(world.hub.api, SCRAPE_TOKEN)


async def test_calls_429s_and_the_sync_lag_per_context(world: World) -> None:
    hub, engine = world.hub, world.hub.gateway.sync_engine
    before = await metrics(world)
    assert before.value("ksef_hub_ksef_calls_total", context_nip=hub.nip, outcome="rate_limited") is None
    assert before.value("ksef_hub_sync_lag_seconds", client_nip=hub.nip) is None  # never synced: no high-water mark
    assert before.value("ksef_hub_ksef_available") == 1

    await force_429s(hub, 1)
    assert (await engine.run(hub.nip, SubjectType.SUBJECT2)).error is not None
    limited = await metrics(world)
    assert limited.value("ksef_hub_ksef_calls_total", context_nip=hub.nip, outcome="rate_limited") == 1

    assert (await engine.run(hub.nip, SubjectType.SUBJECT2)).error is None
    synced = await metrics(world)
    ok = synced.value("ksef_hub_ksef_calls_total", context_nip=hub.nip, outcome="ok")
    assert ok is not None and ok > (limited.value("ksef_hub_ksef_calls_total", context_nip=hub.nip, outcome="ok") or 0)
    operations = {s.labels["operation"] for s in synced.find("ksef_hub_ksef_calls_total", context_nip=hub.nip)}
    assert {"auth.ksef_token", "invoices.export", "invoices.export_status"} <= operations
    overview = (await hub.api.get(f"/ops/clients/{hub.nip}", headers=world.ops)).json()
    lag = synced.value("ksef_hub_sync_lag_seconds", client_nip=hub.nip)
    assert lag is not None and 0 <= lag <= overview["sync"]["max_lag_seconds"]  # scraped just before the overview


async def test_the_offline_queue_its_deadline_and_the_outage(world: World) -> None:
    hub = world.hub
    await hub.register_offline_certificate()
    await sim_faults(hub, outage=True, kind="MAINTENANCE")

    async def down() -> Scrape | None:
        seen = await metrics(world)
        return seen if seen.value("ksef_hub_ksef_available") == 0 else None

    await wait_until(down, timeout=15, interval=0.05, what="the maintenance recorded")
    r = await hub.api.post(
        f"/clients/{hub.nip}/sales",
        params={"offline": "offline24"},
        content=hub.fa3("FV/METRICS/1", issue_date=datetime.now(WARSAW).date()),
        headers=hub.sender | {"Content-Type": "application/xml"},
    )
    assert r.status_code == 202, r.text
    deadline = date.fromisoformat(r.json()["offline_deadline"])
    queued = await metrics(world)
    assert queued.value("ksef_hub_sales_offline_queue", client_nip=hub.nip) == 1
    days_left = (deadline - datetime.now(WARSAW).date()).days
    assert queued.value("ksef_hub_sales_offline_deadline_days", client_nip=hub.nip) == days_left >= 1

    await sim_faults(hub)
    assert (await hub.final(r.json()["id"]))["status"] == "accepted"
    after = await metrics(world)
    assert after.value("ksef_hub_sales_offline_queue", client_nip=hub.nip) is None
    assert after.value("ksef_hub_sales_offline_deadline_days", client_nip=hub.nip) is None
    assert after.value("ksef_hub_ksef_available") == 1
