"""The simulator's JWTs and the bearer-token dependencies (REFERENCE.md §2, §3.8).

Three token types, as observed on TEST: ``AuthenticationToken`` (poll the auth status, redeem), ``ContextToken``
(the access token for everything else) and ``RefreshToken``. HS256 with a secret kept in the state file. Access
tokens carry the permissions computed when they were issued: like the real service, a revoked permission stays
usable until the token expires and a refresh picks up the current set.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt
from fastapi import Request

from ksef_sim.errors import Forbidden, Unauthorized
from ksef_sim.store import Store

AUTHENTICATION_TOKEN = "AuthenticationToken"
ACCESS_TOKEN = "ContextToken"
REFRESH_TOKEN = "RefreshToken"
ISSUER = "ksef-api-sim"


@dataclass(frozen=True)
class Identifier:
    """``{type, value}`` as in the spec (Nip, InternalId, NipVatUe, PeppolId, Pesel, Fingerprint, ...)."""

    type: str
    value: str


@dataclass(frozen=True)
class Caller:
    """Who is calling, in which context, with which permissions (from a verified access token)."""

    auth_reference_number: str
    context: Identifier
    subject: Identifier
    auth_method: str  # Token | XadesSignature | ...
    permissions: frozenset[str]
    ksef_token_reference: str | None = None
    allowed_ips: tuple[str, ...] = field(default_factory=tuple)

    def has_any(self, *permissions: str) -> bool:
        return any(p in self.permissions for p in permissions)

    def require_any(self, *permissions: str) -> None:
        """403 ``missing-permissions`` unless the caller holds at least one of ``permissions``."""
        if not self.has_any(*permissions):
            raise Forbidden(
                "missing-permissions",
                "Brak wymaganych uprawnień do wykonania operacji w bieżącym kontekście.",
                {"requiredAnyOfPermissions": list(permissions), "presentPermissions": sorted(self.permissions)},
            )


class TokenService:
    def __init__(self, store: Store) -> None:
        secret = store.get_meta("jwt_secret")
        if not secret:
            secret = secrets.token_urlsafe(48)
            store.set_meta("jwt_secret", secret)
        self._secret: str = secret

    def encode(self, claims: dict[str, Any], *, now: datetime, ttl: timedelta) -> tuple[str, datetime]:
        valid_until = now + ttl
        payload = {
            **claims,
            "iat": int(now.timestamp()),
            "exp": int(valid_until.timestamp()),
            "iss": ISSUER,
            "aud": ISSUER,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._secret, algorithm="HS256"), valid_until

    def decode(self, token: str, *, expected_type: str, now: datetime) -> dict[str, Any]:
        """Verify signature, type and expiry (against the simulator clock); 401 otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=ISSUER,
                issuer=ISSUER,
                # exp is checked below against the simulator clock; iat too would be compared with the wall clock,
                # which rejects every token minted after /_sim/clock moved the simulator forward.
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized("Nieprawidłowy token.") from exc
        if claims.get("typ") != expected_type:
            raise Unauthorized("Nieprawidłowy typ tokena.")
        if claims["exp"] <= now.timestamp():
            raise Unauthorized("Token wygasł.")
        return claims

    def issue_access(
        self,
        *,
        now: datetime,
        ttl: timedelta,
        auth_reference_number: str,
        context: Identifier,
        subject: Identifier,
        auth_method: str,
        permissions: frozenset[str] | set[str],
        ksef_token_reference: str | None = None,
        allowed_ips: tuple[str, ...] = (),
    ) -> tuple[str, datetime]:
        return self.encode(
            {
                "typ": ACCESS_TOKEN,
                "arn": auth_reference_number,
                "cit": context.type,
                "civ": context.value,
                "sit": subject.type,
                "siv": subject.value,
                "aum": auth_method,
                "per": sorted(permissions),
                "tkr": ksef_token_reference,
                "ips": list(allowed_ips),
            },
            now=now,
            ttl=ttl,
        )

    @staticmethod
    def caller_from_claims(claims: dict[str, Any]) -> Caller:
        return Caller(
            auth_reference_number=claims["arn"],
            context=Identifier(claims["cit"], claims["civ"]),
            subject=Identifier(claims["sit"], claims["siv"]),
            auth_method=claims["aum"],
            permissions=frozenset(claims.get("per") or ()),
            ksef_token_reference=claims.get("tkr"),
            allowed_ips=tuple(claims.get("ips") or ()),
        )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    return token.strip()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "127.0.0.1"
