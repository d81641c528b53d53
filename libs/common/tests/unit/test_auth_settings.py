from __future__ import annotations

import pytest

from platform_common.auth import Authenticator
from platform_common.settings import ServiceSettings, service_config
from platform_common.testing.auth import FakeClock, TokenFactory


class ExampleSettings(ServiceSettings):
    model_config = service_config("EXAMPLE_")


def test_defaults_point_at_the_embedded_auth_svc() -> None:
    auth = ExampleSettings().auth
    assert auth.jwks_url == "http://127.0.0.1:8000/auth/.well-known/jwks.json"
    assert auth.introspection_url == "http://127.0.0.1:8000/auth/internal/introspect"
    assert auth.token_url == "http://127.0.0.1:8000/auth/oauth/token"
    assert (auth.issuer, auth.audience) == ("ksef-hub-auth", "ksef-hub")
    assert auth.client_secret is None


def test_read_from_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_AUTH__JWKS_URL", "http://auth-svc:8001/.well-known/jwks.json")
    monkeypatch.setenv("EXAMPLE_AUTH__CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("EXAMPLE_AUTH__INTROSPECTION_CACHE_S", "5")
    s = ExampleSettings()
    assert s.auth.jwks_url == "http://auth-svc:8001/.well-known/jwks.json"
    assert s.auth.introspection_cache_s == 5
    assert s.auth.client_secret is not None and s.auth.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in s.model_dump_json()


async def test_the_token_factory_serves_over_real_http(tokens: TokenFactory, clock: FakeClock) -> None:
    secret = tokens.add_service_client("t")
    async with tokens.serve() as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        auth = Authenticator(tokens.settings(base_url, client_secret=secret), service_name="t", clock=clock)
        assert (await auth.authenticate(tokens.mint(perms=["ksef.read"]))).perms == {"ksef.read"}
        assert (await auth.authenticate(tokens.issue_api_key(perms=["buffer.read"]))).ptype == "api_key"
        await auth.aclose()
    assert tokens.requests == ["/.well-known/jwks.json", "/oauth/token", "/internal/introspect"]
