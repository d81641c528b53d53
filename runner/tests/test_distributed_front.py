"""The distributed runner's front refuses what it cannot route as RFC 7807 problem documents (as the services do),
and answers 503 with Retry-After when no replica of a prefix accepts connections."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from ksef_hub.distributed import MAX_PROXIED_BODY, InfraInstance, Process, Supervisor


async def test_refusals_are_problem_documents(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, InfraInstance(tmp_path / "infra", 1, 2, 3))
    down = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    down.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused, as to a replica that is down
    supervisor.processes = {"buffer-svc": Process("buffer-svc", "buffer-svc", [], {}, down)}
    app = supervisor.front_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://front") as front:
        unknown = await front.get("/nowhere/x")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"].startswith("application/problem+json")
        too_big = await front.post("/buffer/x", headers={"content-length": str(MAX_PROXIED_BODY + 1)}, content=b"")
        assert too_big.status_code == 413 and too_big.json()["status"] == 413
        unavailable = await front.get("/buffer/readyz")
        assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "1"
        assert unavailable.headers["content-type"].startswith("application/problem+json")
    supervisor.front_sock.close()
    down.close()
    supervisor.mail.stop()
