"""The demo switch and what the embedded runner exposes: without demo data the platform starts empty (no demo
accounts, an unseeded simulator, no demo KSeF credentials) and without a simulator when the gateway is configured
for a real KSeF; the demo's published password never listens beyond loopback; the simulator's operator API wants
its token in the mount too; the data folder is the owner's alone (0700, files 0600)."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.routing import Mount

from auth_svc.demo import DEMO_PASSWORD, OFFICE_ADMIN
from ksef_hub.embedded import (
    DEMO_MARKER,
    KSEF_SIM_PREFIX,
    DemoExposed,
    check_demo_exposure,
    create_embedded_app,
    is_loopback,
)
from ksef_sim.records import StoredInvoice
from ksef_sim.state import Sim

OWN_PASSWORD = "an-operator-chosen-passphrase-31"


def _mounted(app: FastAPI, prefix: str) -> FastAPI | None:
    for route in app.routes:
        if isinstance(route, Mount) and route.path == prefix and isinstance(route.app, FastAPI):
            return route.app
    return None


@asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=60):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            yield client


async def _login(client: httpx.AsyncClient, password: str = DEMO_PASSWORD) -> int:
    response = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": password})
    return response.status_code


class TestWithoutDemoData:
    async def test_no_demo_accounts_and_an_empty_simulator(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        app = create_embedded_app(data_dir, demo=False)
        async with started(app) as client:
            assert await _login(client) == 401
            sim_app = _mounted(app, KSEF_SIM_PREFIX)
            assert sim_app is not None, "the gateway's environment is the simulator: it is mounted, empty"
            sim: Sim = sim_app.state.sim
            assert sim.store.all(StoredInvoice) == []
            assert app.state.demo_ksef is None, "no demo KSeF token is issued or registered"
        assert not (data_dir / DEMO_MARKER).exists()

    async def test_a_real_ksef_environment_mounts_no_simulator(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("GATEWAY_KSEF__ENVIRONMENT", "test")
        data_dir = tmp_path / "data"
        app = create_embedded_app(data_dir, demo=False)
        assert _mounted(app, KSEF_SIM_PREFIX) is None
        async with started(app) as client:
            assert (await client.get(f"{KSEF_SIM_PREFIX}/v2/security/public-key-certificates")).status_code == 404
            assert (await client.get(f"{KSEF_SIM_PREFIX}/_sim/faults")).status_code == 404
            assert "ksefSimulator" not in (await client.get("/services")).json()
            assert await _login(client) == 401
        assert not list(data_dir.glob("ksef-sim*")), "no simulator state or token file"

    async def test_demo_on_still_seeds(self, tmp_path: Path) -> None:
        app = create_embedded_app(tmp_path / "data")
        async with started(app) as client:
            assert await _login(client) == 200
            assert app.state.demo_ksef is not None

    async def test_an_own_demo_password_replaces_the_published_one(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        async with started(create_embedded_app(data_dir, demo_password=OWN_PASSWORD)) as client:
            assert await _login(client) == 401
            assert await _login(client, OWN_PASSWORD) == 200
        check_demo_exposure("0.0.0.0", data_dir, demo=True, demo_password=OWN_PASSWORD)  # noqa: S104


class TestDemoExposure:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST."])
    def test_loopback_hosts(self, host: str) -> None:
        assert is_loopback(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.10", "hub.example.com", "localhost.evil"])  # noqa: S104
    def test_published_password_beyond_loopback_is_refused(self, host: str, tmp_path: Path) -> None:
        assert not is_loopback(host)
        with pytest.raises(DemoExposed, match="KSEF_HUB_DEMO_PASSWORD"):
            check_demo_exposure(host, tmp_path, demo=True, demo_password=DEMO_PASSWORD)

    def test_own_password_or_no_demo_may_listen_anywhere(self, tmp_path: Path) -> None:
        check_demo_exposure("0.0.0.0", tmp_path, demo=True, demo_password=OWN_PASSWORD)  # noqa: S104
        check_demo_exposure("0.0.0.0", tmp_path, demo=False, demo_password=DEMO_PASSWORD)  # noqa: S104

    async def test_a_folder_seeded_with_the_published_password_stays_on_loopback(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        async with started(create_embedded_app(data_dir)):
            pass
        # Its accounts keep the published password whatever is configured now.
        for demo, password in ((False, DEMO_PASSWORD), (True, OWN_PASSWORD)):
            with pytest.raises(DemoExposed, match="fresh data folder"):
                check_demo_exposure("0.0.0.0", data_dir, demo=demo, demo_password=password)  # noqa: S104
        check_demo_exposure("127.0.0.1", data_dir, demo=True, demo_password=DEMO_PASSWORD)


class TestMountedOperatorApi:
    async def test_the_operator_api_wants_the_token_from_the_data_folder(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        async with started(create_embedded_app(data_dir, demo=False)) as client:
            assert (await client.get(f"{KSEF_SIM_PREFIX}/_sim/faults")).status_code == 401
            wrong = {"Authorization": "Bearer not-the-operator-token"}
            assert (
                await client.put(f"{KSEF_SIM_PREFIX}/_sim/faults", json={"outage": True}, headers=wrong)
            ).status_code == 401
            token = (data_dir / "ksef-sim.operator-token").read_text().strip()
            ok = await client.get(f"{KSEF_SIM_PREFIX}/_sim/faults", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200, ok.text
            assert ok.json()["outage"] is False


def _modes(data_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(data_dir)): stat.S_IMODE(p.lstat().st_mode) for p in (data_dir, *data_dir.rglob("*"))}


def _wrong_modes(data_dir: Path) -> dict[str, str]:
    """Every folder not 0700 and every file not 0600 under ``data_dir``, with its mode."""
    return {
        name: oct(mode)
        for name, mode in _modes(data_dir).items()
        if mode != (0o700 if (data_dir / name).is_dir() else 0o600)
    }


class TestDataFolderPermissions:
    async def test_after_a_start_and_stop_everything_is_the_owners_alone(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        async with started(create_embedded_app(data_dir)) as client:
            assert await _login(client) == 200  # the databases are written to, -wal files included
            assert _wrong_modes(data_dir) == {}
        modes = _modes(data_dir)
        assert "auth.db" in modes and "ksef-sim.sqlite3" in modes and "ksef-sim.operator-token" in modes
        assert _wrong_modes(data_dir) == {}

    async def test_a_folder_made_open_is_tightened_on_start(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        (data_dir / "old").mkdir(parents=True)
        data_dir.chmod(0o755)
        (data_dir / "old").chmod(0o755)
        (data_dir / "old" / "notes.txt").write_text("left from an earlier version")
        (data_dir / "old" / "notes.txt").chmod(0o644)
        create_embedded_app(data_dir, demo=False)
        assert _wrong_modes(data_dir) == {}
