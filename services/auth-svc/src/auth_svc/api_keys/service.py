"""Use cases of API keys, and introspection (``POST /internal/introspect``) for the other services.

The plaintext key is returned once at creation; only the SHA-256 of its secret part is stored. A key is
parsed (format and checksum) before anything is looked up: a mistyped key never reaches the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row

from auth_svc.api_keys.repository import ApiKeyRepository
from auth_svc.crypto import same_hash, token_hash
from auth_svc.errors import forbidden, not_found
from auth_svc.members.service import Members
from auth_svc.organisations.domain import parse_nip
from auth_svc.organisations.service import Organisations
from auth_svc.principal import Principal
from auth_svc.roles import ALL_CLIENTS, Perm
from auth_svc.settings import AuthSettings
from auth_svc.signing_keys.service import InvalidToken, KeyStore
from auth_svc.unit_of_work import UnitOfWork
from platform_common.auth.api_keys import InvalidApiKey, new_api_key, parse_api_key
from platform_common.problems import Problem

# Permissions that only the platform grants: never in an API key.
_NEVER_IN_KEYS = frozenset({Perm.OPS, Perm.INTERNAL})


@dataclass(frozen=True)
class IssuedKey:
    """A created key: ``key`` is shown to its creator this once."""

    key: str
    record: dict[str, Any]


def _key_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "perms": row.perms,
        "nips": row.nips,
        "created_by": row.created_by,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
    }


class ApiKeys:
    def __init__(
        self,
        uow: UnitOfWork,
        settings: AuthSettings,
        keys: KeyStore,
        organisations: Organisations,
        members: Members,
    ) -> None:
        self._uow = uow
        self._settings = settings
        self._keys = keys
        self._organisations = organisations
        self._members = members

    async def create(
        self,
        actor: Principal,
        org_id: uuid.UUID,
        name: str,
        perms: list[str],
        nips: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        async with self._uow.begin() as tx:
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE, ops_allowed=False)
            if actor.ptype != "user":
                raise forbidden("API keys are created by users.")
            wanted = set(perms)
            grantable = actor.perms - _NEVER_IN_KEYS
            if not wanted or not wanted <= grantable:
                raise Problem(
                    422,
                    "Permissions not grantable",
                    "A key gets a non-empty subset of your permissions.",
                    code="invalid-perms",
                )
            key_nips = sorted({parse_nip(n) for n in nips}) if nips is not None else None
            if key_nips is not None and ALL_CLIENTS not in actor.nips and not set(key_nips) <= set(actor.nips):
                raise Problem(
                    422, "Clients not grantable", "A key reaches only clients you can reach.", code="invalid-nips"
                )
            now = tx.clock()
            if expires_at is not None and expires_at <= now:
                raise Problem(422, "Expiry in the past", code="invalid-expiry")
            parsed, plaintext = new_api_key()
            repo = ApiKeyRepository(tx.session)
            await repo.add_api_key(
                id=parsed.key_id,
                organisation_id=org_id,
                name=name,
                secret_hash=token_hash(parsed.secret),
                perms=sorted(wanted),
                nips=key_nips,
                created_by=actor.user_id,
                created_at=now,
                expires_at=expires_at,
            )
            await tx.audit(
                "api_key.created", orgs=[org_id], actor=actor, subject=parsed.key_id, name=name, perms=sorted(wanted)
            )
            row = await repo.api_key(parsed.key_id)
            assert row is not None
            return IssuedKey(key=plaintext, record=_key_view(row))

    async def list(self, actor: Principal, org_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._uow.begin() as tx:
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            return [_key_view(r) for r in await ApiKeyRepository(tx.session).api_keys_of(org_id)]

    async def revoke(self, actor: Principal, org_id: uuid.UUID, key_id: str) -> None:
        async with self._uow.begin() as tx:
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            repo = ApiKeyRepository(tx.session)
            row = await repo.api_key(key_id)
            if row is None or row.organisation_id != org_id:
                raise not_found("API key")
            if row.revoked_at is None:
                await repo.update_api_key(key_id, revoked_at=tx.clock())
                await tx.audit("api_key.revoked", orgs=[org_id], actor=actor, subject=key_id)

    async def authenticate(self, plaintext: str) -> Principal | None:
        """The principal of a live API key, or None. Its clients are resolved now: a relation that stopped
        being active drops out at once."""
        try:
            parsed = parse_api_key(plaintext)
        except InvalidApiKey:
            return None
        async with self._uow.begin() as tx:
            repo = ApiKeyRepository(tx.session)
            row = await repo.api_key(parsed.key_id)
            now = tx.clock()
            if row is None or not same_hash(row.secret_hash, parsed.secret):
                return None
            if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
                return None
            org = await self._organisations.row(tx, row.organisation_id)
            if org is None:
                return None
            # A key never outgrows its creator: it holds its stored scope only as far as the creator holds it
            # now, so demoting or restricting the creator narrows their keys at once (within the verifiers'
            # introspection cache), and a creator who left or was deactivated leaves keys that open nothing.
            creator = await self._members.current_grant(tx, row.created_by, org.id)
            if creator is None:
                return None
            perms = frozenset(row.perms) & creator.perms
            if not perms:
                return None
            touch = timedelta(seconds=self._settings.api_key_touch_interval_s)
            if row.last_used_at is None or now - row.last_used_at >= touch:
                await repo.update_api_key(parsed.key_id, last_used_at=now)
            # The creator's NIPs: all the office's clients, those of a member limited to some, or the company's own
            # NIP. A key narrows them further; which of them are active every service asks live.
            if ALL_CLIENTS in creator.nips:
                nips = list(row.nips) if row.nips is not None else [ALL_CLIENTS]
            else:
                nips = [n for n in creator.nips if row.nips is None or n in row.nips]
            return Principal(
                sub=parsed.key_id,
                ptype="api_key",
                org=org.id,
                org_kind=org.kind,
                roles=(),
                perms=perms,
                nips=tuple(nips),
            )

    async def introspect(self, api_key: str | None = None, token: str | None = None) -> dict[str, Any]:
        principal: Principal | None = None
        exp: int | None = None
        if api_key:
            principal = await self.authenticate(api_key)
            if principal is not None:
                async with self._uow.begin() as tx:
                    row = await ApiKeyRepository(tx.session).api_key(principal.sub)
                    if row is not None and row.expires_at is not None:
                        exp = int(row.expires_at.timestamp())
        elif token:
            try:
                claims = await self._keys.verify(token)
                principal, exp = Principal.from_claims(claims), int(claims["exp"])
            except (InvalidToken, KeyError, ValueError):
                principal = None
        if principal is None:
            return {"active": False}
        return {"active": True, **principal.claims(), "exp": exp}
