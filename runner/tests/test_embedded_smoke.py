"""`make run` smoke test: the embedded runner as a real subprocess, all five services and the KSeF simulator ready,
Ctrl-C exits 0."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from auth_svc.demo import CLIENT_ACTIVE, DEMO_PASSWORD, OFFICE_ADMIN
from platform_common.testing import wait_until

PREFIXES = ("/auth", "/gateway", "/buffer", "/approval", "/notify")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
async def test_embedded_runner_serves_every_service_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ksef_hub", "run", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def all_ready() -> dict[str, int] | None:
                if proc.poll() is not None:
                    raise AssertionError(f"runner exited early with {proc.returncode}: {proc.stdout.read()}")  # type: ignore[union-attr]
                try:
                    codes = {p: (await client.get(f"{p}/readyz")).status_code for p in PREFIXES}
                except httpx.TransportError:
                    return None
                return codes if all(c == 200 for c in codes.values()) else None

            codes = await wait_until(all_ready, timeout=60, interval=0.2, what="every service's /readyz")
            assert codes == dict.fromkeys(PREFIXES, 200)
            # The KSeF simulator is mounted beside the services with its lifespan run (it opened its state file and
            # generated the Ministry keys it publishes).
            keys = await client.get("/ksef-sim/v2/security/public-key-certificates")
            assert keys.status_code == 200, keys.text
            assert {usage for key in keys.json() for usage in key["usage"]} == {
                "KsefTokenEncryption",
                "SymmetricKeyEncryption",
            }
            # Its Latarnia and operator APIs live under the same prefix.
            assert (await client.get("/ksef-sim/status")).status_code == 200
            # The operator API only with the token the simulator made in the data folder on its first start.
            assert (await client.get("/ksef-sim/_sim/faults")).status_code == 401
            token = (data_dir / "ksef-sim.operator-token").read_text().strip()
            operator = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/ksef-sim/_sim/faults", headers=operator)).status_code == 200
            # The CLI serves on this port and the services verify tokens against auth-svc there, not on 8000.
            login = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
            assert login.status_code == 200, login.text
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            whoami = await client.get(f"/buffer/clients/{CLIENT_ACTIVE[1]}/whoami", headers=bearer)
            assert whoami.status_code == 200, whoami.text
            index = (await client.get("/services")).json()
            assert set(index["services"]) == {
                "auth-svc",
                "ksef-gateway",
                "buffer-svc",
                "approval-svc",
                "notify-svc",
            }
            assert index["ksefSimulator"]["url"] == f"http://127.0.0.1:{port}/ksef-sim/v2"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/buffer" in out, "the runner prints the service URLs"
    assert f"http://127.0.0.1:{port}/ksef-sim/v2" in out, "the runner prints the simulator's URL"
    # Every service migrated its own SQLite file in the data folder.
    assert sorted(p.name for p in data_dir.glob("*.db")) == [
        "approval.db",
        "auth.db",
        "buffer.db",
        "gateway.db",
        "notify.db",
    ]
    assert (data_dir / "ksef-sim.sqlite3").is_file(), "the simulator keeps its state in the data folder"
    # The process's umask and the start-up pass keep every file the owner's alone, -wal/-shm included.
    paths = [data_dir, *data_dir.rglob("*")]
    wrong = {
        str(p): oct(stat.S_IMODE(p.stat().st_mode))
        for p in paths
        if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    }
    assert wrong == {}
    assert out.count(token) == 1, "the operator token is printed once, at the first start"
