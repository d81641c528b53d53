"""Request limits end to end (REFERENCE.md §13), through ``GET /rate-limits`` (group ``other``: 10/s, 30/min,
120/h) and the public ``GET /peppol/query`` (60/s per IP), on a frozen simulator clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI

from ksef_sim.ratelimit import PRODUCTION_LIMITS, Group
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

SPEC = Path("/work/shared/ksef/openapi/open-api.json")
NIP = "5261040828"
OTHER_NIP = "7010002137"
START = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)

Mint = Callable[..., str]


@pytest.fixture
def sim_settings() -> SimSettings:
    return SimSettings(
        database_path=None,
        public_base_url="https://ksef-sim.test",
        rate_limits=RateLimitMode.PRODUCTION,
        random_seed=1234,
    )


@pytest.fixture(autouse=True)
def frozen(sim: Sim) -> None:
    sim.clock.set(START, frozen=True)


@pytest.fixture
async def other_ip_client(sim_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim_app, client=("10.1.2.3", 50001))
    async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test/v2") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _nullable_to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_jsonschema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def _components() -> dict[str, Any]:
    converted: dict[str, Any] = _nullable_to_jsonschema(json.loads(SPEC.read_text(encoding="utf-8"))["components"])
    return converted


def assert_schema(body: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    errors = [str(error) for error in jsonschema_rs.Draft4Validator(schema).iter_errors(body)]
    assert not errors, f"{schema_name}: {errors}"


async def calls(client: httpx.AsyncClient, token: str, n: int, **headers: str) -> list[httpx.Response]:
    return [await client.get("/rate-limits", headers={**bearer(token), **headers}) for _ in range(n)]


# -- windows ---------------------------------------------------------------------------------------------------


async def test_eleventh_call_in_a_second_is_429_legacy_body(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(NIP)
    responses = await calls(client, token, 11)
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    limited = responses[-1]
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["content-type"].startswith("application/json")
    body = limited.json()
    assert_schema(body, "TooManyRequestsResponse")
    assert body["status"]["code"] == 429
    assert body["status"]["description"] == "Too Many Requests"
    assert body["status"]["details"] == ["Przekroczono limit 10 żądań na sekundę. Spróbuj ponownie po 1 sekundach."]
    assert_schema(responses[0].json(), "EffectiveApiRateLimits")


async def test_429_as_problem_details(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(NIP)
    responses = await calls(client, token, 11, **{"X-Error-Format": "problem-details"})
    limited = responses[-1]
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert limited.headers["Retry-After"] == "1"
    assert_schema(limited.json(), "TooManyRequestsProblemDetails")
    assert limited.json()["status"] == 429


async def test_second_window_slides(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(NIP)
    await calls(client, token, 10)
    sim.clock.advance(0.5)
    assert (await calls(client, token, 1))[0].status_code == 429
    sim.clock.advance(0.5)  # the first ten are exactly one second old: out of the window
    assert (await calls(client, token, 1))[0].status_code == 200


async def test_minute_window(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(NIP)
    for _ in range(3):  # 10 per second for three seconds = the 30 per minute
        assert all(r.status_code == 200 for r in await calls(client, token, 10))
        sim.clock.advance(1)
    limited = (await calls(client, token, 1))[0]
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "57"  # the oldest hit (t=0) leaves the window at t=60
    assert "30 żądań na minutę" in limited.json()["status"]["details"][0]
    sim.clock.advance(56)
    assert (await calls(client, token, 1))[0].status_code == 429
    sim.clock.advance(1)
    assert all(r.status_code == 200 for r in await calls(client, token, 10))


async def test_hour_window(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(NIP)
    for _ in range(4):  # 4 × 30 = the 120 per hour, each burst within the minute limit
        for _ in range(3):
            assert all(r.status_code == 200 for r in await calls(client, token, 10))
            sim.clock.advance(1)
        sim.clock.advance(57)
    limited = (await calls(client, token, 1))[0]
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == str(3600 - 240)
    assert "120 żądań na godzinę" in limited.json()["status"]["details"][0]
    sim.clock.advance(3600 - 240)
    assert (await calls(client, mint_access(NIP), 1))[0].status_code == 200  # a fresh token: the old one expired


# -- keys ------------------------------------------------------------------------------------------------------


async def test_contexts_and_ips_are_counted_separately(
    client: httpx.AsyncClient, other_ip_client: httpx.AsyncClient, mint_access: Mint
) -> None:
    token = mint_access(NIP)
    assert (await calls(client, token, 11))[-1].status_code == 429
    # Another context from the same IP, and the same context from another IP, each have their own budget.
    assert all(r.status_code == 200 for r in await calls(client, mint_access(OTHER_NIP), 10))
    assert all(r.status_code == 200 for r in await calls(other_ip_client, token, 10))
    # The same context through another subject shares the (context, IP) budget.
    employee = mint_access(NIP, subject=Identifier("Pesel", "90010112345"))
    assert (await calls(client, employee, 1))[0].status_code == 429


async def test_public_endpoints_are_limited_per_ip(
    client: httpx.AsyncClient, other_ip_client: httpx.AsyncClient
) -> None:
    responses = [await client.get("/peppol/query") for _ in range(61)]
    assert [r.status_code for r in responses] == [200] * 60 + [429]
    assert (await other_ip_client.get("/peppol/query")).status_code == 200


# -- configuration ---------------------------------------------------------------------------------------------


def table(per_second: int, per_minute: int, per_hour: int) -> dict[str, Any]:
    values = {"perSecond": per_second, "perMinute": per_minute, "perHour": per_hour}
    return {"rateLimits": {g.value: values for g in Group if g is not Group.PUBLIC}}


async def test_custom_limits_apply_to_the_context_until_deleted(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    token = mint_access(NIP)
    response = await client.post("/testdata/rate-limits", json=table(2, 100, 1000), headers=bearer(token))
    assert response.status_code == 200
    # The POST itself was the first "other" request of this second.
    effective = await client.get("/rate-limits", headers=bearer(token))
    assert effective.json()["other"] == {"perSecond": 2, "perMinute": 100, "perHour": 1000}
    assert effective.json()["invoiceMetadata"] == {"perSecond": 2, "perMinute": 100, "perHour": 1000}
    limited = (await calls(client, token, 1))[0]
    assert limited.status_code == 429
    assert "limit 2 żądań na sekundę" in limited.json()["status"]["details"][0]
    # Other contexts keep the defaults.
    other = await client.get("/rate-limits", headers=bearer(mint_access(OTHER_NIP)))
    assert other.json()["other"] == PRODUCTION_LIMITS[Group.OTHER].as_json()

    sim.clock.advance(1)
    assert (await client.delete("/testdata/rate-limits", headers=bearer(token))).status_code == 200
    restored = await client.get("/rate-limits", headers=bearer(token))
    assert restored.json() == {g.value: PRODUCTION_LIMITS[g].as_json() for g in Group if g is not Group.PUBLIC}
    assert all(r.status_code == 200 for r in await calls(client, token, 8))  # 10/s again


async def test_custom_limits_are_validated(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(NIP)
    incomplete = table(5, 10, 20)
    del incomplete["rateLimits"]["other"]
    response = await client.post("/testdata/rate-limits", json=incomplete, headers=bearer(token))
    assert response.status_code == 400
    assert response.json()["exception"]["exceptionDetailList"][0]["exceptionCode"] == 21405
    zero = await client.post("/testdata/rate-limits", json=table(0, 10, 20), headers=bearer(token))
    assert zero.status_code == 400


async def test_production_limits_for_a_context_even_when_limits_are_off(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    sim.limiter.reset(RateLimitMode.OFF)
    token = mint_access(NIP)
    assert all(r.status_code == 200 for r in await calls(client, token, 30))
    sim.clock.advance(3600)
    token = mint_access(NIP)
    assert (await client.post("/testdata/rate-limits/production", headers=bearer(token))).status_code == 200
    # The POST itself ran before the override existed, so it was not counted.
    responses = await calls(client, token, 11)
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    # Without an override the context is unlimited again.
    sim.clock.advance(1)
    assert (await client.delete("/testdata/rate-limits", headers=bearer(token))).status_code == 200
    assert all(r.status_code == 200 for r in await calls(client, token, 30))


async def test_mode_off_does_not_limit(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    sim.limiter.reset(RateLimitMode.OFF)
    token = mint_access(NIP)
    assert all(r.status_code == 200 for r in await calls(client, token, 50))
    public = [(await client.get("/peppol/query")).status_code for _ in range(70)]
    assert public == [200] * 70
    # GET /rate-limits still reports the nominal production values.
    assert (await calls(client, token, 1))[0].json()["other"] == {"perSecond": 10, "perMinute": 30, "perHour": 120}
