"""Verifying access JWTs signed by auth-svc (see the contract in the README's authentication section)."""

from __future__ import annotations

import logging
from typing import Any

import jwt

from platform_common.auth.clock import Clock
from platform_common.auth.jwks import ALLOWED_ALGORITHMS, KeySource
from platform_common.auth.principal import InvalidClaims, Principal

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 8192
MAX_KID_LENGTH = 128


class InvalidToken(Exception):
    """Malformed, forged, expired, for another audience, or signed by an unknown key.

    The message says which check failed, for the log; the caller only ever hears "invalid token".
    """


class JwtVerifier:
    def __init__(self, keys: KeySource, *, issuer: str, audience: str, leeway_s: float, clock: Clock) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.clock = clock

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        # The algorithm is decided by the key, never by the token: "none", HS* (HMAC keyed with the public
        # key) and RS* are refused before any key is looked up.
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise InvalidToken("algorithm not allowed")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise InvalidToken("missing or malformed key id")
        key = await self.keys.get(kid)
        if key is None:
            raise InvalidToken("unknown key id")
        if key.algorithm != algorithm:
            raise InvalidToken("algorithm does not match the key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                # Time is checked below against the injected clock (PyJWT only knows the system clock).
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["iss", "aud", "sub", "exp", "iat", "ptype"],
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"rejected: {type(exc).__name__}") from None
        self._check_times(claims)
        try:
            return Principal.from_claims(claims)
        except InvalidClaims as exc:
            raise InvalidToken(f"claims: {exc}") from None

    def _check_times(self, claims: dict[str, Any]) -> None:
        now = self.clock().timestamp()
        exp, iat, nbf = _number(claims, "exp"), _number(claims, "iat"), _number(claims, "nbf")
        if exp is None or iat is None:
            raise InvalidToken("exp and iat are required")
        if exp <= now - self.leeway_s:
            raise InvalidToken("expired")
        if iat > now + self.leeway_s:
            raise InvalidToken("issued in the future")
        if nbf is not None and nbf > now + self.leeway_s:
            raise InvalidToken("not yet valid")


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"{name} must be a number")
    return float(value)
