"""Signing keys (Ed25519), the JWKS, and signing and verifying access tokens.

Rotation: a new key becomes current and the previous one is marked retired. A retired key stays in the JWKS
for ``access_token_ttl_s + signing_key_cache_s`` after its retirement (its last token has expired by then,
even if another replica kept signing with its cached copy for a while); then it leaves the JWKS and its
private half is erased. Private keys are stored encrypted (AES-256-GCM, bound to the kid) and never leave
this module.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_svc.clock import Clock
from auth_svc.crypto import SecretBox, new_public_id
from auth_svc.errors import forbidden
from auth_svc.principal import Principal
from auth_svc.settings import AuthSettings
from auth_svc.signing_keys.repository import SigningKeyRepository
from auth_svc.unit_of_work import UnitOfWork

ALGORITHM = "EdDSA"


class InvalidToken(Exception):
    """The token is malformed, forged, expired, or signed by an unknown or withdrawn key."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class _SigningKey:
    kid: str
    private: Ed25519PrivateKey
    loaded_at: datetime


@dataclass(frozen=True)
class _PublicKey:
    key: Ed25519PublicKey
    retired_at: datetime | None
    loaded_at: datetime


class KeyStore:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        settings: AuthSettings,
        clock: Clock,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._settings = settings
        self.clock = clock
        self._current: _SigningKey | None = None
        self._public: dict[str, _PublicKey] = {}

    @property
    def _cache_for(self) -> timedelta:
        return timedelta(seconds=self._settings.signing_key_cache_s)

    @property
    def _published_for(self) -> timedelta:
        """How long a retired key stays in the JWKS."""
        return timedelta(seconds=self._settings.access_token_ttl_s + self._settings.signing_key_cache_s)

    def _new_key_row(self, now: datetime) -> tuple[dict[str, Any], Ed25519PrivateKey]:
        private = Ed25519PrivateKey.generate()
        kid = f"{now:%Y%m%d}-{new_public_id(10)}"
        public_raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        private_raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        row = {
            "kid": kid,
            "algorithm": ALGORITHM,
            "public_jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64url(public_raw)},
            "private_key_enc": self._box.encrypt(private_raw, aad=kid),
            "created_at": now,
            "retired_at": None,
        }
        return row, private

    async def current(self) -> _SigningKey:
        now = self.clock()
        if self._current is not None and now - self._current.loaded_at < self._cache_for:
            return self._current
        async with self._sessionmaker() as session, session.begin():
            repo = SigningKeyRepository(session)
            row = await repo.newest_current()
            if row is None:
                # First start: two replicas may both create one; both keys are published, the newest signs.
                values, private = self._new_key_row(now)
                await repo.add(values)
                kid = str(values["kid"])
            else:
                kid = row.kid
                private = Ed25519PrivateKey.from_private_bytes(self._box.decrypt(row.private_key_enc, aad=kid))
        self._current = _SigningKey(kid=kid, private=private, loaded_at=now)
        return self._current

    async def rotate(self, session: AsyncSession) -> str:
        """Make a new key current inside the caller's transaction; return its kid."""
        now = self.clock()
        values, _private = self._new_key_row(now)
        repo = SigningKeyRepository(session)
        await repo.retire_current(now)
        # Keys that have left the JWKS can never be used again: forget their private half.
        await repo.erase_private_keys_retired_before(now - self._published_for)
        await repo.add(values)
        self._current = None
        self._public.clear()
        return str(values["kid"])

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        await self.current()  # a fresh installation publishes its first key at once
        now = self.clock()
        async with self._sessionmaker() as session:
            rows = await SigningKeyRepository(session).published(now - self._published_for)
        return {"keys": [{**r.public_jwk, "kid": r.kid, "use": "sig", "alg": r.algorithm} for r in rows]}

    async def keys_overview(self) -> list[dict[str, Any]]:
        now = self.clock()
        async with self._sessionmaker() as session:
            rows = await SigningKeyRepository(session).overview()
        out = []
        for r in rows:
            if r.retired_at is None:
                status = "current"
            elif r.retired_at >= now - self._published_for:
                status = "previous"
            else:
                status = "withdrawn"
            out.append({"kid": r.kid, "created_at": r.created_at, "retired_at": r.retired_at, "status": status})
        return out

    async def sign(self, claims: dict[str, Any]) -> str:
        key = await self.current()
        return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"})

    async def _public_key(self, kid: str) -> Ed25519PublicKey | None:
        now = self.clock()
        cached = self._public.get(kid)
        if cached is None or now - cached.loaded_at >= self._cache_for:
            async with self._sessionmaker() as session:
                row = await SigningKeyRepository(session).public(kid)
            if row is None:
                self._public.pop(kid, None)
                return None
            key = Ed25519PublicKey.from_public_bytes(_b64url_decode(row.public_jwk["x"]))
            cached = _PublicKey(key=key, retired_at=row.retired_at, loaded_at=now)
            self._public[kid] = cached
        if cached.retired_at is not None and cached.retired_at < now - self._published_for:
            return None
        return cached.key

    async def verify(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        """The claims of a valid access token; ``InvalidToken`` otherwise (never says which check failed)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        # Only our algorithm: "none" and HMAC-with-the-public-key confusions are refused before any key lookup.
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise InvalidToken("unexpected algorithm or no key id")
        key = await self._public_key(kid)
        if key is None:
            raise InvalidToken("unknown key id")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=audience or self._settings.audience,
                issuer=self._settings.issuer,
                # Time is checked below against the injectable clock.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["exp", "iat", "sub", "jti", "ptype"],
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token") from exc
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= self.clock().timestamp():
            raise InvalidToken("expired token")
        return claims


def new_jti() -> str:
    return uuid.uuid4().hex


class SigningKeys:
    """The operators' use cases on signing keys."""

    def __init__(self, uow: UnitOfWork, store: KeyStore) -> None:
        self._uow = uow
        self.store = store

    async def rotate(self, actor: Principal) -> dict[str, Any]:
        if not actor.is_ops:
            raise forbidden("Only platform operators rotate signing keys.")
        async with self._uow.begin() as tx:
            kid = await self.store.rotate(tx.session)
            await tx.audit("signing_key.rotated", orgs=[None], actor=actor, subject=kid)
        return {"kid": kid, "keys": await self.store.keys_overview()}

    async def overview(self, actor: Principal) -> list[dict[str, Any]]:
        if not actor.is_ops:
            raise forbidden("Only platform operators see signing keys.")
        return await self.store.keys_overview()
