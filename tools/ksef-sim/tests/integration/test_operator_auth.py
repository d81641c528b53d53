"""The operator API (/_sim) wants the operator token on every route: none or a wrong one is a 401 problem document.
The token comes from the settings, or from a 0600 file beside the state file, made and printed on the first start
only."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import SecretStr, ValidationError

from ksef_sim.api import operator
from ksef_sim.main import create_app
from ksef_sim.operator_token import token_file
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import operator_headers, serve

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
OPERATOR_ROUTES = sorted(
    (method, f"/_sim{route.path}")
    for route in operator.router.routes
    if isinstance(route, APIRoute)
    for method in route.methods or ()
)


def _settings(database_path: Path | None, **overrides: object) -> SimSettings:
    return SimSettings(database_path=database_path, rate_limits=RateLimitMode.OFF, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def root(sim_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test") as c:
        yield c


def test_the_table_covers_the_whole_operator_api() -> None:
    assert len(OPERATOR_ROUTES) >= 11
    assert ("PUT", "/_sim/faults") in OPERATOR_ROUTES and ("POST", "/_sim/seed") in OPERATOR_ROUTES


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-of-the-right-length-0123456789", "Basic b3BlcmF0b3I6eA==", "Bearer "],
    ids=["none", "wrong", "basic", "empty"],
)
async def test_every_operator_route_refuses_a_caller_without_the_token(
    root: httpx.AsyncClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await root.request(method, path, json={"outage": True, "count": 5}, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["status"] == 401


async def test_a_refused_call_changes_nothing(root: httpx.AsyncClient, sim_app: FastAPI) -> None:
    sim = sim_app.state.sim
    sim.clock.set(NOW, frozen=True)
    assert (await root.post("/_sim/clock/advance", json={"seconds": 86_400})).status_code == 401
    assert (await root.put("/_sim/faults", json={"outage": True})).status_code == 401
    assert sim.clock.now() == NOW
    assert not sim.faults.outage


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
async def test_every_operator_route_answers_the_operator(
    root: httpx.AsyncClient, sim_app: FastAPI, method: str, path: str
) -> None:
    # An empty body is valid for some routes and a 422 for others: either way past the token check.
    response = await root.request(method, path, json={}, headers=operator_headers(sim_app))
    assert response.status_code in {200, 201, 422}, response.text


async def test_the_operator_token_works_with_any_case_of_the_scheme(root: httpx.AsyncClient, sim_app: FastAPI) -> None:
    token = operator_headers(sim_app)["Authorization"].removeprefix("Bearer ")
    response = await root.get("/_sim/faults", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


class TestTokenFile:
    async def test_first_start_makes_a_0600_file_and_prints_the_token_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = _settings(tmp_path / "sim.sqlite3")
        path = token_file(settings)
        assert path == tmp_path / "sim.operator-token"
        app = create_app(settings)
        async with LifespanManager(app):
            token = operator_headers(app)["Authorization"].removeprefix("Bearer ")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == token
        assert len(token) >= 32
        assert capsys.readouterr().out.count(token) == 1

        again = create_app(settings)
        async with LifespanManager(again):
            assert operator_headers(again)["Authorization"] == f"Bearer {token}"
            transport = httpx.ASGITransport(app=again)
            async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test") as client:
                ok = await client.get("/_sim/stats", headers={"Authorization": f"Bearer {token}"})
                assert ok.status_code == 200
        second_start = capsys.readouterr()
        assert token not in second_start.out and token not in second_start.err

    async def test_a_file_readable_by_others_is_tightened(self, tmp_path: Path) -> None:
        path = tmp_path / "operator-token"
        path.write_text("a-token-someone-restored-from-backup\n")
        path.chmod(0o644)
        app = create_app(_settings(tmp_path / "sim.sqlite3", operator_token_file=path))
        async with LifespanManager(app):
            assert operator_headers(app)["Authorization"] == "Bearer a-token-someone-restored-from-backup"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async def test_a_token_from_the_settings_writes_no_file_and_prints_nothing(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        token = "operator-token-from-a-secret-store"
        app = create_app(_settings(tmp_path / "sim.sqlite3", operator_token=SecretStr(token)))
        async with LifespanManager(app):
            assert operator_headers(app)["Authorization"] == f"Bearer {token}"
        assert not (tmp_path / "sim.operator-token").exists()
        assert token not in capsys.readouterr().out

    def test_a_short_token_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="at least 16"):
            _settings(None, operator_token=SecretStr("short"))


class TestServedOverHttp:
    def test_the_test_server_adds_the_token_to_bare_operator_calls_only_when_asked(self, tmp_path: Path) -> None:
        with serve(lambda _port: _settings(tmp_path / "a.sqlite3")) as running:
            assert httpx.get(f"{running.root_url}/_sim/stats").status_code == 200
            wrong = httpx.get(f"{running.root_url}/_sim/stats", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, "a credential the caller sent is checked, never replaced"
        with serve(lambda _port: _settings(tmp_path / "b.sqlite3"), operator_auto_auth=False) as running:
            assert httpx.get(f"{running.root_url}/_sim/stats").status_code == 401
            ok = httpx.get(f"{running.root_url}/_sim/stats", headers=running.operator_headers)
            assert ok.status_code == 200
