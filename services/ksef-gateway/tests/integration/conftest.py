"""The KSeF simulator over real HTTP (``ksef_sim.testing.serve``), our client's harness around it, and a
migrated gateway database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from ksef_gateway.testing import KsefHarness
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.db import Database
from platform_common.migrations import upgrade
from platform_common.settings import DatabaseSettings

MigratedDb = Callable[[str], Awaitable[Database]]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningSim]:
    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            public_base_url=f"http://127.0.0.1:{port}",
            rate_limits=RateLimitMode.OFF,
            invoice_processing_delay_s=0,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=20261201,
        )

    with serve(settings) as server:
        yield server


@pytest.fixture
async def ksef(running: RunningSim) -> AsyncIterator[KsefHarness]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield KsefHarness(running.root_url, http)


@pytest.fixture
def migrated_db() -> MigratedDb:
    """``await migrated_db(url)``: a ``Database`` on ``url`` with the gateway's schema at head."""

    async def make(url: str) -> Database:
        await asyncio.to_thread(upgrade, "ksef_gateway:migrations", url, "gateway")
        return Database(DatabaseSettings(url=SecretStr(url)), "gateway")

    return make
