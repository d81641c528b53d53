"""``ksef-sim`` as a real process: serve on a loopback port, seed (CLI and /_sim), stop on SIGTERM/SIGINT with exit
code 0, start again on the same state file and find everything where it was."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

BUYER = "7352765225"
STARTUP_TIMEOUT_S = 60.0
pytestmark = pytest.mark.slow


def _command() -> list[str]:
    script = Path(sys.executable).with_name("ksef-sim")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from ksef_sim.main import run; run()"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KSEF_SIM_")}
    env["KSEF_SIM_RATE_LIMITS"] = "off"
    return env


class Server:
    def __init__(self, db: Path, log: Path) -> None:
        self.db = db
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [*_command(), "--host", "127.0.0.1", "--port", str(self.port), "--db", str(db)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"ksef-sim exited early with {self.process.returncode}"
            try:
                if self.http.get("/healthz").status_code == 200:
                    # Made (or read) before the app serves: the operator reads it from the file beside the state.
                    token = self.db.with_suffix(".operator-token").read_text().strip()
                    self.http.headers["Authorization"] = f"Bearer {token}"
                    return
            except httpx.TransportError:
                pass
            # A bounded poll interval while the port is not listening yet, not a fixed wait for readiness.
            time.sleep(0.05)
        raise AssertionError("ksef-sim did not answer /healthz in time")

    def stop(self, sig: signal.Signals) -> int:
        self.http.close()
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.http.close()
        self.log.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def _start(servers: list[Server], db: Path, log: Path) -> Server:
    server = Server(db, log)
    servers.append(server)
    server.wait_ready()
    return server


def _key_ids(server: Server) -> dict[str, str]:
    response = server.http.get("/v2/security/public-key-certificates")
    assert response.status_code == 200, response.text
    return {c["usage"][0]: c["publicKeyId"] for c in response.json()}


def _stats(server: Server) -> dict[str, Any]:
    response = server.http.get("/_sim/stats")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_state_survives_a_restart_and_signals_stop_cleanly(tmp_path: Path, servers: list[Server]) -> None:
    db, log = tmp_path / "state" / "sim.sqlite3", tmp_path / "ksef-sim.log"

    # The seed subcommand writes straight into a state file nobody serves yet.
    seeded = subprocess.run(
        [*_command(), "seed", "--db", str(db), "--buyer", BUYER, "--count", "25", "--sellers", "4"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    assert '"created": 25' in seeded.stdout

    first = _start(servers, db, log)
    token_file = db.with_suffix(".operator-token")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    stranger = httpx.get(f"{first.base}/_sim/stats", timeout=10)
    assert stranger.status_code == 401, "the standalone simulator's operator API wants its token"
    keys = _key_ids(first)
    assert _stats(first)["invoices"] == 25
    response = first.http.post("/_sim/seed", json={"buyerNip": BUYER, "count": 30})
    assert response.status_code == 201, response.text
    assert response.json()["created"] == 30
    frozen = first.http.put("/_sim/clock", json={"now": "2026-05-01T10:00:00+02:00", "frozen": True})
    assert frozen.status_code == 200
    assert first.stop(signal.SIGTERM) == 0

    second = _start(servers, db, log)
    assert _key_ids(second) == keys  # clients' cached Ministry certificates stay valid
    stats = _stats(second)
    assert stats["invoices"] == 55
    assert stats["now"].startswith("2026-05-01T08:00:00")  # the frozen clock came back too
    assert second.stop(signal.SIGINT) == 0
    assert token_file.read_text().strip() == token, "a restart keeps the operator token"
    # Printed at the first start only: the second one read the file and said nothing of it.
    assert log.read_text(errors="replace").count(token) == 1


def test_bad_seed_arguments_fail_with_a_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_command(), "seed", "--db", str(tmp_path / "x.sqlite3"), "--buyer", "12", "--count", "1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "is not a NIP" in result.stderr
