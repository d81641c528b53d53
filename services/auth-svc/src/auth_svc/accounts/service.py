"""Use cases of the caller's own account.

A password-reset link, like an invitation's, exists in the clear only sealed to notify-svc (the
``user.password_reset_requested`` event) and in the e-mail; auth-svc stores its SHA-256.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pyotp
from sqlalchemy import Row

from auth_svc.accounts.repository import AccountRepository
from auth_svc.crypto import Passwords, SecretBox, new_token, token_hash
from auth_svc.errors import forbidden, not_found
from auth_svc.members.domain import check_password, normalize_email, notify_public_key
from auth_svc.members.service import Members
from auth_svc.principal import Principal
from auth_svc.sessions.domain import totp_aad, totp_step
from auth_svc.sessions.service import Sessions
from auth_svc.settings import AuthSettings
from auth_svc.unit_of_work import Tx, UnitOfWork
from platform_common.contracts.users import PasswordResetRequested
from platform_common.messaging.outbox import Outbox
from platform_common.problems import Problem


def _invalid_link() -> Problem:
    return Problem(400, "Invalid token", "The link is invalid, used or expired.", code="invalid-token")


class Accounts:
    def __init__(
        self,
        uow: UnitOfWork,
        outbox: Outbox,
        settings: AuthSettings,
        passwords: Passwords,
        box: SecretBox,
        members: Members,
        sessions: Sessions,
    ) -> None:
        self._uow = uow
        self._outbox = outbox
        self._settings = settings
        self._passwords = passwords
        self._box = box
        self._members = members
        self._sessions = sessions

    async def me(self, actor: Principal) -> dict[str, Any]:
        if actor.user_id is None:
            raise forbidden("Only users have an account.")
        async with self._uow.begin() as tx:
            user = await self._members.user(tx, actor.user_id)
            if user is None:
                raise not_found("User")
            return {
                "id": user.id,
                "email": user.email,
                "display_name": user.display_name,
                "totp_enabled": user.totp_enabled,
                "memberships": await self._members.memberships(tx, user.id),
                "context": actor.claims(),
            }

    async def _own_user(self, tx: Tx, actor: Principal) -> Row[Any]:
        if actor.user_id is None:
            raise forbidden("Only users have an account.")
        user = await self._members.user(tx, actor.user_id)
        if user is None:
            raise not_found("User")
        return user

    async def totp_enrol(self, actor: Principal) -> dict[str, str]:
        """A new seed, shown once (to put in an authenticator app); active after ``totp_confirm``."""
        async with self._uow.begin() as tx:
            user = await self._own_user(tx, actor)
            if user.totp_enabled:
                raise Problem(409, "Conflict", "Two-factor authentication is already on.", code="totp-enabled")
            secret = pyotp.random_base32()
            await self._members.update_user(
                tx,
                user.id,
                totp_secret_enc=self._box.encrypt(secret.encode(), aad=totp_aad(user.id)),
                totp_last_counter=None,
            )
            uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=self._settings.totp_issuer)
            return {"secret": secret, "otpauth_uri": uri}

    async def totp_confirm(self, actor: Principal, code: str) -> None:
        async with self._uow.begin() as tx:
            user = await self._own_user(tx, actor)
            if user.totp_enabled or not user.totp_secret_enc:
                raise Problem(409, "Conflict", "Start the enrolment first.", code="totp-not-enrolling")
            step = totp_step(self._box, user, code, tx.clock())
            if step is None:
                raise Problem(422, "Wrong code", code="invalid-otp")
            await self._members.update_user(tx, user.id, totp_enabled=True, totp_last_counter=step)
            await tx.audit("totp.enabled", orgs=await self._members.organisations_of(tx, user.id), subject=str(user.id))

    async def totp_disable(self, actor: Principal, code: str) -> None:
        async with self._uow.begin() as tx:
            user = await self._own_user(tx, actor)
            if not user.totp_enabled:
                raise Problem(409, "Conflict", "Two-factor authentication is off.", code="totp-disabled")
            if totp_step(self._box, user, code, tx.clock()) is None:
                raise Problem(422, "Wrong code", code="invalid-otp")
            await self._members.update_user(
                tx, user.id, totp_enabled=False, totp_secret_enc=None, totp_last_counter=None
            )
            await tx.audit(
                "totp.disabled", orgs=await self._members.organisations_of(tx, user.id), subject=str(user.id)
            )

    async def request_password_reset(self, email: str, ip: str | None = None) -> None:
        """Always the same answer; a link is sent only when the account exists."""
        email = normalize_email(email)
        # Checked before the account is looked up, so an unconfigured service answers alike for every e-mail.
        recipient = notify_public_key(self._settings.notify_public_key)
        await self._sessions.check_rate("password-reset", email, ip or "")
        async with self._uow.begin() as tx:
            repo = AccountRepository(tx.session)
            user = await self._members.user_by_email(tx, email)
            if user is None or not user.is_active:
                return
            now = tx.clock()
            token = new_token()
            expires_at = now + timedelta(seconds=self._settings.password_reset_ttl_s)
            await repo.add_password_reset(
                id=uuid.uuid4(), user_id=user.id, token_hash=token_hash(token), created_at=now, expires_at=expires_at
            )
            link = f"{self._settings.link_base_url.rstrip('/')}/password-reset/confirm?token={quote(token)}"
            await self._outbox.emit(
                tx.session,
                PasswordResetRequested(
                    user_id=user.id,
                    email=email,
                    sealed_link=PasswordResetRequested.seal_link(recipient, link),
                    expires_at=expires_at,
                ),
            )
            orgs = await self._members.organisations_of(tx, user.id)
            await tx.audit("password_reset.requested", orgs=orgs, subject=str(user.id), ip=ip)

    async def confirm_password_reset(self, token: str, new_password: str, ip: str | None = None) -> None:
        """Sets the password, lifts a lock (the link proves the mailbox) and ends every session of the user."""
        check_password(new_password, self._settings.password_min_length)
        async with self._uow.begin() as tx:
            repo = AccountRepository(tx.session)
            now = tx.clock()
            reset = await repo.password_reset_by_hash(token_hash(token))
            if reset is None or reset.used_at is not None or reset.expires_at <= now:
                raise _invalid_link()
            if not await repo.claim_password_reset(reset.id, now):
                raise _invalid_link()
            hashed = await asyncio.to_thread(self._passwords.hash, new_password)
            await self._members.update_user(
                tx,
                reset.user_id,
                password_hash=hashed,
                password_changed_at=now,
                failed_logins=0,
                locked_at=None,
                locked_until=None,
            )
            await repo.revoke_refresh_tokens(reset.user_id, now)
            orgs = await self._members.organisations_of(tx, reset.user_id)
            await tx.audit("password_reset.completed", orgs=orgs, subject=str(reset.user_id), ip=ip)
