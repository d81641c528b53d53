"""Fixtures for the simulator's own tests: an in-memory simulator behind an ASGI client, and a way to mint
access tokens directly so each API area can be tested without replaying the whole auth flow."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from ksef_sim.main import create_app
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

ALL_PERMISSIONS = frozenset(
    {
        "InvoiceRead",
        "InvoiceWrite",
        "CredentialsRead",
        "CredentialsManage",
        "SubunitManage",
        "Introspection",
        "EnforcementOperations",
    }
)


@pytest.fixture
def sim_settings() -> SimSettings:
    # No processing delays: most tests freeze the clock and look at final states; the tests of a delay set it.
    return SimSettings(
        database_path=None,
        public_base_url="https://ksef-sim.test",
        rate_limits=RateLimitMode.OFF,
        auth_processing_delay_s=0,
        batch_processing_delay_s=0,
        permanent_storage_delay_s=0,
        permanent_storage_jitter_s=0,
        random_seed=1234,
    )


@pytest.fixture
async def sim_app(sim_settings: SimSettings) -> AsyncIterator[FastAPI]:
    app = create_app(sim_settings)
    async with LifespanManager(app):
        yield app


@pytest.fixture
def sim(sim_app: FastAPI) -> Sim:
    state: Sim = sim_app.state.sim
    return state


@pytest.fixture
async def client(sim_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test/v2") as c:
        yield c


MintAccess = Callable[..., str]


@pytest.fixture
def mint_access(sim: Sim) -> MintAccess:
    """``mint_access(nip, permissions=ALL, subject=None)`` → a valid access token for context ``Nip=nip``."""

    def mint(
        nip: str,
        permissions: frozenset[str] | set[str] = ALL_PERMISSIONS,
        subject: Identifier | None = None,
        auth_method: str = "XadesSignature",
    ) -> str:
        token, _ = sim.tokens.issue_access(
            now=sim.clock.now(),
            ttl=timedelta(seconds=sim.settings.access_token_ttl_s),
            auth_reference_number="20260101-AU-0000000000-0000000000-00",
            context=Identifier("Nip", nip),
            subject=subject or Identifier("Nip", nip),
            auth_method=auth_method,
            permissions=permissions,
        )
        return token

    return mint


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
