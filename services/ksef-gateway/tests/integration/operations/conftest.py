"""The operators' overview's world: the simulator over real HTTP, a gateway (SQLite or PostgreSQL, in-process bus)
holding one client's KSeF token and lease, its HTTP API, and an operator's token beside the tenant's ones."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from random import Random

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from integration.sales.world import Hub, leased
from ksef_gateway.main import create_app
from ksef_gateway.settings import (
    BudgetSettings,
    GatewaySettings,
    KsefSettings,
    OutageSettings,
    SalesSettings,
    SyncSettings,
    VaultSettings,
)
from ksef_gateway.testing import KsefHarness
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.seed import random_nip
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.settings import DatabaseSettings, MessagingSettings, TelemetrySettings
from platform_common.testing import wait_until
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

SCRAPE_TOKEN = "operations-scrape-token"


@dataclass
class World:
    hub: Hub
    tokens: TokenFactory
    ops: dict[str, str]  # a platform operator: permission ``ops``


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[RunningSim]:
    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            public_base_url=f"http://127.0.0.1:{port}",
            rate_limits=RateLimitMode.OFF,  # 429s only when a test forces them
            invoice_processing_delay_s=0.1,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=31,
        )

    with serve(settings) as running:
        yield running


@pytest.fixture
async def world(sim: RunningSim, db_url: str, tmp_path: Path) -> AsyncIterator[World]:
    nip = random_nip(Random(uuid.uuid4().int))
    tokens = TokenFactory(clock=FakeClock(datetime.now(UTC)))
    settings = GatewaySettings(
        db=DatabaseSettings(url=SecretStr(db_url)),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
        ksef=KsefSettings(sim_base_url=sim.api_url, auth_poll_interval_s=0.02, replica_id="operations"),
        vault=VaultSettings(master_keys={"k1": SecretStr(base64.b64encode(os.urandom(32)).decode())}),
        # The scheduler stays off: the test runs the sync engine itself, so it knows when a run has ended.
        sync=SyncSettings(enabled=False),
        sales=SalesSettings(tick_interval_s=0.2, poll_first_s=0.05, poll_max_s=0.5, deadline_check_interval_s=0.1),
        outages=OutageSettings(check_interval_s=0.1, failure_threshold=2),
        budget=BudgetSettings(circuit_cooldown_s=0.5),
        data_dir=tmp_path,
        telemetry=TelemetrySettings(metrics_token=SecretStr(SCRAPE_TOKEN)),
    )
    app = create_app(settings, migrate_on_start=True)
    authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = tokens.clock, tokens.transport()
    async with LifespanManager(app) as manager, httpx.AsyncClient(timeout=30) as http:
        await open_clients(app, nip)
        gateway = Gateway.of(app.state.runtime)
        token = await KsefHarness(sim.root_url, http).create_ksef_token(nip)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://gateway", timeout=30
        ) as api:
            manage = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.credentials.manage'], nips=[nip])}"}
            r = await api.put(f"/clients/{nip}/credential", json={"kind": "ksef_token", "token": token}, headers=manage)
            assert r.status_code == 201, r.text
            await wait_until(lambda: leased(gateway, nip), timeout=30, what="the context's lease")
            hub = Hub(
                api=api,
                gateway=gateway,
                nip=nip,
                sender={"Authorization": f"Bearer {tokens.mint(perms=['ksef.send', 'ksef.read'], nips=[nip])}"},
                reader={"Authorization": f"Bearer {tokens.mint(perms=['ksef.read'], nips=[nip])}"},
                sim=sim,
                manager=manage["Authorization"],
                auto={"Authorization": f"Bearer {tokens.mint(perms=['ksef.send.auto'], nips=[nip])}"},
            )
            ops = {"Authorization": f"Bearer {tokens.mint(perms=['ops'], nips=[])}"}
            yield World(hub, tokens, ops)
