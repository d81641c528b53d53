"""The signing keys of auth-svc, fetched from its JWKS and cached.

Fetched lazily on the first token and kept for ``jwks_cache_s``. A token whose key id is not in the cache
causes one refetch (auth-svc rotated its key); such refetches happen at most once per
``jwks_min_refetch_s``, so a stream of tokens with made-up key ids costs auth-svc one request per interval
(a new key first seen during that interval verifies after it). A failed fetch is not retried within the
interval either. Only Ed25519 (``EdDSA``) and P-256 (``ES256``) keys are taken; anything else in the
document is ignored, so a symmetric (``oct``) key can never become a verification key. When auth-svc
cannot be reached the keys already known stay in use; with none known, verification is unavailable (503,
not 401: the token may well be valid).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from platform_common.auth.clock import Clock

log = logging.getLogger(__name__)

# JWK (kty, crv) -> the one JWS algorithm that key may verify.
_KEY_TYPES: Mapping[tuple[str, str], str] = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}
ALLOWED_ALGORITHMS = frozenset(_KEY_TYPES.values())
MAX_KEYS = 32


class JwksUnavailable(Exception):
    """No key is known and auth-svc's JWKS cannot be fetched."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Ed25519PublicKey | EllipticCurvePublicKey


class KeySource(Protocol):
    async def get(self, kid: str) -> VerificationKey | None: ...


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """The usable keys of a JWKS document, by kid; unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        algorithm = _KEY_TYPES.get((str(jwk.get("kty")), str(jwk.get("crv"))))
        if not isinstance(kid, str) or not kid or algorithm is None:
            continue
        if jwk.get("alg", algorithm) != algorithm or jwk.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key
        except (jwt.PyJWTError, ValueError, TypeError):
            log.warning("JWKS key %s is malformed; ignored", kid)
            continue
        if isinstance(key, Ed25519PublicKey | EllipticCurvePublicKey):
            keys[kid] = VerificationKey(kid=kid, algorithm=algorithm, key=key)
    return keys


class JwksCache:
    def __init__(
        self,
        url: str,
        http: Callable[[], httpx.AsyncClient],
        *,
        cache_s: float,
        min_refetch_s: float,
        clock: Clock,
    ) -> None:
        self.url = url
        self._http = http
        self._cache_s = cache_s
        self._min_refetch_s = min_refetch_s
        self.clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: datetime | None = None
        # Rate limits: refetches for unknown kids, and retries after a failed fetch, each once per interval.
        self._unknown_kid_fetch_at: datetime | None = None
        self._failed_at: datetime | None = None
        self._lock = asyncio.Lock()
        # Requests sent to the JWKS URL (successful or not); tests and metrics read it.
        self.fetches = 0

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def _within(self, since: datetime | None, seconds: float, now: datetime) -> bool:
        return since is not None and (now - since).total_seconds() < seconds

    def _expired(self, now: datetime) -> bool:
        return not self._within(self._fetched_at, self._cache_s, now)

    def _backing_off(self, now: datetime) -> bool:
        return self._within(self._failed_at, self._min_refetch_s, now)

    def _may_refetch_for_unknown_kid(self, now: datetime) -> bool:
        return not self._within(self._unknown_kid_fetch_at, self._min_refetch_s, now) and not self._backing_off(now)

    async def get(self, kid: str) -> VerificationKey | None:
        if self._expired(self.clock()):
            await self._refresh(unknown_kid=None)
        key = self._keys.get(kid)
        if key is None and self._may_refetch_for_unknown_kid(self.clock()):
            await self._refresh(unknown_kid=kid)
            key = self._keys.get(kid)
        return key

    async def _refresh(self, *, unknown_kid: str | None) -> None:
        async with self._lock:
            now = self.clock()
            # Another request may have refreshed while this one waited for the lock.
            if unknown_kid is None:
                if not self._expired(now):
                    return
                if self._backing_off(now):
                    if not self._keys:
                        raise JwksUnavailable("auth-svc's JWKS could not be fetched recently")
                    return
            else:
                if unknown_kid in self._keys or not self._may_refetch_for_unknown_kid(now):
                    return
                self._unknown_kid_fetch_at = now
            self.fetches += 1
            try:
                response = await self._http().get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                self._failed_at = now
                if not self._keys:
                    log.error("JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
                    raise JwksUnavailable(f"JWKS fetch failed: {type(exc).__name__}") from exc
                log.warning("JWKS fetch from %s failed (%s); keeping the cached keys", self.url, type(exc).__name__)
                return
            log.info(
                "JWKS fetched from %s (%s): kids %s",
                self.url,
                "unknown kid" if unknown_kid else "refresh",
                sorted(keys),
            )
            self._keys = keys
            self._fetched_at = now
            self._failed_at = None
