"""Use cases of members and invitations, and what a member may do in an organisation right now (``grant``).

An invitation stores only the SHA-256 of its single-use token; the link goes to notify-svc in a
``user.invited`` event, sealed to notify-svc's public key, so neither the outbox nor the topic holds a usable
link.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import Row

from auth_svc.crypto import Passwords, new_token, token_hash
from auth_svc.errors import invalid_credentials, not_found
from auth_svc.members.domain import (
    check_password,
    check_role_fits,
    member_view,
    notify_public_key,
    parse_role,
    validated_email,
)
from auth_svc.members.repository import MemberRepository
from auth_svc.organisations.service import Organisations
from auth_svc.principal import Principal
from auth_svc.relations.service import Relations
from auth_svc.roles import ADMIN_ROLES, ALL_CLIENTS, OrgKind, Perm, Role, permissions_of
from auth_svc.settings import AuthSettings
from auth_svc.unit_of_work import Tx, UnitOfWork
from platform_common.contracts.users import UserInvited
from platform_common.messaging.outbox import Outbox
from platform_common.problems import Problem


def _invalid_invitation() -> Problem:
    return Problem(400, "Invalid invitation", "The invitation is invalid, used or expired.", code="invalid-token")


class Members:
    def __init__(
        self,
        uow: UnitOfWork,
        outbox: Outbox,
        settings: AuthSettings,
        passwords: Passwords,
        organisations: Organisations,
        relations: Relations,
    ) -> None:
        self._uow = uow
        self._outbox = outbox
        self._settings = settings
        self._passwords = passwords
        self._organisations = organisations
        self._relations = relations

    # for the other capabilities, inside their transaction

    # The user rows belong to members (an invitation creates them); sessions and accounts read and update them
    # through these, so the table's queries stay in one repository.
    async def user(self, tx: Tx, user_id: uuid.UUID) -> Row[Any] | None:
        return await MemberRepository(tx.session).user(user_id)

    async def user_by_email(self, tx: Tx, email: str) -> Row[Any] | None:
        return await MemberRepository(tx.session).user_by_email(email)

    async def update_user(self, tx: Tx, user_id: uuid.UUID, **values: Any) -> None:
        await MemberRepository(tx.session).update_user(user_id, **values)

    async def organisations_of(self, tx: Tx, user_id: uuid.UUID) -> list[uuid.UUID | None]:
        """The organisations whose audit log an event about this user belongs in (None: platform level)."""
        orgs: list[uuid.UUID | None] = [
            m.organisation_id for m in await MemberRepository(tx.session).memberships_of(user_id)
        ]
        return orgs or [None]

    async def memberships(self, tx: Tx, user_id: uuid.UUID) -> list[dict[str, Any]]:
        out = []
        for m in await MemberRepository(tx.session).memberships_of(user_id):
            org = await self._organisations.row(tx, m.organisation_id) if m.organisation_id else None
            out.append(
                {
                    "organisation_id": m.organisation_id,
                    "organisation_name": org.name if org else None,
                    "kind": org.kind if org else None,
                    "role": m.role,
                }
            )
        return out

    async def grant(self, tx: Tx, user_id: uuid.UUID, org_id: uuid.UUID | None, amr: Iterable[str]) -> Principal:
        """The claims of a user acting in one organisation (the requested one, or their first)."""
        repo = MemberRepository(tx.session)
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
        org = await self._organisations.row(tx, m.organisation_id)
        assert org is not None
        if org.kind == OrgKind.OFFICE:
            # No list of active clients in the token: it would outlive a revocation. Every service asks its live
            # projection of the integrations instead (platform_common.client_access); a member limited to some
            # clients carries those, as a narrowing.
            if m.restricted:
                nips = await self._relations.client_nips(tx, org.id, await repo.membership_clients(m.id))
            else:
                nips = [ALL_CLIENTS]
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

    async def current_grant(self, tx: Tx, user_id: uuid.UUID | None, org_id: uuid.UUID) -> Principal | None:
        """What an active user may do in the organisation right now; None without a membership there."""
        if user_id is None:
            return None
        user = await MemberRepository(tx.session).user(user_id)
        if user is None or not user.is_active:
            return None
        try:
            return await self.grant(tx, user_id, org_id, ())
        except Problem:
            return None

    # use cases

    async def list_members(self, actor: Principal, org_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._uow.begin() as tx:
            repo = MemberRepository(tx.session)
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            now = tx.clock()
            return [
                member_view(r, await repo.membership_clients(r.membership_id), now)
                for r in await repo.members_of(org_id)
            ]

    async def _check_client_ids(
        self, tx: Tx, org: Row[Any], role: Role, client_ids: list[uuid.UUID] | None
    ) -> list[uuid.UUID] | None:
        if client_ids is None:
            return None
        if role is not Role.OFFICE_ACCOUNTANT:
            raise Problem(422, "Only office accountants can be limited to some clients", code="invalid-restriction")
        if not set(client_ids) <= await self._relations.client_ids(tx, org.id):
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
    ) -> dict[str, Any]:
        """Store the invitation (token hashed) and emit ``user.invited`` with the sealed link for notify-svc."""
        email = validated_email(email)
        member_role = parse_role(role)
        recipient = notify_public_key(self._settings.notify_public_key)
        async with self._uow.begin() as tx:
            org = await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            check_role_fits(member_role, org.kind)
            restricted_to = await self._check_client_ids(tx, org, member_role, client_ids)
            view = await self._invite_in(tx, org, email, member_role, restricted_to, recipient, actor.user_id)
            await tx.audit("member.invited", orgs=[org_id], actor=actor, subject=email, role=str(member_role))
            return view

    async def invite_consenting_owner(self, tx: Tx, client_id: uuid.UUID, email: str, language: str | None) -> bool:
        """A company that had nobody on the platform consented through the e-mail the office named: that person is
        invited as its owner (inside the consumer's transaction). Whether an invitation was made."""
        repo = MemberRepository(tx.session)
        if await repo.members_of(client_id) or self._settings.notify_public_key is None:
            return False
        org = await self._organisations.row(tx, client_id)
        assert org is not None
        recipient = notify_public_key(self._settings.notify_public_key)
        await self._invite_in(
            tx, org, validated_email(email), Role.CLIENT_OWNER, None, recipient, None, language=language
        )
        await tx.audit("member.invited", orgs=[client_id], subject=email, role=str(Role.CLIENT_OWNER), consent=True)
        return True

    async def _invite_in(
        self,
        tx: Tx,
        org: Any,
        email: str,
        member_role: Role,
        restricted_to: list[uuid.UUID] | None,
        recipient: str,
        invited_by: uuid.UUID | None,
        *,
        language: str | None = None,
    ) -> dict[str, Any]:
        repo = MemberRepository(tx.session)
        org_id = org.id
        existing = await repo.user_by_email(email)
        if existing is not None and await repo.membership(existing.id, org_id) is not None:
            raise Problem(409, "Conflict", "This user is already a member.", code="already-member")
        now = tx.clock()
        token = new_token()
        invitation_id = uuid.uuid4()
        expires_at = now + timedelta(seconds=self._settings.invitation_ttl_s)
        await repo.add_invitation(
            id=invitation_id,
            organisation_id=org_id,
            email=email,
            role=member_role,
            client_ids=[str(c) for c in restricted_to] if restricted_to is not None else None,
            token_hash=token_hash(token),
            invited_by=invited_by,
            created_at=now,
            expires_at=expires_at,
        )
        link = f"{self._settings.link_base_url.rstrip('/')}/invitations/accept?token={quote(token)}"
        await self._outbox.emit(
            tx.session,
            UserInvited(
                invitation_id=invitation_id,
                organisation_id=org_id,
                organisation_name=org.name,
                email=email,
                role=member_role,
                sealed_link=UserInvited.seal_link(recipient, link),
                expires_at=expires_at,
                language=language if language in ("pl", "en") else None,
            ),
            tenant=str(org_id),
        )
        return {"id": invitation_id, "email": email, "role": member_role, "expires_at": expires_at}

    async def list_invitations(self, actor: Principal, org_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._uow.begin() as tx:
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            return [
                {"id": r.id, "email": r.email, "role": r.role, "created_at": r.created_at, "expires_at": r.expires_at}
                for r in await MemberRepository(tx.session).invitations_of(org_id, tx.clock())
            ]

    async def revoke_invitation(self, actor: Principal, org_id: uuid.UUID, invitation_id: uuid.UUID) -> None:
        async with self._uow.begin() as tx:
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            if not await MemberRepository(tx.session).revoke_invitation(org_id, invitation_id, tx.clock()):
                raise not_found("Invitation")
            await tx.audit("member.invitation_revoked", orgs=[org_id], actor=actor, subject=str(invitation_id))

    async def accept_invitation(
        self, token: str, password: str | None, display_name: str | None, ip: str | None = None
    ) -> dict[str, Any]:
        """A new user sets a password; an existing one proves it with theirs. Single use."""
        async with self._uow.begin() as tx:
            repo = MemberRepository(tx.session)
            inv = await repo.invitation_by_hash(token_hash(token))
            now = tx.clock()
            if inv is None or inv.accepted_at or inv.revoked_at or inv.expires_at <= now:
                raise _invalid_invitation()
            user = await repo.user_by_email(inv.email)
            if user is None or user.password_hash is None:
                if not password:
                    raise Problem(422, "Password required", code="password-required")
                check_password(password, self._settings.password_min_length)
                hashed = await asyncio.to_thread(self._passwords.hash, password)
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
                ok = await asyncio.to_thread(self._passwords.verify, user.password_hash, password or "")
                if not ok:
                    raise invalid_credentials()
                user_id = user.id
            if not await repo.claim_invitation(inv.id, now):
                raise _invalid_invitation()
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
            await tx.audit("member.joined", orgs=[inv.organisation_id], subject=str(user_id), ip=ip, role=inv.role)
            return {"user_id": user_id, "organisation_id": inv.organisation_id, "role": inv.role}

    async def _member(self, repo: MemberRepository, org_id: uuid.UUID, user_id: uuid.UUID) -> Row[Any]:
        m = await repo.membership(user_id, org_id)
        if m is None:
            raise not_found("Member")
        return m

    async def _keep_an_admin(
        self, repo: MemberRepository, org_id: uuid.UUID, m: Row[Any], new_role: Role | None
    ) -> None:
        demoted = m.role in ADMIN_ROLES and (new_role is None or new_role not in ADMIN_ROLES)
        if demoted and await repo.count_role(org_id, ADMIN_ROLES) <= 1:
            raise Problem(409, "Conflict", "An organisation keeps at least one administrator.", code="last-admin")

    async def _view(self, tx: Tx, repo: MemberRepository, org_id: uuid.UUID, m: Row[Any]) -> dict[str, Any]:
        rows = [r for r in await repo.members_of(org_id) if r.user_id == m.user_id]
        return member_view(rows[0], await repo.membership_clients(m.id), tx.clock())

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
        async with self._uow.begin() as tx:
            repo = MemberRepository(tx.session)
            org = await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            m = await self._member(repo, org_id, user_id)
            new_role = parse_role(role) if role is not None else Role(m.role)
            check_role_fits(new_role, org.kind)
            if new_role != m.role:
                await self._keep_an_admin(repo, org_id, m, new_role)
                await repo.update_membership(m.id, role=new_role)
                await tx.audit(
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
                restricted_to = await self._check_client_ids(tx, org, new_role, client_ids)
                await repo.update_membership(m.id, restricted=restricted_to is not None)
                await repo.set_membership_clients(m.id, restricted_to or [])
                await tx.audit(
                    "member.clients_changed",
                    orgs=[org_id],
                    actor=actor,
                    subject=str(user_id),
                    client_ids=[str(c) for c in restricted_to] if restricted_to is not None else None,
                )
            # Claims are rebuilt on refresh, so the change reaches the member's tokens within one access TTL.
            return await self._view(tx, repo, org_id, m)

    async def remove_member(self, actor: Principal, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        async with self._uow.begin() as tx:
            repo = MemberRepository(tx.session)
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            m = await self._member(repo, org_id, user_id)
            await self._keep_an_admin(repo, org_id, m, None)
            await repo.delete_membership(m.id)
            await repo.revoke_refresh_tokens(user_id, org_id, tx.clock())
            await tx.audit("member.removed", orgs=[org_id], actor=actor, subject=str(user_id), role=m.role)

    async def unlock_user(self, actor: Principal, org_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, Any]:
        async with self._uow.begin() as tx:
            repo = MemberRepository(tx.session)
            await self._organisations.access(tx, actor, org_id, Perm.USERS_MANAGE)
            m = await self._member(repo, org_id, user_id)
            await repo.update_user(user_id, failed_logins=0, locked_at=None, locked_until=None)
            await tx.audit(
                "user.unlocked", orgs=await self.organisations_of(tx, user_id), actor=actor, subject=str(user_id)
            )
            return await self._view(tx, repo, org_id, m)

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
        """Bootstrap and demo data (no actor): create the user (or reuse the one with this e-mail) with a
        membership; True when newly created. An existing user's password is left alone."""
        email = validated_email(email)
        check_password(password, self._settings.password_min_length)
        created = False
        async with self._uow.begin() as tx:
            repo = MemberRepository(tx.session)
            now = tx.clock()
            user = await repo.user_by_email(email)
            if user is None:
                user_id = uuid.uuid4()
                await repo.add_user(
                    id=user_id,
                    email=email,
                    password_hash=await asyncio.to_thread(self._passwords.hash, password),
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
                await tx.audit("member.joined", orgs=[org_id], subject=str(user_id), role=str(role), via="bootstrap")
        return user_id, created
