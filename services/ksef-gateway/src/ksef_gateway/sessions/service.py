"""KSeF sessions per context: authentication, token refresh, re-authentication, and the online-session pool.

``SessionManager.access_token(nip)`` is the one way to a usable access token:

- a cached token is returned while it has more than ``refresh_margin_s`` left;
- otherwise the refresh token buys a new one (``POST /auth/token/refresh``: the refresh token is not rotated and
  lives 7 days, REFERENCE.md §3.7);
- when the refresh token has expired, or KSeF refuses it (the auth session was revoked: 401, or 400 21301), a
  full authentication runs: challenge → KSeF token or XAdES → poll → redeem.

Concurrent callers for one context wait on that context's lock and share the one authentication; different
contexts authenticate in parallel. A context is served only while this replica holds its lease
(``ContextLeases``), so two replicas never authenticate for the same client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar, runtime_checkable

from ksef_gateway.ksef import (
    Credential,
    Environment,
    FormCode,
    KsefAuthSession,
    KsefClient,
    KsefClients,
    KsefError,
    KsefForbidden,
    KsefRateLimited,
    KsefUnauthorized,
    KsefUnavailable,
    OnlineSession,
)
from ksef_gateway.ksef.client import Clock, system_clock
from ksef_gateway.ownership.service import ContextLeases

log = logging.getLogger(__name__)

T = TypeVar("T")


class NoCredential(Exception):
    """No (usable) credential is registered for the context."""

    def __init__(self, context_nip: str, reason: str = "no KSeF credential is registered for this context") -> None:
        super().__init__(f"{context_nip}: {reason}")
        self.context_nip = context_nip
        self.reason = reason


class ContextNotOwned(Exception):
    """Another replica holds the context's lease; this one must not talk to KSeF for it."""

    def __init__(self, context_nip: str) -> None:
        super().__init__(f"context {context_nip} is owned by another gateway replica")
        self.context_nip = context_nip


class CredentialSource(Protocol):
    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        """The environment and credential of the context; raises ``NoCredential``."""
        ...


@runtime_checkable
class CredentialFeedback(Protocol):
    """Optional: a source that wants to know how its credentials fare (the vault shows it as credential status)."""

    async def mark_failed(self, context_nip: str, error: KsefError) -> None: ...

    async def mark_authenticated(
        self, context_nip: str, permissions: frozenset[str], valid_until: datetime
    ) -> None: ...


@dataclass
class _Context:
    environment: Environment
    session: KsefAuthSession
    access_token: str = field(repr=False)
    access_valid_until: datetime


class SessionManager:
    def __init__(
        self,
        clients: KsefClients,
        source: CredentialSource,
        leases: ContextLeases | None,
        clock: Clock = system_clock,
        *,
        refresh_margin_s: float = 120.0,
    ) -> None:
        self._clients = clients
        self._source = source
        self._leases = leases
        self._clock = clock
        self._margin = timedelta(seconds=refresh_margin_s)
        self._contexts: dict[str, _Context] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._invalidation_listeners: list[Callable[[str], Awaitable[None]]] = []
        self._refusal_listeners: list[Callable[[str, KsefError], Awaitable[None]]] = []
        if leases is not None:
            leases.on_lost(self._forget)

    def on_invalidate(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """``await listener(nip)`` before a context's KSeF session is closed (e.g. to close its online sessions)."""
        self._invalidation_listeners.append(listener)

    def on_refused(self, listener: Callable[[str, KsefError], Awaitable[None]]) -> None:
        """``await listener(nip, error)`` when KSeF refused a call in the context for lack of permission (403, or
        400 21301): delegated access re-checks its grant at once instead of at its next interval."""
        self._refusal_listeners.append(listener)

    async def _refused(self, context_nip: str, error: KsefError) -> None:
        for listener in self._refusal_listeners:
            try:
                await listener(context_nip, error)
            except Exception:
                log.exception("refusal listener failed for %s", context_nip)

    def _forget(self, context_nip: str) -> None:
        # The lease is gone: the new owner authenticates itself; our tokens simply run out unused.
        self._contexts.pop(context_nip, None)

    async def _ensure_owned(self, context_nip: str) -> None:
        if self._leases is not None and not await self._leases.try_acquire(context_nip):
            self._forget(context_nip)
            raise ContextNotOwned(context_nip)

    def environment_of(self, context_nip: str) -> Environment | None:
        known = self._contexts.get(context_nip)
        return known.environment if known is not None else None

    async def client_for(
        self, context_nip: str, *, priority: float = 0.0, max_wait_s: float | None = None
    ) -> KsefClient:
        """The KSeF client of the context's environment (authenticating first if needed)."""
        await self.access_token(context_nip, priority=priority, max_wait_s=max_wait_s)
        return self._client_of(context_nip)

    async def access_token(self, context_nip: str, *, priority: float = 0.0, max_wait_s: float | None = None) -> str:
        """A valid access token of the context. ``priority``/``max_wait_s`` go to the budget with the token refresh;
        a full authentication (rare: once per refresh-token life) always waits for its slots, since giving up
        half-way through challenge → auth → poll → redeem would waste the steps already paid for."""
        async with self._locks[context_nip]:
            if self._leases is not None and not self._leases.holds(context_nip):
                await self._ensure_owned(context_nip)
            now = self._clock()
            known = self._contexts.get(context_nip)
            if known is not None and known.access_valid_until - self._margin > now:
                return known.access_token
            if known is not None and known.session.refresh_valid_until - self._margin > now:
                client = self._clients.for_environment(known.environment)
                try:
                    access = await client.refresh(
                        known.session.refresh_token,
                        context_nip=context_nip,
                        priority=priority,
                        max_wait_s=max_wait_s,
                    )
                except (KsefUnavailable, KsefRateLimited):
                    raise  # KSeF is not refusing the session, it is not answering: try again later
                except KsefError as error:
                    # 401 (revoked or expired refresh token) or 400 21301 (the auth status forbids it).
                    log.info("refreshing the KSeF session of %s failed (%s); authenticating again", context_nip, error)
                else:
                    known.access_token, known.access_valid_until = access.token, access.valid_until
                    return access.token
            return await self._authenticate(context_nip)

    async def _authenticate(self, context_nip: str) -> str:
        self._contexts.pop(context_nip, None)
        environment, credential = await self._source.credential_for(context_nip)
        client = self._clients.for_environment(environment)
        try:
            session = await client.authenticate(context_nip, credential)
        except KsefError as error:
            # An outage or a 429 says nothing about the credential; anything else (KsefAuthFailed above all) does.
            if isinstance(self._source, CredentialFeedback) and not isinstance(
                error, KsefUnavailable | KsefRateLimited
            ):
                await self._source.mark_failed(context_nip, error)
            raise
        self._contexts[context_nip] = _Context(environment, session, session.access_token, session.access_valid_until)
        log.info("authenticated in KSeF context %s (%s, %s)", context_nip, environment, session.auth_reference)
        if isinstance(self._source, CredentialFeedback):
            try:
                permissions = await client.own_permissions(session.access_token, context_nip=context_nip)
                await self._source.mark_authenticated(context_nip, permissions, session.refresh_valid_until)
            except Exception:
                log.exception("recording the authentication of %s failed", context_nip)
        return session.access_token

    def _expire_access(self, context_nip: str, rejected_token: str) -> None:
        known = self._contexts.get(context_nip)
        if known is not None and known.access_token == rejected_token:
            known.access_valid_until = self._clock()

    async def call(
        self,
        context_nip: str,
        operation: Callable[[KsefClient, str], Awaitable[T]],
        *,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> T:
        """``await operation(client, access_token)``, once more with a fresh token when KSeF answers 401 (the
        token expired early, or the clock of one side is off).

        ``priority`` and ``max_wait_s`` are the budget hints for the token refresh this may need; ``operation``
        passes the same hints to its own KSeF call (the caller builds it)."""
        try:
            token = await self.access_token(context_nip, priority=priority, max_wait_s=max_wait_s)
            try:
                return await operation(self._client_of(context_nip), token)
            except KsefUnauthorized:
                log.info("KSeF rejected the access token of %s; getting a fresh one", context_nip)
                async with self._locks[context_nip]:
                    self._expire_access(context_nip, token)
                token = await self.access_token(context_nip, priority=priority, max_wait_s=max_wait_s)
                return await operation(self._client_of(context_nip), token)
        except KsefForbidden as error:
            await self._refused(context_nip, error)
            raise
        except KsefError as error:
            if 21301 in error.codes:
                await self._refused(context_nip, error)
            raise

    def _client_of(self, context_nip: str) -> KsefClient:
        known = self._contexts.get(context_nip)
        if known is None:  # the lease was lost in the meantime
            raise ContextNotOwned(context_nip)
        return self._clients.for_environment(known.environment)

    async def invalidate(self, context_nip: str) -> None:
        """The credential was replaced or removed: forget the tokens and close the KSeF auth session, so the
        old credential's session cannot be used (or refreshed) any more."""
        for listener in self._invalidation_listeners:
            try:
                await listener(context_nip)
            except Exception:
                log.exception("invalidation listener failed for %s", context_nip)
        async with self._locks[context_nip]:
            known = self._contexts.pop(context_nip, None)
        if known is None:
            return
        client = self._clients.for_environment(known.environment)
        try:
            await client.revoke_current_session(known.session.refresh_token, context_nip=context_nip)
        except KsefError as error:
            # Best effort: an unrevoked session still dies with its refresh token's expiry.
            log.warning("closing the KSeF session of %s failed: %s", context_nip, error)

    async def close(self) -> None:
        """Forget every session (on stop). Sessions are not revoked: a restarted replica re-authenticates."""
        self._contexts.clear()


@dataclass
class _Pooled:
    session: OnlineSession
    last_used: datetime
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OnlineSessions:
    """Open online sessions reused per (context, form code) and closed after ``idle_s`` without use.

    A session lives 12 h on KSeF; one per (context, form) keeps the onlineSession budget (120/h) for real work.
    """

    def __init__(
        self,
        sessions: SessionManager,
        clock: Clock = system_clock,
        *,
        idle_s: float = 600.0,
        sweep_interval_s: float = 30.0,
        expiry_margin_s: float = 600.0,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._idle = timedelta(seconds=idle_s)
        self._sweep_interval_s = sweep_interval_s
        self._expiry_margin = timedelta(seconds=expiry_margin_s)
        self._pool: dict[tuple[str, FormCode], _Pooled] = {}
        self._locks: defaultdict[tuple[str, FormCode], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        sessions.on_invalidate(self.close_context)

    async def acquire(self, context_nip: str, form_code: FormCode) -> OnlineSession:
        """The open session of (context, form), opening one (with a fresh wrapped AES key) when there is none or
        it is close to its 12 h end."""
        key = (context_nip, form_code)
        async with self._locks[key]:
            now = self._clock()
            pooled = self._pool.get(key)
            if pooled is not None and pooled.session.valid_until - self._expiry_margin > now:
                pooled.last_used = now
                return pooled.session
            if pooled is not None:
                await self._close(key, pooled)
            session = await self._sessions.call(
                context_nip,
                lambda client, token: client.open_online_session(token, form_code, context_nip=context_nip),
            )
            self._pool[key] = _Pooled(session, now)
            return session

    def open_sessions(self) -> list[OnlineSession]:
        return [p.session for p in self._pool.values()]

    async def _close(self, key: tuple[str, FormCode], pooled: _Pooled) -> None:
        self._pool.pop(key, None)
        reference = pooled.session.reference_number
        try:
            await self._sessions.call(
                key[0],
                lambda client, token: client.close_online_session(token, reference, context_nip=key[0]),
            )
        except Exception as error:
            # The session closes itself after 12 h at the latest; nothing sent through it is lost.
            log.warning("closing online session %s of %s failed: %s", reference, key[0], error)

    async def close_idle(self) -> int:
        now = self._clock()
        closed = 0
        for key, pooled in list(self._pool.items()):
            if now - pooled.last_used >= self._idle:
                async with self._locks[key]:
                    if self._pool.get(key) is pooled and now - pooled.last_used >= self._idle:
                        await self._close(key, pooled)
                        closed += 1
        return closed

    async def close_context(self, context_nip: str) -> None:
        for key, pooled in list(self._pool.items()):
            if key[0] == context_nip:
                async with self._locks[key]:
                    if self._pool.get(key) is pooled:
                        await self._close(key, pooled)

    async def close_all(self) -> None:
        for key, pooled in list(self._pool.items()):
            async with self._locks[key]:
                if self._pool.get(key) is pooled:
                    await self._close(key, pooled)

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._sweep_interval_s)
            if not self._stopping.is_set():
                try:
                    await self.close_idle()
                except Exception:
                    log.exception("closing idle online sessions failed")

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._sweep_forever(), name="online-sessions-sweeper")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.close_all()
