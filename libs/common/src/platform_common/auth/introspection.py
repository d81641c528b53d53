"""API keys, checked by asking auth-svc (``POST /internal/introspect``) and remembering the answer briefly.

Only keys that parse (``platform_common.auth.api_keys``: format and checksum) are sent: a mistyped or
truncated key is refused locally and never costs auth-svc a request.

An answer, active or not, is kept for ``introspection_cache_s`` (and never past the key's own expiry), so a
revoked key stops working within that time. The cache is keyed by a keyed hash of the API key: the
plaintext is never stored, and the digests are worthless outside this process. Introspection needs a
service token, obtained with this service's client credentials and reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr

from platform_common.auth.clock import Clock
from platform_common.auth.principal import InvalidClaims, Principal

log = logging.getLogger(__name__)


class AuthServiceUnavailable(Exception):
    """auth-svc did not answer, or refused this service's own credentials (a configuration error)."""


class ServiceTokens:
    """This service's own bearer token for internal calls (OAuth 2 client credentials at auth-svc)."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        http: Callable[[], httpx.AsyncClient],
        *,
        margin_s: float,
        clock: Clock,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self._http = http
        self._margin = timedelta(seconds=margin_s)
        self.clock = clock
        self._token: str | None = None
        self._renew_at: datetime | None = None
        self._lock = asyncio.Lock()
        self.issued = 0

    def invalidate(self) -> None:
        self._token = None

    async def token(self) -> str:
        async with self._lock:
            now = self.clock()
            if self._token is not None and self._renew_at is not None and now < self._renew_at:
                return self._token
            try:
                response = await self._http().post(
                    self.token_url,
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.client_id,
                        "client_secret": self._client_secret.get_secret_value(),
                    },
                )
            except httpx.HTTPError as exc:
                raise AuthServiceUnavailable(f"token endpoint unreachable: {type(exc).__name__}") from exc
            if response.status_code != 200:
                log.error(
                    "auth-svc refused the client credentials of %s (HTTP %s)", self.client_id, response.status_code
                )
                raise AuthServiceUnavailable(f"token endpoint answered {response.status_code}")
            try:
                body = response.json()
                token, expires_in = str(body["access_token"]), float(body["expires_in"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuthServiceUnavailable("token endpoint answered nonsense") from exc
            # Renew ahead of expiry; a very short-lived token is renewed halfway through its life.
            lifetime = timedelta(seconds=expires_in)
            self._renew_at = now + (lifetime - self._margin if lifetime > 2 * self._margin else lifetime / 2)
            self._token = token
            self.issued += 1
            return token


class _Entry:
    __slots__ = ("expires_at", "principal")

    def __init__(self, principal: Principal | None, expires_at: datetime) -> None:
        self.principal = principal
        self.expires_at = expires_at


class ApiKeyIntrospector:
    def __init__(
        self,
        url: str,
        tokens: ServiceTokens,
        http: Callable[[], httpx.AsyncClient],
        *,
        cache_s: float,
        cache_size: int,
        clock: Clock,
    ) -> None:
        self.url = url
        self._tokens = tokens
        self._http = http
        self._ttl = timedelta(seconds=cache_s)
        self._cache_size = cache_size
        self.clock = clock
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._hash_key = secrets.token_bytes(32)
        # Requests sent to auth-svc; tests and metrics read it.
        self.requests = 0

    def _digest(self, api_key: str) -> bytes:
        return hmac.new(self._hash_key, api_key.encode(), hashlib.sha256).digest()

    async def introspect(self, api_key: str) -> Principal | None:
        """The key's principal, or None when auth-svc says it is not active (unknown, revoked, expired)."""
        digest = self._digest(api_key)
        now = self.clock()
        entry = self._cache.get(digest)
        if entry is not None and now < entry.expires_at:
            self._cache.move_to_end(digest)
            return entry.principal
        principal = await self._ask(api_key)
        expires_at = now + self._ttl
        if principal is not None and principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        self._cache[digest] = _Entry(principal, expires_at)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def _ask(self, api_key: str) -> Principal | None:
        for attempt in (1, 2):
            token = await self._tokens.token()
            self.requests += 1
            try:
                response = await self._http().post(
                    self.url, json={"api_key": api_key}, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError as exc:
                raise AuthServiceUnavailable(f"introspection unreachable: {type(exc).__name__}") from exc
            if response.status_code in (401, 403) and attempt == 1:
                # Our service token was refused (expired early, signing key withdrawn): get a new one once.
                self._tokens.invalidate()
                continue
            if response.status_code != 200:
                raise AuthServiceUnavailable(f"introspection answered {response.status_code}")
            return self._principal(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _principal(self, response: httpx.Response) -> Principal | None:
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise AuthServiceUnavailable("introspection answered nonsense") from exc
        if not isinstance(body, dict) or body.get("active") is not True:
            return None
        try:
            principal = Principal.from_claims(body)
        except InvalidClaims as exc:
            log.error("introspection answer breaks the contract: %s", exc)
            return None
        if principal.expires_at is not None and principal.expires_at <= self.clock():
            return None
        return principal
