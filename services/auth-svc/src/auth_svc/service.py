"""Use cases of auth-svc: each one a transaction; they add outgoing events to the outbox.

Access rules for auth-svc's own resources, applied in ``_org_access``: a caller acting outside its
organisation gets 404 (it must not learn that another tenant's resource exists), inside it 403 when the
permission is missing. Platform operators (``ops``) may read and administer every organisation here, except
creating API keys, which act on tenant data.

Secret values (passwords, tokens, API key secrets, TOTP seeds) are never logged or put in audit details.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pyotp
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_svc.clock import Clock
from auth_svc.crypto import (
    DEVELOPMENT_SECRETS_KEY,
    Passwords,
    SecretBox,
    new_public_id,
    new_token,
    same_hash,
    token_hash,
)
from auth_svc.domain.roles import (
    ADMIN_ROLES,
    ALL_CLIENTS,
    ROLE_PERMISSIONS,
    OrgKind,
    Perm,
    RelationState,
    Role,
    permissions_of,
    role_fits,
)
from auth_svc.events import PasswordResetRequested, UserInvited
from auth_svc.keys import InvalidToken, KeyStore, new_jti
from auth_svc.principal import Principal
from auth_svc.repository import Repository
from auth_svc.settings import AuthSettings
from platform_common.messaging.outbox import Outbox
from platform_common.nip import InvalidNip, normalize_nip
from platform_common.problems import Problem

log = logging.getLogger(__name__)

API_KEY_PREFIX = "khk_"
# Permissions that only the platform grants: never in an API key.
_NEVER_IN_KEYS = frozenset({Perm.OPS, Perm.INTERNAL})


class RateLimited(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("rate limited")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105  # the OAuth token type, not a secret


@dataclass(frozen=True)
class IssuedSecret:
    """A use case's result that holds a secret the caller shows once (an API key) or mails (a link)."""

    id: str
    secret: str
    expires_at: datetime | None
    record: dict[str, Any]


def not_found(what: str = "Resource") -> Problem:
    return Problem(404, "Not Found", f"{what} not found.", code="not-found")


def forbidden(detail: str = "You are not allowed to do this.") -> Problem:
    return Problem(403, "Forbidden", detail, code="forbidden")


def _invalid_credentials() -> Problem:
    # One answer for unknown e-mail, wrong password, wrong code and locked account: no account enumeration,
    # and a locked account does not tell a guesser that the password was right.
    return Problem(401, "Unauthorized", "Invalid e-mail, password or one-time code.", code="invalid-credentials")


def _invalid_token() -> Problem:
    return Problem(401, "Unauthorized", "The token is invalid or expired.", code="invalid-token")


def normalize_email(value: str) -> str:
    return value.strip().lower()


def validated_email(value: str) -> str:
    try:
        return normalize_email(validate_email(value, check_deliverability=False).normalized)
    except EmailNotValidError:
        raise Problem(422, "Invalid e-mail address", code="invalid-email") from None


def parse_nip(value: str) -> str:
    try:
        return normalize_nip(value)
    except InvalidNip as exc:
        raise Problem(422, "Invalid NIP", f"{exc}.", code="invalid-nip") from None


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise Problem(422, "Unknown role", code="invalid-role", roles=[str(r) for r in Role]) from None


def _is_locked(user: Row[Any], now: datetime) -> bool:
    return user.locked_at is not None and (user.locked_until is None or user.locked_until > now)


class AuthService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        settings: AuthSettings,
        clock: Clock,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._outbox = outbox
        self.settings = settings
        self._clock = clock
        key = settings.secrets_key.get_secret_value() if settings.secrets_key else DEVELOPMENT_SECRETS_KEY
        self._box = SecretBox(key)
        self.passwords = Passwords(settings.password_hash)
        self.keys = KeyStore(sessionmaker, self._box, settings, clock)
        self._throttles_purged_at: datetime | None = None

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self.keys.clock = clock

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Repository]:
        async with self._sessionmaker() as session, session.begin():
            yield Repository(session)

    # audit

    async def _audit(
        self,
        repo: Repository,
        event: str,
        *,
        orgs: Iterable[uuid.UUID | None],
        actor: Principal | None = None,
        subject: str | None = None,
        ip: str | None = None,
        **details: Any,
    ) -> None:
        now = self.clock()
        rows = [
            {
                "occurred_at": now,
                "organisation_id": org,
                "event": event,
                "actor_type": actor.ptype if actor else None,
                "actor_id": actor.sub if actor else None,
                "subject_id": subject,
                "ip": ip,
                "details": details,
            }
            for org in dict.fromkeys(orgs)
        ]
        await repo.add_audit(rows)
        log.info("audit %s subject=%s actor=%s", event, subject, actor.sub if actor else None)

    async def _user_orgs(self, repo: Repository, user_id: uuid.UUID) -> list[uuid.UUID | None]:
        orgs: list[uuid.UUID | None] = [m.organisation_id for m in await repo.memberships_of(user_id)]
        return orgs or [None]

    # access rules

    async def _org_access(
        self, repo: Repository, actor: Principal, org_id: uuid.UUID, perm: str | None, *, ops_allowed: bool = True
    ) -> Row[Any]:
        org = await repo.organisation(org_id)
        if actor.is_ops and org is not None:
            if not ops_allowed:
                raise forbidden()
            return org
        if org is None or actor.org != org_id:
            raise not_found("Organisation")
        if perm is not None and not actor.has(perm):
            raise forbidden()
        return org

    async def _visible_client_ids(self, repo: Repository, actor: Principal, office_id: uuid.UUID) -> set[uuid.UUID]:
        """The clients of an office the actor may see: all for admins and ops, assigned ones for accountants."""
        rows = await repo.clients_of(office_id)
        if actor.is_ops or actor.has(Perm.CLIENTS_MANAGE):
            return {r.id for r in rows}
        if actor.ptype == "user" and actor.user_id is not None:
            m = await repo.membership(actor.user_id, office_id)
            if m is not None and m.restricted:
                return set(await repo.membership_clients(m.id))
            return {r.id for r in rows}
        return {r.id for r in rows if r.nip and actor.can_touch(r.nip)}

    # organisations and office-client relations

    def _org_view(self, org: Row[Any]) -> dict[str, Any]:
        return {"id": org.id, "kind": org.kind, "name": org.name, "nip": org.nip, "created_at": org.created_at}

    async def create_organisation(self, actor: Principal, kind: str, name: str, nip: str | None) -> dict[str, Any]:
        if not actor.is_ops:
            raise forbidden("Only platform operators create organisations.")
        org_kind = OrgKind(kind)
        if org_kind is OrgKind.CLIENT and not nip:
            raise Problem(422, "A client company needs a NIP", code="nip-required")
        nip = parse_nip(nip) if nip else None
        async with self._tx() as repo:
            if nip and await repo.organisation_by_nip(org_kind, nip) is not None:
                raise Problem(409, "Conflict", "An organisation of this kind with this NIP exists.", code="duplicate")
            org_id = uuid.uuid4()
            await repo.add_organisation(id=org_id, kind=org_kind, name=name, nip=nip, created_at=self.clock())
            await self._audit(repo, "organisation.created", orgs=[org_id], actor=actor, subject=str(org_id))
            org = await repo.organisation(org_id)
            assert org is not None
            return self._org_view(org)

    async def list_organisations(self, actor: Principal) -> list[dict[str, Any]]:
        async with self._tx() as repo:
            if actor.is_ops:
                rows = await repo.organisations()
            elif actor.user_id is not None:
                ids = [m.organisation_id for m in await repo.memberships_of(actor.user_id) if m.organisation_id]
                rows = await repo.organisations(ids)
            else:
                rows = await repo.organisations([actor.org] if actor.org else [])
            return [self._org_view(r) for r in rows]

    async def get_organisation(self, actor: Principal, org_id: uuid.UUID) -> dict[str, Any]:
        async with self._tx() as repo:
            org = await repo.organisation(org_id)
            if org is not None and not actor.is_ops and actor.org != org_id:
                # An office member may look at a client company it works for.
                if actor.org is None or actor.org_kind != OrgKind.OFFICE:
                    raise not_found("Organisation")
                if org_id not in await self._visible_client_ids(repo, actor, actor.org):
                    raise not_found("Organisation")
            if org is None:
                raise not_found("Organisation")
            return self._org_view(org)

    async def rename_organisation(self, actor: Principal, org_id: uuid.UUID, name: str) -> dict[str, Any]:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            await repo.rename_organisation(org_id, name)
            await self._audit(repo, "organisation.renamed", orgs=[org_id], actor=actor, subject=str(org_id))
            org = await repo.organisation(org_id)
            assert org is not None
            return self._org_view(org)

    def _relation_view(self, row: Row[Any]) -> dict[str, Any]:
        return {
            "client_id": row.id,
            "name": row.name,
            "nip": row.nip,
            "state": row.state,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    async def _office(self, repo: Repository, actor: Principal, office_id: uuid.UUID, perm: str | None) -> Row[Any]:
        org = await self._org_access(repo, actor, office_id, perm)
        if org.kind != OrgKind.OFFICE:
            raise not_found("Office")
        return org

    async def add_client(self, actor: Principal, office_id: uuid.UUID, nip: str, name: str) -> dict[str, Any]:
        """Register a client company for an office (or link the existing company with that NIP): pending until
        approval-svc reports the integration active."""
        nip = parse_nip(nip)
        async with self._tx() as repo:
            await self._office(repo, actor, office_id, Perm.CLIENTS_MANAGE)
            now = self.clock()
            client = await repo.organisation_by_nip(OrgKind.CLIENT, nip)
            if client is None:
                client_id = uuid.uuid4()
                await repo.add_organisation(id=client_id, kind=OrgKind.CLIENT, name=name, nip=nip, created_at=now)
            else:
                client_id = client.id
                if await repo.relation(office_id, client_id) is not None:
                    raise Problem(409, "Conflict", "This company is already a client of the office.", code="duplicate")
            await repo.add_relation(
                office_id=office_id, client_id=client_id, state=RelationState.PENDING, created_at=now, updated_at=now
            )
            await self._audit(repo, "client.added", orgs=[office_id], actor=actor, subject=str(client_id), nip=nip)
            (row,) = await repo.clients_of(office_id, [client_id])
            return self._relation_view(row)

    async def list_clients(self, actor: Principal, office_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._tx() as repo:
            await self._office(repo, actor, office_id, None)
            visible = await self._visible_client_ids(repo, actor, office_id)
            return [self._relation_view(r) for r in await repo.clients_of(office_id, visible)]

    async def set_relation_state(
        self,
        actor: Principal,
        office_id: uuid.UUID,
        state: str,
        *,
        client_id: uuid.UUID | None = None,
        client_nip: str | None = None,
    ) -> dict[str, Any]:
        """approval-svc (a service token) reports the integration state; an office admin may only end it."""
        target = RelationState(state)
        async with self._tx() as repo:
            if not actor.is_service:
                await self._office(repo, actor, office_id, Perm.CLIENTS_MANAGE)
                if target is not RelationState.INACTIVE:
                    raise forbidden("Only the approval service activates an office-client relation.")
            if client_id is None:
                client = await repo.organisation_by_nip(OrgKind.CLIENT, parse_nip(client_nip or ""))
                client_id = client.id if client else None
            relation = await repo.relation(office_id, client_id) if client_id else None
            if relation is None or client_id is None:
                raise not_found("Office-client relation")
            if relation.state != target:
                await repo.set_relation_state(office_id, client_id, target, self.clock())
                await self._audit(
                    repo,
                    "client.state_changed",
                    orgs=[office_id],
                    actor=actor,
                    subject=str(client_id),
                    previous=relation.state,
                    state=str(target),
                )
            (row,) = await repo.clients_of(office_id, [client_id])
            return self._relation_view(row)

    # members and invitations

    def _member_view(self, row: Row[Any], client_ids: list[uuid.UUID], now: datetime) -> dict[str, Any]:
        return {
            "user_id": row.user_id,
            "email": row.email,
            "display_name": row.display_name,
            "role": row.role,
            "restricted": row.restricted,
            "client_ids": client_ids if row.restricted else None,
            "locked": _is_locked(row, now),
            "locked_until": row.locked_until if _is_locked(row, now) else None,
            "failed_logins": row.failed_logins,
            "totp_enabled": row.totp_enabled,
            "member_since": row.member_since,
        }

    async def list_members(self, actor: Principal, org_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            now = self.clock()
            return [
                self._member_view(r, await repo.membership_clients(r.membership_id), now)
                for r in await repo.members_of(org_id)
            ]

    async def _check_client_ids(
        self, repo: Repository, org: Row[Any], role: Role, client_ids: list[uuid.UUID] | None
    ) -> list[uuid.UUID] | None:
        if client_ids is None:
            return None
        if role is not Role.OFFICE_ACCOUNTANT:
            raise Problem(422, "Only office accountants can be limited to some clients", code="invalid-restriction")
        known = {r.id for r in await repo.clients_of(org.id)}
        if not set(client_ids) <= known:
            raise Problem(
                422, "Unknown client", "Some client ids are not clients of this office.", code="unknown-client"
            )
        return sorted(set(client_ids))

    async def invite(
        self,
        actor: Principal,
        org_id: uuid.UUID,
        email: str,
        role: str,
        client_ids: list[uuid.UUID] | None = None,
    ) -> IssuedSecret:
        """Store the invitation (token hashed) and emit ``user.invited`` with the link for notify-svc to mail."""
        email = validated_email(email)
        member_role = _role(role)
        async with self._tx() as repo:
            org = await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            if not role_fits(member_role, OrgKind(org.kind)):
                raise Problem(422, "This role does not exist in this kind of organisation", code="invalid-role")
            restricted_to = await self._check_client_ids(repo, org, member_role, client_ids)
            existing = await repo.user_by_email(email)
            if existing is not None and await repo.membership(existing.id, org_id) is not None:
                raise Problem(409, "Conflict", "This user is already a member.", code="already-member")
            now = self.clock()
            token = new_token()
            invitation_id = uuid.uuid4()
            expires_at = now + timedelta(seconds=self.settings.invitation_ttl_s)
            await repo.add_invitation(
                id=invitation_id,
                organisation_id=org_id,
                email=email,
                role=member_role,
                client_ids=[str(c) for c in restricted_to] if restricted_to is not None else None,
                token_hash=token_hash(token),
                invited_by=actor.user_id,
                created_at=now,
                expires_at=expires_at,
            )
            link = f"{self.settings.link_base_url.rstrip('/')}/invitations/accept?token={quote(token)}"
            await self._outbox.emit(
                repo.s,
                UserInvited(
                    invitation_id=invitation_id,
                    organisation_id=org_id,
                    organisation_name=org.name,
                    email=email,
                    role=member_role,
                    link=link,
                    expires_at=expires_at,
                ),
                tenant=str(org_id),
            )
            await self._audit(repo, "member.invited", orgs=[org_id], actor=actor, subject=email, role=str(member_role))
            record = {"id": invitation_id, "email": email, "role": member_role, "expires_at": expires_at}
            return IssuedSecret(id=str(invitation_id), secret=token, expires_at=expires_at, record=record)

    async def list_invitations(self, actor: Principal, org_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            return [
                {"id": r.id, "email": r.email, "role": r.role, "created_at": r.created_at, "expires_at": r.expires_at}
                for r in await repo.invitations_of(org_id, self.clock())
            ]

    async def revoke_invitation(self, actor: Principal, org_id: uuid.UUID, invitation_id: uuid.UUID) -> None:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            if not await repo.revoke_invitation(org_id, invitation_id, self.clock()):
                raise not_found("Invitation")
            await self._audit(repo, "member.invitation_revoked", orgs=[org_id], actor=actor, subject=str(invitation_id))

    def _check_password(self, password: str) -> None:
        if len(password) < self.settings.password_min_length:
            raise Problem(
                422,
                "Password too short",
                f"Use at least {self.settings.password_min_length} characters.",
                code="weak-password",
            )

    async def accept_invitation(
        self, token: str, password: str | None, display_name: str | None, ip: str | None = None
    ) -> dict[str, Any]:
        """A new user sets a password; an existing one proves it with theirs. Single use."""
        async with self._tx() as repo:
            inv = await repo.invitation_by_hash(token_hash(token))
            now = self.clock()
            if inv is None or inv.accepted_at or inv.revoked_at or inv.expires_at <= now:
                raise Problem(
                    400, "Invalid invitation", "The invitation is invalid, used or expired.", code="invalid-token"
                )
            user = await repo.user_by_email(inv.email)
            if user is None or user.password_hash is None:
                if not password:
                    raise Problem(422, "Password required", code="password-required")
                self._check_password(password)
                hashed = await asyncio.to_thread(self.passwords.hash, password)
                if user is None:
                    user_id = uuid.uuid4()
                    await repo.add_user(
                        id=user_id,
                        email=inv.email,
                        password_hash=hashed,
                        display_name=display_name,
                        is_active=True,
                        failed_logins=0,
                        totp_enabled=False,
                        created_at=now,
                        password_changed_at=now,
                    )
                else:
                    user_id = user.id
                    await repo.update_user(user_id, password_hash=hashed, password_changed_at=now)
            else:
                ok = await asyncio.to_thread(self.passwords.verify, user.password_hash, password or "")
                if not ok:
                    raise _invalid_credentials()
                user_id = user.id
            if not await repo.claim_invitation(inv.id, now):
                raise Problem(
                    400, "Invalid invitation", "The invitation is invalid, used or expired.", code="invalid-token"
                )
            if await repo.membership(user_id, inv.organisation_id) is None:
                membership_id = uuid.uuid4()
                await repo.add_membership(
                    id=membership_id,
                    user_id=user_id,
                    organisation_id=inv.organisation_id,
                    role=inv.role,
                    restricted=inv.client_ids is not None,
                    created_at=now,
                )
                if inv.client_ids:
                    await repo.set_membership_clients(membership_id, [uuid.UUID(c) for c in inv.client_ids])
            await self._audit(
                repo, "member.joined", orgs=[inv.organisation_id], subject=str(user_id), ip=ip, role=inv.role
            )
            return {"user_id": user_id, "organisation_id": inv.organisation_id, "role": inv.role}

    async def _member(self, repo: Repository, org_id: uuid.UUID, user_id: uuid.UUID) -> Row[Any]:
        m = await repo.membership(user_id, org_id)
        if m is None:
            raise not_found("Member")
        return m

    async def _keep_an_admin(self, repo: Repository, org_id: uuid.UUID, m: Row[Any], new_role: Role | None) -> None:
        demoted = m.role in ADMIN_ROLES and (new_role is None or new_role not in ADMIN_ROLES)
        if demoted and await repo.count_role(org_id, ADMIN_ROLES) <= 1:
            raise Problem(409, "Conflict", "An organisation keeps at least one administrator.", code="last-admin")

    async def update_member(
        self,
        actor: Principal,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        *,
        role: str | None = None,
        client_ids: list[uuid.UUID] | None = None,
        set_clients: bool = False,
    ) -> dict[str, Any]:
        """Change a member's role and/or limit an accountant to some clients (``client_ids=None`` lifts it)."""
        async with self._tx() as repo:
            org = await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            m = await self._member(repo, org_id, user_id)
            new_role = _role(role) if role is not None else Role(m.role)
            if not role_fits(new_role, OrgKind(org.kind)):
                raise Problem(422, "This role does not exist in this kind of organisation", code="invalid-role")
            if new_role != m.role:
                await self._keep_an_admin(repo, org_id, m, new_role)
                await repo.update_membership(m.id, role=new_role)
                await self._audit(
                    repo,
                    "role.changed",
                    orgs=[org_id],
                    actor=actor,
                    subject=str(user_id),
                    previous=m.role,
                    role=str(new_role),
                )
            if new_role is not Role.OFFICE_ACCOUNTANT and m.restricted:
                await repo.update_membership(m.id, restricted=False)
                await repo.set_membership_clients(m.id, [])
            if set_clients:
                restricted_to = await self._check_client_ids(repo, org, new_role, client_ids)
                await repo.update_membership(m.id, restricted=restricted_to is not None)
                await repo.set_membership_clients(m.id, restricted_to or [])
                await self._audit(
                    repo,
                    "member.clients_changed",
                    orgs=[org_id],
                    actor=actor,
                    subject=str(user_id),
                    client_ids=[str(c) for c in restricted_to] if restricted_to is not None else None,
                )
            # Claims are rebuilt on refresh, so the change reaches the member's tokens within one access TTL.
            rows = [r for r in await repo.members_of(org_id) if r.user_id == user_id]
            return self._member_view(rows[0], await repo.membership_clients(m.id), self.clock())

    async def remove_member(self, actor: Principal, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            m = await self._member(repo, org_id, user_id)
            await self._keep_an_admin(repo, org_id, m, None)
            await repo.delete_membership(m.id)
            await repo.revoke_user_refresh_tokens(user_id, self.clock(), org_id=org_id)
            await self._audit(repo, "member.removed", orgs=[org_id], actor=actor, subject=str(user_id), role=m.role)

    async def unlock_user(self, actor: Principal, org_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            m = await self._member(repo, org_id, user_id)
            await repo.update_user(user_id, failed_logins=0, locked_at=None, locked_until=None)
            await self._audit(
                repo, "user.unlocked", orgs=await self._user_orgs(repo, user_id), actor=actor, subject=str(user_id)
            )
            rows = [r for r in await repo.members_of(org_id) if r.user_id == user_id]
            return self._member_view(rows[0], await repo.membership_clients(m.id), self.clock())

    # login, tokens

    async def check_rate(self, scope: str, *parts: str) -> None:
        """Fixed-window limit per (scope, parts), shared by all replicas through the database."""
        key = hashlib.sha256("\x1f".join((scope, *parts)).encode()).hexdigest()
        window = timedelta(seconds=self.settings.login_rate_window_s)
        limit = self.settings.login_rate_limit
        await self._purge_throttles(window)
        retry_after = 0
        try:
            async with self._tx() as repo:
                now = self.clock()
                row = await repo.throttle(key)
                if row is None:
                    await repo.add_throttle(key, now)
                elif now - row.window_started_at >= window:
                    await repo.set_throttle(key, now, 1)
                elif row.attempts >= limit:
                    retry_after = max(1, math.ceil((row.window_started_at + window - now).total_seconds()))
                else:
                    await repo.set_throttle(key, row.window_started_at, row.attempts + 1)
        except IntegrityError:
            pass  # two first attempts raced to create the row: the other one counted
        if retry_after:
            raise RateLimited(retry_after)

    async def _purge_throttles(self, window: timedelta) -> None:
        """Delete throttle rows whose window has run out, at most once per window per replica.

        Such a row counts for nothing (the next attempt with its key starts a new window, exactly as with no
        row), but one is left behind for every (e-mail, address) ever tried: unpurged, a password-spraying
        run would grow the table without bound.
        """
        now = self.clock()
        last = self._throttles_purged_at
        # A clock that went backwards (tests replace it) must not postpone the purge indefinitely.
        if last is not None and timedelta(0) <= now - last < window:
            return
        self._throttles_purged_at = now
        async with self._tx() as repo:
            purged = await repo.purge_throttles(now - window)
        if purged:
            log.debug("purged %d expired login throttle rows", purged)

    async def _context(
        self, repo: Repository, user_id: uuid.UUID, org_id: uuid.UUID | None, amr: Iterable[str]
    ) -> Principal:
        """The claims of a user acting in one organisation (the requested one, or their first)."""
        memberships = await repo.memberships_of(user_id)
        if org_id is not None:
            memberships = [m for m in memberships if m.organisation_id == org_id]
        if not memberships:
            raise Problem(403, "No membership", "You are not a member of this organisation.", code="no-membership")
        m = memberships[0]
        role = Role(m.role)
        if role is Role.OPS or m.organisation_id is None:
            return Principal(
                sub=str(user_id),
                ptype="user",
                org=None,
                org_kind=None,
                roles=(str(role),),
                perms=frozenset(permissions_of([role])),
                nips=(ALL_CLIENTS,),
                amr=tuple(amr),
            )
        org = await repo.organisation(m.organisation_id)
        assert org is not None
        if org.kind == OrgKind.OFFICE:
            only = await repo.membership_clients(m.id) if m.restricted else None
            # Only clients whose integration is active: the office may not touch a pending client's data yet.
            nips = await repo.active_client_nips(org.id, only)
        else:
            nips = [org.nip] if org.nip else []
        return Principal(
            sub=str(user_id),
            ptype="user",
            org=org.id,
            org_kind=org.kind,
            roles=(str(role),),
            perms=frozenset(permissions_of([role])),
            nips=tuple(nips),
            amr=tuple(amr),
        )

    async def _access_token(self, principal: Principal, ttl_s: int) -> str:
        now = int(self.clock().timestamp())
        claims = {
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "iat": now,
            "exp": now + ttl_s,
            "jti": new_jti(),
            **principal.claims(),
        }
        return await self.keys.sign(claims)

    async def _issue(
        self, repo: Repository, principal: Principal, user_id: uuid.UUID, family_id: uuid.UUID | None = None
    ) -> TokenPair:
        now = self.clock()
        refresh = new_token()
        await repo.add_refresh_token(
            id=uuid.uuid4(),
            family_id=family_id or uuid.uuid4(),
            user_id=user_id,
            organisation_id=principal.org,
            token_hash=token_hash(refresh),
            amr=list(principal.amr),
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_s),
        )
        access = await self._access_token(principal, self.settings.access_token_ttl_s)
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=self.settings.access_token_ttl_s)

    def _totp(self, user_id: uuid.UUID, secret_enc: str) -> pyotp.TOTP:
        return pyotp.TOTP(self._box.decrypt(secret_enc, aad=f"totp:{user_id}").decode())

    def _totp_step(self, user: Row[Any], code: str | None, now: datetime) -> int | None:
        """The time step the code belongs to (one step of drift either way), if valid and not used before."""
        if not code or not user.totp_secret_enc:
            return None
        code = code.strip()
        if len(code) != 6 or not code.isdigit():
            return None
        totp = self._totp(user.id, user.totp_secret_enc)
        current = totp.timecode(now)
        for step in (current - 1, current, current + 1):
            if user.totp_last_counter is not None and step <= user.totp_last_counter:
                continue
            if hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    async def _record_failure(
        self, repo: Repository, user: Row[Any], now: datetime, ip: str | None, reason: str
    ) -> None:
        orgs = await self._user_orgs(repo, user.id)
        failed = user.failed_logins
        if user.locked_at is not None and not _is_locked(user, now):
            failed = 0  # the previous lock has run out: count afresh
        failed += 1
        values: dict[str, Any] = {"failed_logins": failed}
        if user.locked_at is not None and not _is_locked(user, now):
            values.update(locked_at=None, locked_until=None)
        await self._audit(repo, "login.failed", orgs=orgs, subject=str(user.id), ip=ip, reason=reason)
        if failed >= self.settings.lockout_threshold and not _is_locked(user, now):
            duration = self.settings.lockout_duration_s
            values.update(locked_at=now, locked_until=now + timedelta(seconds=duration) if duration else None)
            await self._audit(repo, "user.locked", orgs=orgs, subject=str(user.id), ip=ip, failed_logins=failed)
            log.warning("user %s locked after %d failed logins", user.id, failed)
        await repo.update_user(user.id, **values)

    async def login(
        self,
        email: str,
        password: str,
        *,
        otp: str | None = None,
        organisation_id: uuid.UUID | None = None,
        ip: str | None = None,
    ) -> TokenPair:
        email = normalize_email(email)
        await self.check_rate("login", email, ip or "")
        await self.keys.current()  # outside the transaction: the first start writes the first key
        failure: Problem | None = None
        pair: TokenPair | None = None
        async with self._tx() as repo:
            user = await repo.user_by_email(email)
            password_ok = await asyncio.to_thread(self.passwords.verify, user.password_hash if user else None, password)
            now = self.clock()
            if user is None or not user.is_active:
                failure = _invalid_credentials()
            elif _is_locked(user, now):
                failure = _invalid_credentials()
                await self._audit(
                    repo,
                    "login.failed",
                    orgs=await self._user_orgs(repo, user.id),
                    subject=str(user.id),
                    ip=ip,
                    reason="locked",
                )
            elif not password_ok:
                failure = _invalid_credentials()
                await self._record_failure(repo, user, now, ip, "password")
            elif user.totp_enabled and not otp:
                failure = Problem(401, "One-time code required", code="otp-required")
            elif user.totp_enabled and (step := self._totp_step(user, otp, now)) is None:
                failure = _invalid_credentials()
                await self._record_failure(repo, user, now, ip, "otp")
            else:
                values: dict[str, Any] = {"failed_logins": 0, "locked_at": None, "locked_until": None}
                amr = ["pwd"]
                if user.totp_enabled:
                    values["totp_last_counter"] = step
                    amr.append("otp")
                assert user.password_hash is not None
                if self.passwords.needs_rehash(user.password_hash):
                    values["password_hash"] = await asyncio.to_thread(self.passwords.hash, password)
                await repo.update_user(user.id, **values)
                principal = await self._context(repo, user.id, organisation_id, amr)
                pair = await self._issue(repo, principal, user.id)
                await self._audit(
                    repo,
                    "login.succeeded",
                    orgs=[principal.org],
                    subject=str(user.id),
                    ip=ip,
                    amr=amr,
                )
        if failure is not None:
            raise failure
        assert pair is not None
        return pair

    async def refresh(
        self, refresh_token: str, *, organisation_id: uuid.UUID | None = None, ip: str | None = None
    ) -> TokenPair:
        """Rotate: the presented token is used up and a new one of the same family returned. Presenting a used
        token again means it leaked (or the client raced itself): the whole family is revoked."""
        await self.keys.current()
        digest = token_hash(refresh_token)
        reuse = False
        async with self._tx() as repo:
            now = self.clock()
            fresh = await repo.use_refresh_token(digest, now)
            row = await repo.refresh_token_by_hash(digest)
            if row is None:
                raise _invalid_token()
            if not fresh:
                if row.used_at is not None and row.revoked_at is None:
                    await repo.revoke_family(row.family_id, now)
                    await self._audit(
                        repo,
                        "refresh.reuse_detected",
                        orgs=await self._user_orgs(repo, row.user_id),
                        subject=str(row.user_id),
                        ip=ip,
                    )
                    log.warning("refresh token reuse: family of user %s revoked", row.user_id)
                    reuse = True
                else:
                    raise _invalid_token()
            else:
                user = await repo.user(row.user_id)
                if user is None or not user.is_active:
                    raise _invalid_token()
                try:
                    principal = await self._context(repo, row.user_id, organisation_id or row.organisation_id, row.amr)
                except Problem:
                    raise _invalid_token() from None
                return await self._issue(repo, principal, row.user_id, family_id=row.family_id)
        assert reuse
        # Raised after the commit: the family revocation must stick.
        raise _invalid_token()

    async def logout(self, refresh_token: str) -> None:
        async with self._tx() as repo:
            row = await repo.refresh_token_by_hash(token_hash(refresh_token))
            if row is not None:
                await repo.revoke_family(row.family_id, self.clock())
                await self._audit(repo, "logout", orgs=[row.organisation_id], subject=str(row.user_id))

    async def service_token(self, client_id: str, client_secret: str) -> dict[str, Any]:
        expected = self.settings.service_credentials.get(client_id)
        # Compare even when the client is unknown, so timing tells nothing.
        known = expected.get_secret_value() if expected is not None else new_token()
        if not hmac.compare_digest(known.encode(), client_secret.encode()) or expected is None:
            raise Problem(
                401, "Unauthorized", "Unknown client or wrong secret.", code="invalid-client", error="invalid_client"
            )
        await self.keys.current()
        perms = {Perm.INTERNAL, *self.settings.service_permissions.get(client_id, [])}
        principal = Principal(
            sub=client_id,
            ptype="service",
            org=None,
            org_kind=None,
            perms=frozenset(str(p) for p in perms),
            nips=(ALL_CLIENTS,),
        )
        token = await self._access_token(principal, self.settings.service_token_ttl_s)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.settings.service_token_ttl_s}

    async def verify_access_token(self, token: str) -> Principal:
        try:
            return Principal.from_claims(await self.keys.verify(token))
        except (InvalidToken, KeyError, ValueError) as exc:
            raise _invalid_token() from exc

    # password reset

    async def request_password_reset(self, email: str, ip: str | None = None) -> None:
        """Always the same answer; a link is sent only when the account exists."""
        email = normalize_email(email)
        await self.check_rate("password-reset", email, ip or "")
        async with self._tx() as repo:
            user = await repo.user_by_email(email)
            if user is None or not user.is_active:
                return
            now = self.clock()
            token = new_token()
            expires_at = now + timedelta(seconds=self.settings.password_reset_ttl_s)
            await repo.add_password_reset(
                id=uuid.uuid4(), user_id=user.id, token_hash=token_hash(token), created_at=now, expires_at=expires_at
            )
            link = f"{self.settings.link_base_url.rstrip('/')}/password-reset/confirm?token={quote(token)}"
            await self._outbox.emit(
                repo.s, PasswordResetRequested(user_id=user.id, email=email, link=link, expires_at=expires_at)
            )
            await self._audit(
                repo, "password_reset.requested", orgs=await self._user_orgs(repo, user.id), subject=str(user.id), ip=ip
            )

    async def confirm_password_reset(self, token: str, new_password: str, ip: str | None = None) -> None:
        """Sets the password, lifts a lock (the link proves the mailbox) and ends every session of the user."""
        self._check_password(new_password)
        async with self._tx() as repo:
            now = self.clock()
            reset = await repo.password_reset_by_hash(token_hash(token))
            if reset is None or reset.used_at is not None or reset.expires_at <= now:
                raise Problem(400, "Invalid token", "The link is invalid, used or expired.", code="invalid-token")
            if not await repo.claim_password_reset(reset.id, now):
                raise Problem(400, "Invalid token", "The link is invalid, used or expired.", code="invalid-token")
            hashed = await asyncio.to_thread(self.passwords.hash, new_password)
            await repo.update_user(
                reset.user_id,
                password_hash=hashed,
                password_changed_at=now,
                failed_logins=0,
                locked_at=None,
                locked_until=None,
            )
            await repo.revoke_user_refresh_tokens(reset.user_id, now)
            await self._audit(
                repo,
                "password_reset.completed",
                orgs=await self._user_orgs(repo, reset.user_id),
                subject=str(reset.user_id),
                ip=ip,
            )

    # the caller's own account

    async def me(self, actor: Principal) -> dict[str, Any]:
        if actor.user_id is None:
            raise forbidden("Only users have an account.")
        async with self._tx() as repo:
            user = await repo.user(actor.user_id)
            if user is None:
                raise not_found("User")
            memberships = []
            for m in await repo.memberships_of(user.id):
                org = await repo.organisation(m.organisation_id) if m.organisation_id else None
                memberships.append(
                    {
                        "organisation_id": m.organisation_id,
                        "organisation_name": org.name if org else None,
                        "kind": org.kind if org else None,
                        "role": m.role,
                    }
                )
            return {
                "id": user.id,
                "email": user.email,
                "display_name": user.display_name,
                "totp_enabled": user.totp_enabled,
                "memberships": memberships,
                "context": actor.claims(),
            }

    async def _own_user(self, repo: Repository, actor: Principal) -> Row[Any]:
        if actor.user_id is None:
            raise forbidden("Only users have an account.")
        user = await repo.user(actor.user_id)
        if user is None:
            raise not_found("User")
        return user

    async def totp_enrol(self, actor: Principal) -> dict[str, str]:
        """A new seed, shown once (to put in an authenticator app); active after ``totp_confirm``."""
        async with self._tx() as repo:
            user = await self._own_user(repo, actor)
            if user.totp_enabled:
                raise Problem(409, "Conflict", "Two-factor authentication is already on.", code="totp-enabled")
            secret = pyotp.random_base32()
            await repo.update_user(
                user.id,
                totp_secret_enc=self._box.encrypt(secret.encode(), aad=f"totp:{user.id}"),
                totp_last_counter=None,
            )
            uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self.settings.totp_issuer)
            return {"secret": secret, "otpauth_uri": uri}

    async def totp_confirm(self, actor: Principal, code: str) -> None:
        async with self._tx() as repo:
            user = await self._own_user(repo, actor)
            if user.totp_enabled or not user.totp_secret_enc:
                raise Problem(409, "Conflict", "Start the enrolment first.", code="totp-not-enrolling")
            step = self._totp_step(user, code, self.clock())
            if step is None:
                raise Problem(422, "Wrong code", code="invalid-otp")
            await repo.update_user(user.id, totp_enabled=True, totp_last_counter=step)
            await self._audit(repo, "totp.enabled", orgs=await self._user_orgs(repo, user.id), subject=str(user.id))

    async def totp_disable(self, actor: Principal, code: str) -> None:
        async with self._tx() as repo:
            user = await self._own_user(repo, actor)
            if not user.totp_enabled:
                raise Problem(409, "Conflict", "Two-factor authentication is off.", code="totp-disabled")
            step = self._totp_step(user, code, self.clock())
            if step is None:
                raise Problem(422, "Wrong code", code="invalid-otp")
            await repo.update_user(user.id, totp_enabled=False, totp_secret_enc=None, totp_last_counter=None)
            await self._audit(repo, "totp.disabled", orgs=await self._user_orgs(repo, user.id), subject=str(user.id))

    # API keys

    def _key_view(self, row: Row[Any]) -> dict[str, Any]:
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

    async def create_api_key(
        self,
        actor: Principal,
        org_id: uuid.UUID,
        name: str,
        perms: list[str],
        nips: list[str] | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedSecret:
        """The plaintext key is returned here once; only the SHA-256 of its secret part is stored."""
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE, ops_allowed=False)
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
            now = self.clock()
            if expires_at is not None and expires_at <= now:
                raise Problem(422, "Expiry in the past", code="invalid-expiry")
            key_id = new_public_id()
            secret = new_token()
            await repo.add_api_key(
                id=key_id,
                organisation_id=org_id,
                name=name,
                secret_hash=token_hash(secret),
                perms=sorted(wanted),
                nips=key_nips,
                created_by=actor.user_id,
                created_at=now,
                expires_at=expires_at,
            )
            await self._audit(
                repo, "api_key.created", orgs=[org_id], actor=actor, subject=key_id, name=name, perms=sorted(wanted)
            )
            row = await repo.api_key(key_id)
            assert row is not None
            return IssuedSecret(
                id=key_id,
                secret=f"{API_KEY_PREFIX}{key_id}_{secret}",
                expires_at=expires_at,
                record=self._key_view(row),
            )

    async def list_api_keys(self, actor: Principal, org_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            return [self._key_view(r) for r in await repo.api_keys_of(org_id)]

    async def revoke_api_key(self, actor: Principal, org_id: uuid.UUID, key_id: str) -> None:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.USERS_MANAGE)
            row = await repo.api_key(key_id)
            if row is None or row.organisation_id != org_id:
                raise not_found("API key")
            if row.revoked_at is None:
                await repo.update_api_key(key_id, revoked_at=self.clock())
                await self._audit(repo, "api_key.revoked", orgs=[org_id], actor=actor, subject=key_id)

    async def authenticate_api_key(self, plaintext: str) -> Principal | None:
        """The principal of a live API key, or None. Its clients are resolved now: a relation that stopped
        being active drops out at once."""
        prefix, _, rest = plaintext.partition(API_KEY_PREFIX)
        key_id, sep, secret = rest.partition("_")
        if prefix or not sep or not key_id or not secret:
            return None
        async with self._tx() as repo:
            row = await repo.api_key(key_id)
            now = self.clock()
            if row is None or not same_hash(row.secret_hash, secret):
                return None
            if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
                return None
            org = await repo.organisation(row.organisation_id)
            if org is None:
                return None
            # A key never outgrows its creator: it holds its stored scope only as far as the creator holds it
            # now, so demoting or restricting the creator narrows their keys at once (within the verifiers'
            # introspection cache), and a creator who left or was deactivated leaves keys that open nothing.
            creator = await self._current_grant(repo, row.created_by, org.id)
            if creator is None:
                return None
            perms = frozenset(row.perms) & creator.perms
            if not perms:
                return None
            touch = timedelta(seconds=self.settings.api_key_touch_interval_s)
            if row.last_used_at is None or now - row.last_used_at >= touch:
                await repo.update_api_key(key_id, last_used_at=now)
            # The creator's NIPs are the organisation's active clients (an office member limited to some
            # clients: those), or the company's own NIP: a relation that stopped being active drops out here.
            nips = [n for n in creator.nips if row.nips is None or n in row.nips]
            return Principal(
                sub=key_id,
                ptype="api_key",
                org=org.id,
                org_kind=org.kind,
                roles=(),
                perms=perms,
                nips=tuple(nips),
            )

    async def _current_grant(self, repo: Repository, user_id: uuid.UUID | None, org_id: uuid.UUID) -> Principal | None:
        """What an active user may do in the organisation right now; None without a membership there."""
        if user_id is None:
            return None
        user = await repo.user(user_id)
        if user is None or not user.is_active:
            return None
        try:
            return await self._context(repo, user_id, org_id, ())
        except Problem:
            return None

    async def introspect(self, api_key: str | None = None, token: str | None = None) -> dict[str, Any]:
        principal: Principal | None = None
        exp: int | None = None
        if api_key:
            principal = await self.authenticate_api_key(api_key)
            if principal is not None:
                async with self._tx() as repo:
                    row = await repo.api_key(principal.sub)
                    if row is not None and row.expires_at is not None:
                        exp = int(row.expires_at.timestamp())
        elif token:
            try:
                claims = await self.keys.verify(token)
                principal, exp = Principal.from_claims(claims), int(claims["exp"])
            except (InvalidToken, KeyError, ValueError):
                principal = None
        if principal is None:
            return {"active": False}
        return {"active": True, **principal.claims(), "exp": exp}

    # audit log, keys

    async def audit_log(
        self, actor: Principal, org_id: uuid.UUID, *, event: str | None, before_id: int | None, limit: int
    ) -> list[dict[str, Any]]:
        async with self._tx() as repo:
            await self._org_access(repo, actor, org_id, Perm.AUDIT_READ)
            rows = await repo.audit_of(org_id, event=event, before_id=before_id, limit=limit)
            return [
                {
                    "id": r.id,
                    "occurred_at": r.occurred_at,
                    "event": r.event,
                    "actor_type": r.actor_type,
                    "actor_id": r.actor_id,
                    "subject_id": r.subject_id,
                    "ip": r.ip,
                    "details": r.details,
                }
                for r in rows
            ]

    async def rotate_signing_key(self, actor: Principal) -> dict[str, Any]:
        if not actor.is_ops:
            raise forbidden("Only platform operators rotate signing keys.")
        async with self._tx() as repo:
            kid = await self.keys.rotate(repo.s)
            await self._audit(repo, "signing_key.rotated", orgs=[None], actor=actor, subject=kid)
        return {"kid": kid, "keys": await self.keys.keys_overview()}

    async def signing_keys(self, actor: Principal) -> list[dict[str, Any]]:
        if not actor.is_ops:
            raise forbidden("Only platform operators see signing keys.")
        return await self.keys.keys_overview()

    # bootstrap and demo data (no actor: run by the operator's CLI or the embedded runner)

    async def ensure_organisation(self, kind: OrgKind, name: str, nip: str | None) -> uuid.UUID:
        async with self._tx() as repo:
            if nip is not None:
                nip = parse_nip(nip)
                existing = await repo.organisation_by_nip(kind, nip)
            else:
                existing = next((o for o in await repo.organisations() if o.kind == kind and o.name == name), None)
            if existing is not None:
                return uuid.UUID(str(existing.id))
            org_id = uuid.uuid4()
            await repo.add_organisation(id=org_id, kind=kind, name=name, nip=nip, created_at=self.clock())
            await self._audit(repo, "organisation.created", orgs=[org_id], subject=str(org_id), via="bootstrap")
            return org_id

    async def ensure_relation(self, office_id: uuid.UUID, client_id: uuid.UUID, state: RelationState) -> None:
        async with self._tx() as repo:
            now = self.clock()
            if await repo.relation(office_id, client_id) is None:
                await repo.add_relation(
                    office_id=office_id, client_id=client_id, state=state, created_at=now, updated_at=now
                )
            else:
                await repo.set_relation_state(office_id, client_id, state, now)

    async def ensure_user(
        self,
        email: str,
        password: str,
        org_id: uuid.UUID | None,
        role: Role,
        *,
        display_name: str | None = None,
        client_ids: list[uuid.UUID] | None = None,
    ) -> tuple[uuid.UUID, bool]:
        """Create the user (or reuse the one with this e-mail) with a membership; True when newly created.
        An existing user's password is left alone."""
        email = validated_email(email)
        self._check_password(password)
        created = False
        async with self._tx() as repo:
            now = self.clock()
            user = await repo.user_by_email(email)
            if user is None:
                user_id = uuid.uuid4()
                await repo.add_user(
                    id=user_id,
                    email=email,
                    password_hash=await asyncio.to_thread(self.passwords.hash, password),
                    display_name=display_name,
                    is_active=True,
                    failed_logins=0,
                    totp_enabled=False,
                    created_at=now,
                    password_changed_at=now,
                )
                created = True
            else:
                user_id = user.id
            if await repo.membership(user_id, org_id) is None:
                membership_id = uuid.uuid4()
                await repo.add_membership(
                    id=membership_id,
                    user_id=user_id,
                    organisation_id=org_id,
                    role=role,
                    restricted=client_ids is not None,
                    created_at=now,
                )
                if client_ids:
                    await repo.set_membership_clients(membership_id, client_ids)
                await self._audit(
                    repo, "member.joined", orgs=[org_id], subject=str(user_id), role=str(role), via="bootstrap"
                )
        return user_id, created

    @staticmethod
    def role_permissions() -> dict[str, list[str]]:
        return {str(role): sorted(str(p) for p in perms) for role, perms in ROLE_PERMISSIONS.items()}
