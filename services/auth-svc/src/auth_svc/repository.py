"""All queries of auth-svc. A ``Repository`` wraps the session of one use case's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import (
    api_key,
    audit_event,
    invitation,
    login_throttle,
    membership,
    membership_client,
    office_client,
    organisation,
    password_reset,
    refresh_token,
    user_account,
)
from auth_svc.domain.roles import RelationState


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def _one(self, stmt: Any) -> Row[Any] | None:
        return (await self.s.execute(stmt)).first()

    async def _all(self, stmt: Any) -> Sequence[Row[Any]]:
        return (await self.s.execute(stmt)).all()

    # organisations and office-client relations

    async def organisation(self, org_id: uuid.UUID) -> Row[Any] | None:
        return await self._one(select(organisation).where(organisation.c.id == org_id))

    async def organisation_by_nip(self, kind: str, nip: str) -> Row[Any] | None:
        return await self._one(select(organisation).where(organisation.c.kind == kind, organisation.c.nip == nip))

    async def organisations(self, ids: Iterable[uuid.UUID] | None = None) -> Sequence[Row[Any]]:
        stmt = select(organisation).order_by(organisation.c.created_at, organisation.c.id)
        if ids is not None:
            stmt = stmt.where(organisation.c.id.in_(list(ids)))
        return await self._all(stmt)

    async def add_organisation(self, **values: Any) -> None:
        await self.s.execute(insert(organisation).values(**values))

    async def rename_organisation(self, org_id: uuid.UUID, name: str) -> None:
        await self.s.execute(update(organisation).where(organisation.c.id == org_id).values(name=name))

    async def relation(self, office_id: uuid.UUID, client_id: uuid.UUID) -> Row[Any] | None:
        return await self._one(
            select(office_client).where(office_client.c.office_id == office_id, office_client.c.client_id == client_id)
        )

    async def add_relation(self, **values: Any) -> None:
        await self.s.execute(insert(office_client).values(**values))

    async def set_relation_state(self, office_id: uuid.UUID, client_id: uuid.UUID, state: str, now: datetime) -> None:
        await self.s.execute(
            update(office_client)
            .where(office_client.c.office_id == office_id, office_client.c.client_id == client_id)
            .values(state=state, updated_at=now)
        )

    async def clients_of(self, office_id: uuid.UUID, only: Iterable[uuid.UUID] | None = None) -> Sequence[Row[Any]]:
        stmt = (
            select(
                organisation.c.id,
                organisation.c.name,
                organisation.c.nip,
                office_client.c.state,
                office_client.c.created_at,
                office_client.c.updated_at,
            )
            .join(office_client, office_client.c.client_id == organisation.c.id)
            .where(office_client.c.office_id == office_id)
            .order_by(organisation.c.name, organisation.c.id)
        )
        if only is not None:
            stmt = stmt.where(organisation.c.id.in_(list(only)))
        return await self._all(stmt)

    async def active_client_nips(self, office_id: uuid.UUID, only: Iterable[uuid.UUID] | None = None) -> list[str]:
        rows = await self.clients_of(office_id, only)
        return sorted(r.nip for r in rows if r.state == RelationState.ACTIVE and r.nip)

    # users and memberships

    async def user(self, user_id: uuid.UUID) -> Row[Any] | None:
        return await self._one(select(user_account).where(user_account.c.id == user_id))

    async def user_by_email(self, email: str) -> Row[Any] | None:
        return await self._one(select(user_account).where(user_account.c.email == email))

    async def add_user(self, **values: Any) -> None:
        await self.s.execute(insert(user_account).values(**values))

    async def update_user(self, user_id: uuid.UUID, **values: Any) -> None:
        await self.s.execute(update(user_account).where(user_account.c.id == user_id).values(**values))

    async def memberships_of(self, user_id: uuid.UUID) -> Sequence[Row[Any]]:
        return await self._all(
            select(membership).where(membership.c.user_id == user_id).order_by(membership.c.created_at, membership.c.id)
        )

    async def membership(self, user_id: uuid.UUID, org_id: uuid.UUID | None) -> Row[Any] | None:
        org_match = membership.c.organisation_id.is_(None) if org_id is None else membership.c.organisation_id == org_id
        return await self._one(select(membership).where(membership.c.user_id == user_id, org_match))

    async def add_membership(self, **values: Any) -> None:
        await self.s.execute(insert(membership).values(**values))

    async def update_membership(self, membership_id: uuid.UUID, **values: Any) -> None:
        await self.s.execute(update(membership).where(membership.c.id == membership_id).values(**values))

    async def delete_membership(self, membership_id: uuid.UUID) -> None:
        await self.s.execute(delete(membership_client).where(membership_client.c.membership_id == membership_id))
        await self.s.execute(delete(membership).where(membership.c.id == membership_id))

    async def membership_clients(self, membership_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await self._all(
            select(membership_client.c.client_id).where(membership_client.c.membership_id == membership_id)
        )
        return [r.client_id for r in rows]

    async def set_membership_clients(self, membership_id: uuid.UUID, client_ids: Iterable[uuid.UUID]) -> None:
        await self.s.execute(delete(membership_client).where(membership_client.c.membership_id == membership_id))
        values = [{"membership_id": membership_id, "client_id": c} for c in sorted(set(client_ids))]
        if values:
            await self.s.execute(insert(membership_client).values(values))

    async def members_of(self, org_id: uuid.UUID) -> Sequence[Row[Any]]:
        return await self._all(
            select(
                membership.c.id.label("membership_id"),
                membership.c.role,
                membership.c.restricted,
                membership.c.created_at.label("member_since"),
                user_account.c.id.label("user_id"),
                user_account.c.email,
                user_account.c.display_name,
                user_account.c.failed_logins,
                user_account.c.locked_at,
                user_account.c.locked_until,
                user_account.c.totp_enabled,
            )
            .join(user_account, user_account.c.id == membership.c.user_id)
            .where(membership.c.organisation_id == org_id)
            .order_by(user_account.c.email)
        )

    async def count_role(self, org_id: uuid.UUID, roles: Iterable[str]) -> int:
        return int(
            await self.s.scalar(
                select(func.count())
                .select_from(membership)
                .where(membership.c.organisation_id == org_id, membership.c.role.in_(list(roles)))
            )
            or 0
        )

    # invitations and password resets

    async def add_invitation(self, **values: Any) -> None:
        await self.s.execute(insert(invitation).values(**values))

    async def invitation_by_hash(self, digest: str) -> Row[Any] | None:
        return await self._one(select(invitation).where(invitation.c.token_hash == digest))

    async def invitations_of(self, org_id: uuid.UUID, now: datetime) -> Sequence[Row[Any]]:
        return await self._all(
            select(invitation)
            .where(
                invitation.c.organisation_id == org_id,
                invitation.c.accepted_at.is_(None),
                invitation.c.revoked_at.is_(None),
                invitation.c.expires_at > now,
            )
            .order_by(invitation.c.created_at)
        )

    async def claim_invitation(self, invitation_id: uuid.UUID, now: datetime) -> bool:
        """Mark used; False when someone else used it first (single use even under concurrency)."""
        result = await self.s.execute(
            update(invitation)
            .where(invitation.c.id == invitation_id, invitation.c.accepted_at.is_(None))
            .values(accepted_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_invitation(self, org_id: uuid.UUID, invitation_id: uuid.UUID, now: datetime) -> bool:
        result = await self.s.execute(
            update(invitation)
            .where(
                invitation.c.id == invitation_id,
                invitation.c.organisation_id == org_id,
                invitation.c.accepted_at.is_(None),
                invitation.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def add_password_reset(self, **values: Any) -> None:
        await self.s.execute(insert(password_reset).values(**values))

    async def password_reset_by_hash(self, digest: str) -> Row[Any] | None:
        return await self._one(select(password_reset).where(password_reset.c.token_hash == digest))

    async def claim_password_reset(self, reset_id: uuid.UUID, now: datetime) -> bool:
        result = await self.s.execute(
            update(password_reset)
            .where(password_reset.c.id == reset_id, password_reset.c.used_at.is_(None))
            .values(used_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # refresh tokens

    async def add_refresh_token(self, **values: Any) -> None:
        await self.s.execute(insert(refresh_token).values(**values))

    async def refresh_token_by_hash(self, digest: str) -> Row[Any] | None:
        return await self._one(select(refresh_token).where(refresh_token.c.token_hash == digest))

    async def use_refresh_token(self, digest: str, now: datetime) -> bool:
        """Atomically mark a live token used; False if it was already used, revoked, expired or unknown."""
        result = await self.s.execute(
            update(refresh_token)
            .where(
                refresh_token.c.token_hash == digest,
                refresh_token.c.used_at.is_(None),
                refresh_token.c.revoked_at.is_(None),
                refresh_token.c.expires_at > now,
            )
            .values(used_at=now)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> None:
        await self.s.execute(
            update(refresh_token)
            .where(refresh_token.c.family_id == family_id, refresh_token.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_user_refresh_tokens(
        self, user_id: uuid.UUID, now: datetime, *, org_id: uuid.UUID | None = None
    ) -> None:
        cond = and_(refresh_token.c.user_id == user_id, refresh_token.c.revoked_at.is_(None))
        if org_id is not None:
            cond = and_(cond, refresh_token.c.organisation_id == org_id)
        await self.s.execute(update(refresh_token).where(cond).values(revoked_at=now))

    # API keys

    async def add_api_key(self, **values: Any) -> None:
        await self.s.execute(insert(api_key).values(**values))

    async def api_key(self, key_id: str) -> Row[Any] | None:
        return await self._one(select(api_key).where(api_key.c.id == key_id))

    async def api_keys_of(self, org_id: uuid.UUID) -> Sequence[Row[Any]]:
        return await self._all(
            select(api_key).where(api_key.c.organisation_id == org_id).order_by(api_key.c.created_at, api_key.c.id)
        )

    async def update_api_key(self, key_id: str, **values: Any) -> None:
        await self.s.execute(update(api_key).where(api_key.c.id == key_id).values(**values))

    # audit log and login throttle

    async def add_audit(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.s.execute(insert(audit_event).values(rows))

    async def audit_of(
        self, org_id: uuid.UUID, *, event: str | None, before_id: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        stmt = select(audit_event).where(audit_event.c.organisation_id == org_id)
        if event:
            stmt = stmt.where(audit_event.c.event == event)
        if before_id is not None:
            stmt = stmt.where(audit_event.c.id < before_id)
        return await self._all(stmt.order_by(audit_event.c.id.desc()).limit(limit))

    async def throttle(self, key: str) -> Row[Any] | None:
        return await self._one(select(login_throttle).where(login_throttle.c.key == key).with_for_update())

    async def add_throttle(self, key: str, now: datetime) -> None:
        await self.s.execute(insert(login_throttle).values(key=key, window_started_at=now, attempts=1))

    async def set_throttle(self, key: str, window_started_at: datetime, attempts: int) -> None:
        await self.s.execute(
            update(login_throttle)
            .where(login_throttle.c.key == key)
            .values(window_started_at=window_started_at, attempts=attempts)
        )

    async def purge_throttles(self, started_before: datetime) -> int:
        """Rows whose window started at or before ``started_before``; returns how many went."""
        result = await self.s.execute(
            delete(login_throttle).where(login_throttle.c.window_started_at <= started_before)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
