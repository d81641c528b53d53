"""Fixtures for the authentication tests: a fake auth-svc (TokenFactory) and a verifier wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from platform_common.auth import Authenticator
from platform_common.testing.auth import FakeClock, TokenFactory

SERVICE = "test-svc"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tokens(clock: FakeClock) -> TokenFactory:
    return TokenFactory(clock=clock)


@pytest.fixture
async def authenticator(tokens: TokenFactory, clock: FakeClock) -> AsyncIterator[Authenticator]:
    secret = tokens.add_service_client(SERVICE)
    auth = Authenticator(
        tokens.settings(client_secret=secret, introspection_cache_s=30, jwks_cache_s=300, jwks_min_refetch_s=10),
        service_name=SERVICE,
        clock=clock,
        transport=tokens.transport(),
    )
    yield auth
    await auth.aclose()
