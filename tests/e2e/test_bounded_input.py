"""Bounded input across the platform: every service, the embedded runner's mounts and the KSeF simulator refuse
bodies, query strings and headers over their limits with problem documents, before reading them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from auth_svc.main import create_app as create_auth_app
from auth_svc.settings import AuthSettings
from ksef_hub.embedded import KSEF_SIM_PREFIX, SERVICES, create_embedded_app
from ksef_sim.api.sessions_batch import MAX_ENCRYPTED_PART
from ksef_sim.main import SEND_INVOICE_BODY_LIMIT
from ksef_sim.main import create_app as create_sim_app
from ksef_sim.settings import SimSettings
from platform_common.settings import DatabaseSettings, HttpLimitsSettings, MessagingSettings

DEFAULT = HttpLimitsSettings().max_body_bytes
TWENTY_MB = 20 * 1024 * 1024


def login_body(size: int) -> bytes:
    """A JSON login of ``size`` bytes: valid JSON the whole way, so only its size can refuse it."""
    head = b'{"email": "a@example.com", "password": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


async def declared_only() -> AsyncIterator[bytes]:
    """A body that claims a length (in a header) and sends nothing: only an answer before reading ends well."""
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://ksef-hub.dev/problems/{code}"
    return body


async def test_a_20_mb_login_to_auth_svc_is_413_not_422(tmp_path: Path) -> None:
    settings = AuthSettings(
        db=DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}")),
        messaging=MessagingSettings(transport="inprocess"),
        data_dir=tmp_path,
    )
    app = create_auth_app(settings, migrate_on_start=True)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
            headers = {"content-type": "application/json"}
            r = await client.post("/login", content=login_body(TWENTY_MB), headers=headers)
            body = assert_problem(r, 413, "body-too-large")
            assert body["max_bytes"] == DEFAULT
            assert "xxxx" not in r.text
            # The same login under the limit is read and judged on its content.
            small = await client.post("/login", content=login_body(1000), headers=headers)
            assert small.status_code not in (413, 422), small.text


async def test_the_embedded_runner_mounts_keep_each_services_limits(tmp_path: Path) -> None:
    # Refused before any route runs, so the services need not be started.
    app = create_embedded_app(tmp_path / "data")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
        r = await client.post(
            "/auth/login", content=login_body(TWENTY_MB), headers={"content-type": "application/json"}
        )
        assert assert_problem(r, 413, "body-too-large")["instance"] == "/auth/login"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(DEFAULT // 1024 + 2):
                yield b"x" * 1024

        # Without a length the body is counted as a route reads it (a path that reads nothing reads no body).
        chunked = await client.post("/auth/login", content=chunks(), headers={"content-type": "application/json"})
        assert_problem(chunked, 413, "body-too-large")
        for service in SERVICES:
            # A declared length over the limit is refused before routing, on every mount.
            declared = await client.post(
                f"{service.prefix}/anything", content=declared_only(), headers={"content-length": str(DEFAULT + 1)}
            )
            assert_problem(declared, 413, "body-too-large")
            query = await client.get(f"{service.prefix}/readyz", params={"q": "x" * 10_000})
            assert_problem(query, 414, "query-too-long")
            headers = await client.get(f"{service.prefix}/readyz", headers={"x-big": "x" * 20_000})
            assert_problem(headers, 431, "headers-too-large")
        sim = await client.post(f"{KSEF_SIM_PREFIX}/v2/auth/challenge", content=b"{" * (DEFAULT + 1))
        assert_problem(sim, 413, "body-too-large")


async def test_the_simulator_takes_ksef_sized_invoices_and_batch_parts_and_nothing_larger(tmp_path: Path) -> None:
    app = create_sim_app(SimSettings(database_path=tmp_path / "sim.sqlite3"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            send = "/v2/sessions/online/20260101-SO-0000000000-0000000000-00/invoices"
            # 5 MB is past the default but within what KSeF takes: the API reads it and judges its content.
            big = await client.post(
                send, content=b"{" * (5 * 1024 * 1024), headers={"content-type": "application/json"}
            )
            assert big.status_code == 400, big.text
            assert big.json()["exception"]["exceptionDetailList"][0]["exceptionCode"] == 21405
            over = await client.post(
                send,
                content=declared_only(),
                headers={"content-length": str(SEND_INVOICE_BODY_LIMIT + 1)},
            )
            assert assert_problem(over, 413, "body-too-large")["max_bytes"] == SEND_INVOICE_BODY_LIMIT
            # A batch part reaches the storage endpoint, which checks its signature.
            part = await client.put("/storage/batch/x/1", content=b"p" * (2 * 1024 * 1024))
            assert part.status_code == 403, part.text
            too_big_part = await client.put(
                "/storage/batch/x/1",
                content=declared_only(),
                headers={"content-length": str(MAX_ENCRYPTED_PART + 1)},
            )
            assert_problem(too_big_part, 413, "body-too-large")
            # Everything else keeps the platform default.
            challenge = await client.post("/v2/auth/challenge", content=b"{" * (DEFAULT + 1))
            assert_problem(challenge, 413, "body-too-large")
            spec = json.loads((await client.get("/openapi.json")).text)
            assert spec["paths"]["/v2/sessions/online/{referenceNumber}/invoices"]["post"]["x-body-limit"] == (
                SEND_INVOICE_BODY_LIMIT
            )
