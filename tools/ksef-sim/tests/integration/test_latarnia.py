"""Latarnia (GET /status, GET /messages) reflects the operator's outages, and its history survives restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from ksef_sim.main import create_app
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim
from ksef_sim.testing import operator_headers

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MESSAGE_FIELDS = {"id", "eventId", "category", "type", "title", "text", "start", "end", "version", "published"}


@pytest.fixture
async def root(sim_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim_app, client=("127.0.0.1", 50000))
    headers = operator_headers(sim_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test", headers=headers) as c:
        yield c


@pytest.fixture(autouse=True)
def frozen(sim: Sim) -> None:
    sim.clock.set(NOW, frozen=True)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def messages(root: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await root.get("/messages")
    assert response.status_code == 200
    body: list[dict[str, Any]] = response.json()
    assert all(set(m) == MESSAGE_FIELDS for m in body)
    return body


async def test_available_with_no_messages_by_default(root: httpx.AsyncClient) -> None:
    assert (await root.get("/status")).json() == {"status": "AVAILABLE", "messages": []}
    assert await messages(root) == []


async def test_failure_start_and_end_are_published_with_times(root: httpx.AsyncClient, sim: Sim) -> None:
    await root.put("/_sim/faults", json={"outage": True, "outageMessage": "Trwają prace naprawcze."})

    status = (await root.get("/status")).json()
    assert status["status"] == "FAILURE"
    [running] = status["messages"]
    assert (running["category"], running["type"], running["end"], running["version"]) == (
        "FAILURE",
        "FAILURE_START",
        None,
        1,
    )
    assert at(running["start"]) == NOW and at(running["published"]) == NOW
    assert "2026-03-10T12:00:00" in running["text"] and "Trwają prace naprawcze." in running["text"]

    sim.clock.advance(1800)
    await root.put("/_sim/faults", json={"outage": False})

    assert (await root.get("/status")).json() == {"status": "AVAILABLE", "messages": []}
    start, end = await messages(root)
    assert start == running
    assert (end["type"], end["category"], end["eventId"]) == ("FAILURE_END", "FAILURE", start["eventId"])
    assert at(end["start"]) == NOW and at(end["end"]) == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    assert end["id"] != start["id"]


async def test_total_failure_kind(root: httpx.AsyncClient) -> None:
    await root.put("/_sim/faults", json={"outage": True, "kind": "TOTAL_FAILURE"})

    status = (await root.get("/status")).json()
    assert status["status"] == "TOTAL_FAILURE"
    assert [(m["category"], m["type"]) for m in status["messages"]] == [("TOTAL_FAILURE", "FAILURE_START")]
    assert (await root.get("/v2/security/public-key-certificates")).status_code == 503


async def test_maintenance_is_announced_and_republished_with_its_end(root: httpx.AsyncClient, sim: Sim) -> None:
    await root.put("/_sim/faults", json={"outage": True, "kind": "MAINTENANCE"})

    status = (await root.get("/status")).json()
    assert status["status"] == "MAINTENANCE"
    [announcement] = status["messages"]
    assert (announcement["category"], announcement["type"]) == ("MAINTENANCE", "MAINTENANCE_ANNOUNCEMENT")

    sim.clock.advance(7200)
    await root.delete("/_sim/faults")

    [final] = await messages(root)
    assert final["id"] == announcement["id"] and final["version"] == 2
    assert at(final["start"]) == NOW and at(final["end"]) == datetime(2026, 3, 10, 14, 0, tzinfo=UTC)


async def test_changing_the_kind_of_a_running_outage_ends_one_event_and_starts_another(
    root: httpx.AsyncClient, sim: Sim
) -> None:
    await root.put("/_sim/faults", json={"outage": True})
    sim.clock.advance(60)
    await root.put("/_sim/faults", json={"outage": True, "kind": "TOTAL_FAILURE"})
    sim.clock.advance(60)
    await root.put("/_sim/faults", json={"outage": True, "kind": "TOTAL_FAILURE", "latencyMs": 1})  # same event

    history = [(m["eventId"], m["category"], m["type"]) for m in await messages(root)]
    assert history == [
        (1, "FAILURE", "FAILURE_START"),
        (1, "FAILURE", "FAILURE_END"),
        (2, "TOTAL_FAILURE", "FAILURE_START"),
    ]
    status = (await root.get("/status")).json()
    assert status["status"] == "TOTAL_FAILURE" and status["messages"][0]["eventId"] == 2


async def test_latarnia_ignores_other_faults(root: httpx.AsyncClient) -> None:
    await root.put("/_sim/faults", json={"errorRate": 1.0, "stuckExports": True})

    assert (await root.get("/status")).json()["status"] == "AVAILABLE"
    assert (await root.get("/v2/security/public-key-certificates")).status_code == 500


async def test_messages_survive_a_restart_and_a_healed_outage_is_closed(tmp_path: Path) -> None:
    settings = SimSettings(
        database_path=tmp_path / "sim.sqlite3", public_base_url="https://ksef-sim.test", rate_limits=RateLimitMode.OFF
    )

    async def started() -> tuple[FastAPI, LifespanManager]:
        app = create_app(settings)
        manager = LifespanManager(app)
        await manager.__aenter__()
        return app, manager

    def client(app: FastAPI) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test", headers=operator_headers(app))

    app, manager = await started()
    async with client(app) as first:
        await first.put("/_sim/clock", json={"now": NOW.isoformat(), "frozen": True})
        await first.put("/_sim/faults", json={"outage": True})
        assert (await first.get("/status")).json()["status"] == "FAILURE"
    await manager.__aexit__(None, None, None)

    # Faults are runtime state: the restarted simulator serves again, and Latarnia says the failure ended.
    app, manager = await started()
    try:
        async with client(app) as second:
            assert (await second.get("/v2/security/public-key-certificates")).status_code == 200
            assert (await second.get("/status")).json()["status"] == "AVAILABLE"
            start, end = await messages(second)
            assert (start["type"], end["type"], end["eventId"]) == ("FAILURE_START", "FAILURE_END", start["eventId"])
            assert at(end["end"]) == NOW  # the persisted, frozen clock
            assert "ponownie" in end["text"]
    finally:
        await manager.__aexit__(None, None, None)
