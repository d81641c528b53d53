"""The operators' overview over the real app against the simulator (SQLite and PostgreSQL): operators only, and
every figure follows the state the capabilities really hold: a sync run that KSeF answers 429 and then one that
completes, an offline invoice issued in an announced maintenance and sent after it, the KSeF session it opened,
keyset pages across clients known to different capabilities."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from integration.operations.conftest import World
from integration.sales.world import Hub
from ksef_gateway.db import sales_invoice
from ksef_gateway.sales.deadlines import WARSAW
from ksef_gateway.sales.domain import SalesStatus
from ksef_gateway.sync import repository as sync_repository
from ksef_gateway.sync.domain import SubjectType
from platform_common.testing import wait_until


async def overview(world: World, nip: str | None = None) -> dict[str, Any]:
    r = await world.hub.api.get(f"/ops/clients/{nip or world.hub.nip}", headers=world.ops)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def series(world: World, **params: Any) -> dict[str, Any]:
    r = await world.hub.api.get("/ops/ksef-calls", params=params, headers=world.ops)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def sim_faults(hub: Hub, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=hub.sim.root_url, headers=hub.sim.operator_headers) as http:
        response = await (http.put("/_sim/faults", json=faults) if faults else http.delete("/_sim/faults"))
        assert response.status_code == 200, response.text


async def force_429s(hub: Hub, count: int) -> None:
    async with httpx.AsyncClient(base_url=hub.sim.root_url, headers=hub.sim.operator_headers) as http:
        response = await http.post("/_sim/faults/force-429", json={"count": count})
        assert response.status_code == 200, response.text


async def test_only_operators_read_the_overview(world: World) -> None:
    hub = world.hub
    everything = {"Authorization": f"Bearer {world.tokens.mint(perms=['ksef.read', 'ksef.send'], nips=['*'])}"}
    for path in ("/ops/clients", f"/ops/clients/{hub.nip}", "/ops/ksef-calls"):
        for headers in (hub.reader, everything):
            r = await hub.api.get(path, headers=headers)
            assert r.status_code == 403, (path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        assert (await hub.api.get(path)).status_code == 401
    r = await hub.api.get("/ops/clients/5265877635", headers=world.ops)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    for path, params in (
        ("/ops/clients", {"limit": 101}),
        ("/ops/clients", {"cursor": "12"}),
        ("/ops/ksef-calls", {"hours": 0}),
        ("/ops/ksef-calls", {"hours": 169}),
        ("/ops/ksef-calls", {"nip": "12"}),
    ):
        r = await hub.api.get(path, params=params, headers=world.ops)
        assert r.status_code == 422, (path, params, r.text)
    r = await hub.api.get("/ops/clients/123", headers=world.ops)
    assert r.status_code == 422 and r.json()["type"].endswith("invalid-nip")


async def test_sync_figures_follow_a_429_then_a_completed_run(world: World) -> None:
    hub, engine = world.hub, world.hub.gateway.sync_engine
    before = await overview(world)
    assert before["client_nip"] == hub.nip and before["held_by_this_replica"] is True
    assert before["sync"]["credential_active"] is True
    (subject,) = before["sync"]["subjects"]
    assert (subject["subject_type"], subject["outcome"], subject["last_run_at"]) == ("Subject2", "never", None)
    assert subject["lag_seconds"] is None and before["sync"]["exports_in_flight"] == []
    assert before["ksef"]["rate_limited_last_hour"] == 0
    assert before["availability"] == {"available": True, "open": []}

    # KSeF answers the next limited call 429: the run fails on it, and the overview counts it for this context.
    await force_429s(hub, 1)
    failed = await engine.run(hub.nip, SubjectType.SUBJECT2)
    assert failed.error is not None and hub.sim.sim.limiter.forced_429s == 0
    seen = await overview(world)
    (subject,) = seen["sync"]["subjects"]
    assert subject["outcome"] == "failed" and subject["consecutive_failures"] == 1
    assert subject["finished_at"] is not None and subject["finished_at"] >= subject["last_run_at"]
    assert seen["ksef"]["rate_limited_last_hour"] == 1
    assert seen["ksef"]["calls_last_hour"] > before["ksef"]["calls_last_hour"]
    own = await series(world, hours=3, nip=hub.nip)
    assert len(own["hours"]) == 3 and own["total_rate_limited"] == 1
    assert own["total_calls"] == seen["ksef"]["calls_last_hour"]  # every call of this context was in this hour
    platform = await series(world)
    assert len(platform["hours"]) == 24 and platform["client_nip"] is None
    assert platform["total_rate_limited"] == 1 and platform["total_calls"] >= own["total_calls"]
    starts = [datetime.fromisoformat(h["start"]) for h in platform["hours"]]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= datetime.now(UTC) < starts[-1] + timedelta(hours=1)

    done = await engine.run(hub.nip, SubjectType.SUBJECT2)
    assert done.error is None, done.error
    synced = await overview(world)
    (subject,) = synced["sync"]["subjects"]
    assert subject["outcome"] == "ok" and subject["consecutive_failures"] == 0 and subject["last_error"] is None
    assert subject["finished_at"] >= subject["last_run_at"] > seen["sync"]["subjects"][0]["last_run_at"]
    status = (await hub.api.get(f"/clients/{hub.nip}/sync", headers=hub.reader)).json()["subjects"][0]
    assert subject["hwm"] == status["hwm"] is not None  # the sync API's own figures
    assert status["lag_seconds"] >= subject["lag_seconds"] >= 0  # read just after the overview
    assert synced["sync"]["max_lag_seconds"] == subject["lag_seconds"]
    assert synced["sync"]["exports_in_flight"] == []  # the run downloaded what it exported
    assert synced["sessions"]["authenticated"] is True
    assert synced["ksef"]["calls_last_hour"] > seen["ksef"]["calls_last_hour"]
    spent = {g: w["used"] for g, w in synced["ksef"]["budget_this_hour"].items() if w["used"]}
    assert spent["invoiceExport"] >= 1 and spent["other"] >= 1  # the run's export; the authentication's polls
    for window in synced["ksef"]["budget_this_hour"].values():
        assert window["remaining"] == max(0, window["limit"] - window["used"])

    # An export the engine left in flight (a restart between starting it and downloading it) is listed.
    now = datetime.now(UTC)
    async with hub.gateway.runtime.db.sessionmaker() as session, session.begin():
        await sync_repository.update_state(
            session,
            hub.nip,
            SubjectType.SUBJECT2,
            now,
            export_reference="20261207-EX-0000000001-00",
            export_started_at=now,
        )
    (export,) = (await overview(world))["sync"]["exports_in_flight"]
    assert export["reference_number"] == "20261207-EX-0000000001-00" and export["subject_type"] == "Subject2"


async def test_an_offline_invoice_is_queued_with_its_deadline_until_ksef_is_back(world: World) -> None:
    hub = world.hub
    await hub.register_offline_certificate()
    await sim_faults(hub, outage=True, kind="MAINTENANCE")

    async def announced() -> dict[str, Any] | None:
        seen = await overview(world)
        return seen if not seen["availability"]["available"] else None

    down = await wait_until(announced, timeout=15, interval=0.05, what="the maintenance recorded")
    (outage,) = down["availability"]["open"]
    assert (outage["kind"], outage["source"]) == ("MAINTENANCE", "latarnia")
    assert down["sales"]["offline_queue"] == 0 and down["sales"]["offline_nearest_deadline"] is None

    issued = datetime.now(WARSAW).date()
    r = await hub.api.post(
        f"/clients/{hub.nip}/sales",
        params={"offline": "offline24"},
        content=hub.fa3("FV/OPS/1", issue_date=issued),
        headers=hub.sender | {"Content-Type": "application/xml"},
    )
    assert r.status_code == 202, r.text
    invoice = r.json()
    assert invoice["offline_deadline"] is not None
    queued = await overview(world)
    sales = queued["sales"]
    assert sales["offline_queue"] == 1 and sales["offline_awaiting_deadline"] == 0
    assert date.fromisoformat(sales["offline_nearest_deadline"]) == date.fromisoformat(invoice["offline_deadline"])
    assert sales["by_status"] == {"queued": 1} and sales["stuck_in_processing"] == 0
    page = (await hub.api.get("/ops/clients", headers=world.ops)).json()
    assert page["availability"] == queued["availability"]
    assert [i["sales"] for i in page["items"] if i["client_nip"] == hub.nip] == [sales]

    # The sender is paused while KSeF is down, so a row marked as submitted long ago stays so: it counts as stuck
    # (no KSeF answer for longer than the threshold), and no longer once it is queued again.
    long_ago = datetime.now(UTC) - hub.gateway.operations.stuck_after - timedelta(minutes=1)
    await _set(hub, invoice["id"], status=SalesStatus.SUBMITTED.value, updated_at=long_ago)
    stuck = (await overview(world))["sales"]
    assert stuck["stuck_in_processing"] == 1 and datetime.fromisoformat(stuck["stuck_since"]) == long_ago
    assert stuck["stuck_after_minutes"] == hub.gateway.operations.stuck_after.total_seconds() / 60
    await _set(hub, invoice["id"], status=SalesStatus.QUEUED.value, updated_at=datetime.now(UTC))
    assert (await overview(world))["sales"]["stuck_in_processing"] == 0

    await sim_faults(hub)  # KSeF is back; Latarnia publishes the end and the sender sends it
    assert (await hub.final(invoice["id"]))["status"] == "accepted"
    after = await overview(world)
    assert after["availability"]["available"] is True
    assert after["sales"]["offline_queue"] == 0 and after["sales"]["offline_nearest_deadline"] is None
    assert after["sales"]["by_status"] == {"accepted": 1}
    (session,) = after["sessions"]["online"]  # the online session the invoice went through, kept for reuse
    assert session["form_code"] == "FA (3)" and session["reference_number"]


async def _set(hub: Hub, invoice_id: str, **values: Any) -> None:
    async with hub.gateway.runtime.db.sessionmaker() as session, session.begin():
        await session.execute(update(sales_invoice).where(sales_invoice.c.id == uuid.UUID(invoice_id)).values(**values))


async def test_pages_walk_every_known_client_in_nip_order(world: World) -> None:
    hub = world.hub
    now = datetime.now(UTC)
    # Clients known only to the sync (state left from a removed credential): listed beside the vault's one.
    others = ["1111111111", "2222222222", "3333333333", "9999999999"]
    async with hub.gateway.runtime.db.sessionmaker() as session, session.begin():
        await sync_repository.ensure_states(session, [(nip, SubjectType.SUBJECT2) for nip in others], now)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await hub.api.get("/ops/clients", params=params, headers=world.ops)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 2 and page["replica_id"] == "operations"
        seen += [i["client_nip"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted({*others, hub.nip}) and pages == 3
    (lone,) = [
        i
        for i in (await hub.api.get("/ops/clients", headers=world.ops)).json()["items"]
        if i["client_nip"] == "9999999999"
    ]
    assert lone["sync"]["credential_active"] is False and lone["held_by_this_replica"] is False
    assert [s["outcome"] for s in lone["sync"]["subjects"]] == ["never"]
