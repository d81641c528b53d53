"""Test support for authentication: the every-endpoint-has-a-rule check, a fake clock, and ``TokenFactory``,
a stand-in for auth-svc (Ed25519 keys, JWKS, client credentials and API key introspection) that serves
in-process (``transport()``) or over real HTTP on loopback (``serve()``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from platform_common.auth.api_keys import new_api_key
from platform_common.auth.clock import Clock
from platform_common.auth.rules import Endpoint, endpoints
from platform_common.auth.settings import AuthClientSettings
from platform_common.testing.helpers import wait_until

# The office of every token ``TokenFactory`` mints unless told otherwise.
DEFAULT_OFFICE = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


async def open_clients(
    app: Any, *client_nips: str, office_id: uuid.UUID = DEFAULT_OFFICE, state: str = "active"
) -> None:
    """Let an office read these clients in a service app started alone (no approval-svc to follow): writes its
    client-access projection as the integration events would (``platform_common.client_access``)."""
    projection = app.state.runtime.client_access
    if projection is None:
        raise RuntimeError("this service keeps no client-access projection")
    async with projection.db.sessionmaker() as session, session.begin():
        await projection.seed(session, office_id, client_nips, state=state)


def assert_every_route_has_a_rule(app: Any, *, exempt: Mapping[str, str] | None = None) -> list[Endpoint]:
    """Fail, listing them, for endpoints (mounted apps included) whose dependencies hold no auth rule.

    ``exempt`` maps a path to the reason it needs none (e.g. a mounted static-files app). Also fails when a
    ``require(..., client_nip_param=...)`` names a parameter the endpoint does not have.
    """
    exempt = dict(exempt or {})
    found = list(endpoints(app))
    missing = [e for e in found if not e.rules and e.path not in exempt]
    broken = [f"{e}: {p}" for e in found for p in e.problems]
    lines = [f"  {e}" + (" - cannot carry dependencies" if e.opaque else "") for e in missing]
    lines += [f"  {b}" for b in broken]
    assert not lines, (
        "endpoints without an auth rule (add require(...), internal(), authenticated or public(reason)):\n"
        + "\n".join(lines)
    )
    return found


class FakeClock:
    """An aware-UTC clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kwargs: float) -> None:
        self.now += timedelta(seconds=seconds, **kwargs)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class _Key:
    kid: str
    private: Ed25519PrivateKey
    published: bool = True

    def jwk(self) -> dict[str, str]:
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": self.kid, "use": "sig", "alg": "EdDSA"}


@dataclass
class ApiKeyRecord:
    claims: dict[str, Any]
    revoked: bool = False


@dataclass
class TokenFactory:
    """Mints access tokens the way auth-svc does and answers auth-svc's endpoints for them."""

    clock: Clock = field(default_factory=FakeClock)
    issuer: str = "ksef-hub-auth"
    audience: str = "ksef-hub"
    ttl_s: int = 900
    service_clients: dict[str, str] = field(default_factory=dict)
    keys: list[_Key] = field(default_factory=list)
    api_keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    # Paths of every request the fake auth-svc answered, in order.
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.keys:
            self.rotate()

    @property
    def kid(self) -> str:
        return self.keys[-1].kid

    def rotate(self) -> str:
        """A new current key; the previous ones stay in the JWKS until ``withdraw``."""
        self.keys.append(_Key(kid=f"test-{uuid.uuid4().hex[:10]}", private=Ed25519PrivateKey.generate()))
        return self.kid

    def withdraw(self, kid: str) -> None:
        for key in self.keys:
            if key.kid == kid:
                key.published = False

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.jwk() for k in reversed(self.keys) if k.published]}

    def claims(
        self,
        *,
        sub: str = "00000000-0000-4000-8000-000000000001",
        ptype: str = "user",
        org: str | None = str(DEFAULT_OFFICE),
        org_kind: str | None = "office",
        roles: Sequence[str] = (),
        perms: Sequence[str] = (),
        nips: Sequence[str] = (),
        ttl_s: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        now = int(self.clock().timestamp())
        return {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "ptype": ptype,
            "org": org,
            "org_kind": org_kind,
            "roles": list(roles),
            "perms": list(perms),
            "nips": list(nips),
            "iat": now,
            "exp": now + (self.ttl_s if ttl_s is None else ttl_s),
            "jti": uuid.uuid4().hex,
            "amr": ["pwd"] if ptype == "user" else [],
            **extra,
        }

    def mint(self, *, kid: str | None = None, private_key: Ed25519PrivateKey | None = None, **claims: Any) -> str:
        """A token signed by the current key (or ``kid``'s). With ``private_key`` it is signed by that key
        instead and carries ``kid`` (default: the current one) whatever it is: a forgery."""
        kid = kid or self.kid
        if private_key is None:
            private_key = next(k.private for k in self.keys if k.kid == kid)
        return jwt.encode(self.claims(**claims), private_key, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})

    def forged(self, **claims: Any) -> str:
        """The current kid, signed by a key that auth-svc never had."""
        return self.mint(private_key=Ed25519PrivateKey.generate(), **claims)

    def unsigned(self, **claims: Any) -> str:
        """``alg: none`` with the current kid."""
        header = _b64url(json.dumps({"alg": "none", "kid": self.kid, "typ": "JWT"}).encode())
        return f"{header}.{_b64url(json.dumps(self.claims(**claims)).encode())}."

    def hmac_with_public_key(self, **claims: Any) -> str:
        """HS256 keyed with the published public key: the classic algorithm-confusion attack."""
        public = self.keys[-1].jwk()["x"].encode()
        header = {"alg": "HS256", "kid": self.kid, "typ": "JWT"}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(self.claims(**claims)).encode())}"
        signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64url(signature)}"

    def issue_api_key(self, **claims: Any) -> str:
        _parsed, key = new_api_key()
        body = self.claims(ptype="api_key", **claims)
        self.api_keys[key] = ApiKeyRecord(claims={**body, "roles": [], "exp": None})
        return key

    def revoke_api_key(self, key: str) -> None:
        self.api_keys[key].revoked = True

    def settings(self, base_url: str = "http://auth.test", **overrides: Any) -> AuthClientSettings:
        """Client settings that point at this fake (in-process base URL or the one ``serve`` yields)."""
        values: dict[str, Any] = {
            "jwks_url": f"{base_url}/.well-known/jwks.json",
            "introspection_url": f"{base_url}/internal/introspect",
            "token_url": f"{base_url}/oauth/token",
            "issuer": self.issuer,
            "audience": self.audience,
        }
        values.update(overrides)
        return AuthClientSettings(**values)

    def add_service_client(self, client_id: str, secret: str | None = None) -> SecretStr:
        """Register a service's client credentials; returns its secret (random unless given)."""
        secret = secret or secrets.token_urlsafe(24)
        self.service_clients[client_id] = secret
        return SecretStr(secret)

    # -- the fake auth-svc --------------------------------------------------------------------------

    def app(self) -> Starlette:
        async def jwks_endpoint(request: Request) -> Response:
            self.requests.append(request.url.path)
            return JSONResponse(self.jwks(), headers={"Cache-Control": "public, max-age=300"})

        async def token_endpoint(request: Request) -> Response:
            self.requests.append(request.url.path)
            # Parsed by hand: Starlette's form parser needs python-multipart, which the platform does not use.
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            if not secret or self.service_clients.get(client_id) != secret:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            token = self.mint(sub=client_id, ptype="service", org=None, org_kind=None, perms=["internal"], nips=["*"])
            return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": self.ttl_s})

        async def introspect_endpoint(request: Request) -> Response:
            self.requests.append(request.url.path)
            if not self._is_service_token(request.headers.get("authorization", "")):
                return JSONResponse({"error": "invalid_token"}, status_code=401)
            body = await request.json()
            record = self.api_keys.get(str(body.get("api_key", "")))
            if record is None or record.revoked:
                return JSONResponse({"active": False})
            return JSONResponse({"active": True, **record.claims})

        return Starlette(
            routes=[
                Route("/.well-known/jwks.json", jwks_endpoint),
                Route("/oauth/token", token_endpoint, methods=["POST"]),
                Route("/internal/introspect", introspect_endpoint, methods=["POST"]),
            ]
        )

    def _is_service_token(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next(k for k in self.keys if k.kid == kid and k.published)
            claims = jwt.decode(
                token,
                key.private.public_key(),
                algorithms=["EdDSA"],
                audience=self.audience,
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except (jwt.PyJWTError, StopIteration):
            return False
        return bool(claims.get("ptype") == "service" and claims["exp"] > self.clock().timestamp())

    def transport(self) -> httpx.AsyncBaseTransport:
        """The fake auth-svc in-process, for ``Authenticator.transport``."""
        return httpx.ASGITransport(app=self.app())

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        """The fake auth-svc over real HTTP on a free loopback port; yields its base URL."""
        async with serve_on_loopback(self.app()) as base_url:
            yield base_url


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The test runner owns the signal handlers.
        yield


def loopback_socket() -> socket.socket:
    """A TCP socket bound to 127.0.0.1 on a free port: for an app that must know its own URL before it serves
    (bound, not just probed for a free port, so nothing can take the port in between)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve_on_loopback(app: ASGIApp, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app (lifespan not run: the caller manages it) with uvicorn on 127.0.0.1:<free port>, or on
    ``sock`` (from ``loopback_socket``; closed afterwards)."""
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    async with serve_config_on_loopback(config, sock) as base_url:
        yield base_url


@asynccontextmanager
async def serve_config_on_loopback(config: uvicorn.Config, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """``serve_on_loopback`` for a uvicorn configuration of the caller's (forwarded headers, access log...); its
    host and port are ignored: the server listens on ``sock`` or a free loopback port."""
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        if task.done():
            task.result()  # raises what stopped it
        return server.started

    try:
        await wait_until(started, timeout=10, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
