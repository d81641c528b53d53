"""The embedded platform as the demo tests start it: served with uvicorn on a loopback port (the vault checks the
demo tokens in KSeF over HTTP, through this server), on one data folder per test, startable again on the same folder
to show what a restart keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from ksef_hub.embedded import create_embedded_app
from platform_common.testing.auth import loopback_socket, serve_on_loopback

Hub = Callable[[], AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    # Fast export polling and scheduler ticks: the first sync of each client is one export (REFERENCE.md §9).
    monkeypatch.setenv("GATEWAY_SYNC__EXPORT_POLL_INTERVAL_S", "0.1")
    monkeypatch.setenv("GATEWAY_SYNC__TICK_INTERVAL_S", "0.2")
    data_dir = tmp_path / "data"

    @asynccontextmanager
    async def start() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        sock = loopback_socket()
        app = create_embedded_app(data_dir, public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
        async with (
            LifespanManager(app, startup_timeout=60),
            serve_on_loopback(app, sock) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            yield app, client

    return start
