"""Use cases of signing in: login, refresh-token rotation, logout, service tokens, and the login rate limit."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from auth_svc.crypto import Passwords, SecretBox, new_token, token_hash
from auth_svc.errors import invalid_credentials, invalid_token
from auth_svc.members.domain import is_locked, normalize_email
from auth_svc.members.service import Members
from auth_svc.principal import Principal
from auth_svc.roles import ALL_CLIENTS, Perm
from auth_svc.sessions.domain import totp_step
from auth_svc.sessions.repository import SessionRepository
from auth_svc.settings import AuthSettings
from auth_svc.signing_keys.service import InvalidToken, KeyStore, new_jti
from auth_svc.unit_of_work import Tx, UnitOfWork
from platform_common.problems import Problem

log = logging.getLogger(__name__)


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


class Sessions:
    def __init__(
        self,
        uow: UnitOfWork,
        settings: AuthSettings,
        passwords: Passwords,
        box: SecretBox,
        keys: KeyStore,
        members: Members,
    ) -> None:
        self._uow = uow
        self._settings = settings
        self._passwords = passwords
        self._box = box
        self._keys = keys
        self._members = members
        self._throttles_purged_at: datetime | None = None

    async def check_rate(self, scope: str, *parts: str) -> None:
        """Fixed-window limit per (scope, parts), shared by all replicas through the database."""
        key = hashlib.sha256("\x1f".join((scope, *parts)).encode()).hexdigest()
        window = timedelta(seconds=self._settings.login_rate_window_s)
        limit = self._settings.login_rate_limit
        await self._purge_throttles(window)
        retry_after = 0
        try:
            async with self._uow.begin() as tx:
                repo = SessionRepository(tx.session)
                now = tx.clock()
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
        now = self._uow.clock()
        last = self._throttles_purged_at
        # A clock that went backwards (tests replace it) must not postpone the purge indefinitely.
        if last is not None and timedelta(0) <= now - last < window:
            return
        self._throttles_purged_at = now
        async with self._uow.begin() as tx:
            purged = await SessionRepository(tx.session).purge_throttles(now - window)
        if purged:
            log.debug("purged %d expired login throttle rows", purged)

    async def access_token(self, principal: Principal, ttl_s: int) -> str:
        now = int(self._uow.clock().timestamp())
        claims = {
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "iat": now,
            "exp": now + ttl_s,
            "jti": new_jti(),
            **principal.claims(),
        }
        return await self._keys.sign(claims)

    async def _issue(
        self, tx: Tx, principal: Principal, user_id: uuid.UUID, family_id: uuid.UUID | None = None
    ) -> TokenPair:
        now = tx.clock()
        refresh = new_token()
        await SessionRepository(tx.session).add_refresh_token(
            id=uuid.uuid4(),
            family_id=family_id or uuid.uuid4(),
            user_id=user_id,
            organisation_id=principal.org,
            token_hash=token_hash(refresh),
            amr=list(principal.amr),
            created_at=now,
            expires_at=now + timedelta(seconds=self._settings.refresh_token_ttl_s),
        )
        ttl = self._settings.access_token_ttl_s
        return TokenPair(access_token=await self.access_token(principal, ttl), refresh_token=refresh, expires_in=ttl)

    async def _record_failure(self, tx: Tx, user: Row[Any], now: datetime, ip: str | None, reason: str) -> None:
        orgs = await self._members.organisations_of(tx, user.id)
        failed = user.failed_logins
        if user.locked_at is not None and not is_locked(user, now):
            failed = 0  # the previous lock has run out: count afresh
        failed += 1
        values: dict[str, Any] = {"failed_logins": failed}
        if user.locked_at is not None and not is_locked(user, now):
            values.update(locked_at=None, locked_until=None)
        await tx.audit("login.failed", orgs=orgs, subject=str(user.id), ip=ip, reason=reason)
        if failed >= self._settings.lockout_threshold and not is_locked(user, now):
            duration = self._settings.lockout_duration_s
            values.update(locked_at=now, locked_until=now + timedelta(seconds=duration) if duration else None)
            await tx.audit("user.locked", orgs=orgs, subject=str(user.id), ip=ip, failed_logins=failed)
            log.warning("user %s locked after %d failed logins", user.id, failed)
        await self._members.update_user(tx, user.id, **values)

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
        await self._keys.current()  # outside the transaction: the first start writes the first key
        failure: Problem | None = None
        pair: TokenPair | None = None
        async with self._uow.begin() as tx:
            user = await self._members.user_by_email(tx, email)
            password_ok = await asyncio.to_thread(
                self._passwords.verify, user.password_hash if user else None, password
            )
            now = tx.clock()
            if user is None or not user.is_active:
                failure = invalid_credentials()
            elif is_locked(user, now):
                failure = invalid_credentials()
                orgs = await self._members.organisations_of(tx, user.id)
                await tx.audit("login.failed", orgs=orgs, subject=str(user.id), ip=ip, reason="locked")
            elif not password_ok:
                failure = invalid_credentials()
                await self._record_failure(tx, user, now, ip, "password")
            elif user.totp_enabled and not otp:
                failure = Problem(401, "One-time code required", code="otp-required")
            elif user.totp_enabled and (step := totp_step(self._box, user, otp, now)) is None:
                failure = invalid_credentials()
                await self._record_failure(tx, user, now, ip, "otp")
            else:
                values: dict[str, Any] = {"failed_logins": 0, "locked_at": None, "locked_until": None}
                amr = ["pwd"]
                if user.totp_enabled:
                    values["totp_last_counter"] = step
                    amr.append("otp")
                assert user.password_hash is not None
                if self._passwords.needs_rehash(user.password_hash):
                    values["password_hash"] = await asyncio.to_thread(self._passwords.hash, password)
                await self._members.update_user(tx, user.id, **values)
                principal = await self._members.grant(tx, user.id, organisation_id, amr)
                pair = await self._issue(tx, principal, user.id)
                await tx.audit("login.succeeded", orgs=[principal.org], subject=str(user.id), ip=ip, amr=amr)
        if failure is not None:
            raise failure
        assert pair is not None
        return pair

    async def refresh(
        self, refresh_token: str, *, organisation_id: uuid.UUID | None = None, ip: str | None = None
    ) -> TokenPair:
        """Rotate: the presented token is used up and a new one of the same family returned. Presenting a used
        token again means it leaked (or the client raced itself): the whole family is revoked."""
        await self._keys.current()
        digest = token_hash(refresh_token)
        reuse = False
        async with self._uow.begin() as tx:
            repo = SessionRepository(tx.session)
            now = tx.clock()
            fresh = await repo.use_refresh_token(digest, now)
            row = await repo.refresh_token_by_hash(digest)
            if row is None:
                raise invalid_token()
            if not fresh:
                if row.used_at is not None and row.revoked_at is None:
                    await repo.revoke_family(row.family_id, now)
                    orgs = await self._members.organisations_of(tx, row.user_id)
                    await tx.audit("refresh.reuse_detected", orgs=orgs, subject=str(row.user_id), ip=ip)
                    log.warning("refresh token reuse: family of user %s revoked", row.user_id)
                    reuse = True
                else:
                    raise invalid_token()
            else:
                user = await self._members.user(tx, row.user_id)
                if user is None or not user.is_active:
                    raise invalid_token()
                try:
                    principal = await self._members.grant(
                        tx, row.user_id, organisation_id or row.organisation_id, row.amr
                    )
                except Problem:
                    raise invalid_token() from None
                return await self._issue(tx, principal, row.user_id, family_id=row.family_id)
        assert reuse
        # Raised after the commit: the family revocation must stick.
        raise invalid_token()

    async def logout(self, refresh_token: str) -> None:
        async with self._uow.begin() as tx:
            repo = SessionRepository(tx.session)
            row = await repo.refresh_token_by_hash(token_hash(refresh_token))
            if row is not None:
                await repo.revoke_family(row.family_id, tx.clock())
                await tx.audit("logout", orgs=[row.organisation_id], subject=str(row.user_id))

    async def service_token(self, client_id: str, client_secret: str) -> dict[str, Any]:
        expected = self._settings.service_credentials.get(client_id)
        # Compare even when the client is unknown, so timing tells nothing.
        known = expected.get_secret_value() if expected is not None else new_token()
        if not hmac.compare_digest(known.encode(), client_secret.encode()) or expected is None:
            raise Problem(
                401, "Unauthorized", "Unknown client or wrong secret.", code="invalid-client", error="invalid_client"
            )
        await self._keys.current()
        perms = {Perm.INTERNAL, *self._settings.service_permissions.get(client_id, [])}
        principal = Principal(
            sub=client_id,
            ptype="service",
            org=None,
            org_kind=None,
            perms=frozenset(str(p) for p in perms),
            nips=(ALL_CLIENTS,),
        )
        ttl = self._settings.service_token_ttl_s
        token = await self.access_token(principal, ttl)
        return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}

    async def verify_access_token(self, token: str) -> Principal:
        try:
            return Principal.from_claims(await self._keys.verify(token))
        except (InvalidToken, KeyError, ValueError) as exc:
            raise invalid_token() from exc
