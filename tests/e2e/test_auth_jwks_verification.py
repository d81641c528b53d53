"""Another service verifies auth-svc's credentials: buffer-svc's ``GET /clients/{nip}/whoami`` against a real
auth-svc (its app, served by uvicorn on loopback) whose JWKS, token and introspection URLs buffer-svc uses.

One fake clock drives both services; nothing sleeps.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from auth_svc.testing import NIPS, SERVICE_CLIENT, SERVICE_SECRET, AuthHarness, open_harness
from buffer_svc.main import create_app as create_buffer_app
from buffer_svc.settings import BufferSettings
from platform_common.auth import Authenticator
from platform_common.auth.api_keys import parse_api_key
from platform_common.auth.settings import AuthClientSettings
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import open_clients, serve_on_loopback

BUFFER_SECRET = "buffer-svc-e2e-secret"  # test service credential
C, D = NIPS["C"], NIPS["D"]
JWKS = "/.well-known/jwks.json"


class Recording(httpx.AsyncBaseTransport):
    """Real HTTP, with the path of every request buffer-svc sends to auth-svc written down."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Platform:
    auth: AuthHarness
    auth_url: str
    buffer: httpx.AsyncClient
    authenticator: Authenticator
    sent: Recording

    def fetches(self) -> int:
        return self.sent.paths.count(JWKS)

    async def whoami(self, credential: str | None, nip: str = C) -> httpx.Response:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return await self.buffer.get(f"/clients/{nip}/whoami", headers=headers)

    async def token(self, user: str) -> str:
        return await self.auth.token(user)


@pytest.fixture
async def platform(db_url: str, tmp_path: Path) -> AsyncIterator[Platform]:
    credentials = {SERVICE_CLIENT: SecretStr(SERVICE_SECRET), "buffer-svc": SecretStr(BUFFER_SECRET)}
    async with open_harness(db_url, service_credentials=credentials) as auth, serve_on_loopback(auth.app) as auth_url:
        settings = BufferSettings(
            db=DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'buffer.db'}")),
            messaging=MessagingSettings(transport="inprocess"),
            auth=AuthClientSettings(
                jwks_url=f"{auth_url}/.well-known/jwks.json",
                introspection_url=f"{auth_url}/internal/introspect",
                token_url=f"{auth_url}/oauth/token",
                client_secret=SecretStr(BUFFER_SECRET),
                introspection_cache_s=30,
                jwks_cache_s=300,
                jwks_min_refetch_s=10,
            ),
        )
        app = create_buffer_app(settings, migrate_on_start=True)
        authenticator: Authenticator = app.state.authenticator
        sent = Recording()
        authenticator.clock, authenticator.transport = auth.clock, sent
        async with LifespanManager(app) as manager:
            # The harness's active relations, as buffer-svc's projection holds them once approval-svc announced them.
            await open_clients(app, C, office_id=auth.world.orgs["A"])
            await open_clients(app, D, office_id=auth.world.orgs["B"])
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://buffer") as buffer:
                yield Platform(auth, auth_url, buffer, authenticator, sent)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


async def test_a_valid_token_is_accepted_with_its_claims(platform: Platform) -> None:
    r = await platform.whoami(await platform.token("c_owner"))
    assert r.status_code == 200, r.text
    caller = r.json()["caller"]
    assert caller["ptype"] == "user"
    assert caller["org"] == str(platform.auth.world.orgs["C"])
    assert caller["roles"] == ["client_owner"]
    assert caller["nips"] == [C]
    assert "buffer.read" in caller["perms"]
    assert platform.fetches() == 1


async def test_missing_expired_forged_and_alg_none_tokens_are_401(platform: Platform) -> None:
    token = await platform.token("c_owner")
    header, claims = _parts(token)

    missing = await platform.whoami(None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")

    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": header["kid"]})
    unsigned = ".".join(
        [_b64url(json.dumps({"alg": "none", "kid": header["kid"]}).encode()), _b64url(json.dumps(claims).encode()), ""]
    )
    escalated = jwt.encode(
        {**claims, "nips": ["*"], "perms": [*claims["perms"], "ops"]},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": header["kid"]},
    )
    for bad in (forged, unsigned, escalated, token[:-4] + "AAAA"):
        r = await platform.whoami(bad)
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"]

    assert (await platform.whoami(token)).status_code == 200
    platform.auth.clock.advance(900 + platform.authenticator.settings.leeway_s)  # access TTL + leeway
    assert (await platform.whoami(token)).status_code == 401


async def test_missing_permission_is_403(platform: Platform) -> None:
    service_token = (await platform.auth.service_headers())["Authorization"].removeprefix("Bearer ")
    r = await platform.whoami(service_token)
    assert r.status_code == 403
    assert r.json()["permission"] == "buffer.read"


async def test_a_client_outside_the_token_is_404(platform: Platform) -> None:
    token = await platform.token("c_owner")
    assert (await platform.whoami(token, nip=D)).status_code == 404
    other_office = await platform.token("b_admin")
    assert (await platform.whoami(other_office, nip=D)).status_code == 200


async def test_key_rotation(platform: Platform) -> None:
    old_token = await platform.token("c_owner")
    assert (await platform.whoami(old_token)).status_code == 200
    assert platform.fetches() == 1
    old_kid = _parts(old_token)[0]["kid"]

    rotated = await platform.auth.client.post("/admin/signing-keys/rotate", headers=await platform.auth.headers("ops"))
    assert rotated.status_code == 200, rotated.text
    new_token = await platform.token("c_owner")
    assert _parts(new_token)[0]["kid"] != old_kid

    # The previous key is still in the JWKS and in the cache: its tokens verify without a refetch.
    assert (await platform.whoami(old_token)).status_code == 200
    assert platform.fetches() == 1
    # The new key id is unknown: exactly one refetch, then both verify from the cache.
    assert (await platform.whoami(new_token)).status_code == 200
    assert platform.fetches() == 2
    assert (await platform.whoami(old_token)).status_code == 200
    assert (await platform.whoami(new_token)).status_code == 200
    assert platform.fetches() == 2

    # Made-up key ids cannot make buffer-svc hammer auth-svc: one refetch per interval at most.
    _header, claims = _parts(new_token)
    for i in range(5):
        fake = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": f"made-up-{i}"})
        assert (await platform.whoami(fake)).status_code == 401
    assert platform.fetches() == 2
    platform.auth.clock.advance(10)
    fake = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "made-up-later"})
    assert (await platform.whoami(fake)).status_code == 401
    assert platform.fetches() == 3


async def test_api_key_through_introspection_and_revocation_within_the_cache_time(
    platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    org = platform.auth.world.orgs["A"]
    admin = await platform.auth.headers("a_admin")
    created = await platform.auth.client.post(
        f"/organisations/{org}/api-keys", json={"name": "ERP", "perms": ["buffer.read"], "nips": [C]}, headers=admin
    )
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]

    r = await platform.buffer.get(f"/clients/{C}/whoami", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    assert r.json()["caller"] | {"perms": None} == {
        "id": key_id,
        "ptype": "api_key",
        "org": str(org),
        "org_kind": "office",
        "roles": [],
        "perms": None,
        "nips": [C],
    }
    assert (await platform.whoami(key, nip=D)).status_code == 404
    assert platform.sent.paths.count("/oauth/token") == 1
    assert platform.sent.paths.count("/internal/introspect") == 1

    revoked = await platform.auth.client.delete(f"/organisations/{org}/api-keys/{key_id}", headers=admin)
    assert revoked.status_code == 204
    platform.auth.clock.advance(29)
    assert (await platform.whoami(key)).status_code == 200, "still cached"
    platform.auth.clock.advance(1)  # introspection_cache_s
    assert (await platform.whoami(key)).status_code == 401
    assert platform.sent.paths.count("/internal/introspect") == 2

    secret = parse_api_key(key).secret
    assert key not in caplog.text and secret not in caplog.text
