"""Authentication in the embedded platform: every endpoint has a rule, the services find auth-svc at the URL the
runner serves (whatever its port), and a demo user's token and an API key made at /auth open another service.

The end-to-end test serves the embedded app with uvicorn on a loopback port, because the services fetch the JWKS,
their service tokens and API key introspection over HTTP, exactly as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.routing import Mount

from auth_svc.demo import ACCOUNTANT, CLIENT_ACTIVE, CLIENT_PENDING, DEMO_PASSWORD, OFFICE_ADMIN
from auth_svc.settings import AuthSettings
from ksef_hub.embedded import AUTH_PREFIX, KSEF_SIM_PREFIX, SERVICES, create_embedded_app, local_url
from ksef_hub.web_ui import ASSETS_PATH
from platform_common.auth.rules import RuleKind, endpoints
from platform_common.settings import ServiceSettings
from platform_common.testing.auth import assert_every_route_has_a_rule, loopback_socket, serve_on_loopback

ACTIVE_NIP, PENDING_NIP = CLIENT_ACTIVE[1], CLIENT_PENDING[1]
OTHER_SERVICES = [s for s in SERVICES if s.prefix != AUTH_PREFIX]


def _mounted_settings(app: FastAPI) -> dict[str, ServiceSettings]:
    found = {}
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, FastAPI) and hasattr(route.app.state, "settings"):
            found[route.path] = route.app.state.settings
    return found


class TestRouteRules:
    def test_every_endpoint_of_the_embedded_app_has_a_rule(self, tmp_path: Path) -> None:
        app = create_embedded_app(tmp_path / "data")
        # The simulator stands in for the Ministry's KSeF and checks KSeF's own tokens, as KSeF does: the
        # platform's rules do not apply to it.
        sim = {
            e.path: "KSeF 2.0 simulator: emulates KSeF's own authentication"
            for e in endpoints(app)
            if e.path.startswith(f"{KSEF_SIM_PREFIX}/")
        }
        assert sim, "the simulator's routes are visible to the check"
        # The web UI's bundle (scripts, styles): files of the build, no datum of anybody's.
        static = {f"{ASSETS_PATH}/{{path}}": "the web UI's static bundle"}
        found = {e.path: e for e in assert_every_route_has_a_rule(app, exempt=sim | static)}
        # The check saw into every mounted service (an opaque mount would have no rules and fail above).
        for path in ("/auth/login", "/buffer/clients/{nip}/whoami", "/gateway/readyz", "/notify/healthz"):
            assert found[path].rules, path
        for path in ("/", "/services", "/ui-config", "/healthz"):
            assert [r.kind for r in found[path].rules] == [RuleKind.PUBLIC], path


class TestAuthWiring:
    def test_local_url_calls_wildcard_binds_on_loopback(self) -> None:
        assert local_url("0.0.0.0", 9000) == "http://127.0.0.1:9000"  # noqa: S104  # a bind address, not bound
        assert local_url("::", 9000) == "http://[::1]:9000"
        assert local_url("192.0.2.7", 8000) == "http://192.0.2.7:8000"

    def test_services_reach_auth_svc_at_the_served_url_with_their_own_secret(self, tmp_path: Path) -> None:
        mounted = _mounted_settings(create_embedded_app(tmp_path / "data", public_url="http://127.0.0.1:9123/"))
        auth = mounted[AUTH_PREFIX]
        assert isinstance(auth, AuthSettings)
        assert auth.link_base_url == "http://127.0.0.1:9123/auth"
        registered = {name: secret.get_secret_value() for name, secret in auth.service_credentials.items()}
        for service in OTHER_SERVICES:
            client = mounted[service.prefix].auth
            assert client.jwks_url == "http://127.0.0.1:9123/auth/.well-known/jwks.json"
            assert client.introspection_url == "http://127.0.0.1:9123/auth/internal/introspect"
            assert client.token_url == "http://127.0.0.1:9123/auth/oauth/token"
            assert client.client_id == service.name
            assert client.client_secret is not None
            assert registered[service.name] == client.client_secret.get_secret_value()
        assert len({registered[s.name] for s in OTHER_SERVICES}) == len(OTHER_SERVICES), "one secret per service"

        again = _mounted_settings(create_embedded_app(tmp_path / "data"))[AUTH_PREFIX]
        assert isinstance(again, AuthSettings)
        assert all(
            again.service_credentials[s.name].get_secret_value() != registered[s.name] for s in OTHER_SERVICES
        ), "secrets are made afresh for every run"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    sock = loopback_socket()
    # Not port 8000: the services must call auth-svc where this app is actually served.
    app = create_embedded_app(tmp_path / "data", public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    async with (
        LifespanManager(app, startup_timeout=60),
        serve_on_loopback(app, sock) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield app, client


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_a_demo_login_and_an_api_key_open_another_service(hub: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = hub
    admin = await _login(client, OFFICE_ADMIN)
    office = (await client.get("/auth/me", headers=admin)).json()["context"]["org"]

    # buffer-svc verifies the JWT against the JWKS it fetched from /auth on this very port.
    whoami = await client.get(f"/buffer/clients/{ACTIVE_NIP}/whoami", headers=admin)
    assert whoami.status_code == 200, whoami.text
    caller = whoami.json()["caller"]
    assert (caller["ptype"], caller["org"], caller["roles"]) == ("user", office, ["office_admin"])
    # The token names no clients: buffer-svc's projection of the integrations decides, on every request.
    assert caller["nips"] == ["*"]
    # The pending client is not the office's to read yet; the accountant limited to the active one reads it.
    assert (await client.get(f"/buffer/clients/{PENDING_NIP}/whoami", headers=admin)).status_code == 404
    accountant = await _login(client, ACCOUNTANT)
    assert (await client.get(f"/buffer/clients/{ACTIVE_NIP}/whoami", headers=accountant)).status_code == 200
    assert (await client.get(f"/buffer/clients/{ACTIVE_NIP}/whoami")).status_code == 401

    # An API key made at /auth works at buffer-svc: buffer-svc introspects it with its own client secret.
    created = await client.post(
        f"/auth/organisations/{office}/api-keys",
        json={"name": "ERP", "perms": ["buffer.read"], "nips": [ACTIVE_NIP]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    by_key = await client.get(f"/buffer/clients/{ACTIVE_NIP}/whoami", headers={"X-API-Key": key})
    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["caller"]["ptype"] == "api_key" and by_key.json()["caller"]["id"] == created.json()["id"]
    # Its scope comes from the introspection answer: no buffer.read, no entry.
    narrow = await client.post(
        f"/auth/organisations/{office}/api-keys", json={"name": "KSeF only", "perms": ["ksef.read"]}, headers=admin
    )
    assert narrow.status_code == 201, narrow.text
    denied = await client.get(f"/buffer/clients/{ACTIVE_NIP}/whoami", headers={"X-API-Key": narrow.json()["key"]})
    assert denied.status_code == 403, denied.text
    forged = key[:-4] + "xxxx"
    assert (await client.get(f"/buffer/clients/{ACTIVE_NIP}/whoami", headers={"X-API-Key": forged})).status_code == 401

    # Every other service holds working client credentials too (each will introspect API keys the same way).
    mounted = _mounted_settings(app)
    for service in OTHER_SERVICES:
        secret = mounted[service.prefix].auth.client_secret
        assert secret is not None
        token = await client.post(
            "/auth/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": service.name,
                "client_secret": secret.get_secret_value(),
            },
        )
        assert token.status_code == 200, (service.name, token.text)
