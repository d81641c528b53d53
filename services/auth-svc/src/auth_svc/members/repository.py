"""Queries of the members capability: user accounts, memberships, client limits, invitations."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.db import invitation, membership, membership_client, refresh_token, user_account


class MemberRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def _one(self, stmt: Any) -> Row[Any] | None:
        return (await self.s.execute(stmt)).first()

    async def _all(self, stmt: Any) -> Sequence[Row[Any]]:
        return (await self.s.execute(stmt)).all()

    # users

    async def user(self, user_id: uuid.UUID) -> Row[Any] | None:
        return await self._one(select(user_account).where(user_account.c.id == user_id))

    async def user_by_email(self, email: str) -> Row[Any] | None:
        return await self._one(select(user_account).where(user_account.c.email == email))

    async def add_user(self, **values: Any) -> None:
        await self.s.execute(insert(user_account).values(**values))

    async def update_user(self, user_id: uuid.UUID, **values: Any) -> None:
        await self.s.execute(update(user_account).where(user_account.c.id == user_id).values(**values))

    # memberships

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

    async def revoke_refresh_tokens(self, user_id: uuid.UUID, org_id: uuid.UUID, now: datetime) -> None:
        """A removed member's sessions in that organisation end with the membership."""
        await self.s.execute(
            update(refresh_token)
            .where(
                refresh_token.c.user_id == user_id,
                refresh_token.c.organisation_id == org_id,
                refresh_token.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )

    # invitations

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
