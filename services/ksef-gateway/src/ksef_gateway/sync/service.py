"""Use cases of the purchase sync behind its API: a client's sync status, "fetch now", and its sync preferences.

Each use case opens and commits its own transaction; the router only parses, calls and maps. The sync runs
themselves are ``sync.engine`` (one run) and ``sync.scheduler`` (which runs are due).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.budget.service import Budget, EndpointGroup
from ksef_gateway.purchases import service as purchases
from ksef_gateway.sync import repository
from ksef_gateway.sync.domain import SubjectType, SyncPolicy, earliest_fetch_now, enabled_subjects, lag
from ksef_gateway.sync.engine import ClientPreferences, SyncEngine
from ksef_gateway.sync.repository import ClientSync, Rejection, SyncState
from ksef_gateway.sync.scheduler import SyncScheduler
from ksef_gateway.vault.service import ActiveContext, Vault

# The groups a sync spends; "budget left" shows these for the client's context.
SYNC_GROUPS = (EndpointGroup.INVOICE_EXPORT, EndpointGroup.INVOICE_METADATA, EndpointGroup.INVOICE_DOWNLOAD)


class UnknownClient(Exception):
    """Neither a credential nor any sync state is known for the client."""


class CredentialNotActive(Exception):
    """The client's credential exists but cannot be used (invalid, expired or without InvoiceRead)."""


@dataclass(frozen=True)
class SubjectStatus:
    subject_type: SubjectType
    enabled: bool
    running: bool
    state: SyncState | None
    lag: timedelta | None


@dataclass(frozen=True)
class SyncStatus:
    client_nip: str
    credential_active: bool
    preferences: ClientPreferences
    fetch_requested_at: datetime | None
    invoices_stored: int
    subjects: list[SubjectStatus]
    rejected: list[Rejection]
    budget: dict[str, Any] | None  # this replica's view of the context's budget, when the budget counts


@dataclass(frozen=True)
class FetchNowQueued:
    requested_at: datetime
    runs_at: dict[SubjectType, datetime]


def _subjects_of(context: ActiveContext | None) -> list[SubjectType]:
    if context is None:
        return []
    return enabled_subjects(
        {SubjectType.SUBJECT3: context.subject3, SubjectType.SUBJECT_AUTHORIZED: context.subject_authorized}
    )


class SyncService:
    def __init__(self, engine: SyncEngine, scheduler: SyncScheduler, vault: Vault, budget: Budget) -> None:
        self._engine = engine
        self._sessions = engine.sessions
        self._scheduler = scheduler
        self._vault = vault
        self._budget = budget

    async def _active(self, nip: str) -> ActiveContext | None:
        return next((c for c in await self._vault.active_contexts() if c.nip == nip), None)

    async def _client_and_states(self, nip: str) -> tuple[ClientSync | None, list[SyncState]]:
        async with self._sessions() as session:
            return await repository.load_client(session, nip), await repository.load_states(session, nip)

    async def is_known(self, nip: str) -> bool:
        """Whether the gateway has heard of the client: a credential, sync settings or sync state."""
        client, states = await self._client_and_states(nip)
        return client is not None or bool(states) or await self._vault.status(nip) is not None

    async def status(self, nip: str) -> SyncStatus:
        """The client's sync state per subject type; ``UnknownClient`` when nothing is known of it."""
        return await self._status(nip, await self._active(nip))

    async def statuses(self, nips: Sequence[str]) -> dict[str, SyncStatus]:
        """``status`` of each of ``nips`` the sync knows (the others are left out), reading the vault's active
        contexts once for all of them (the operators' overview asks for a page of clients at a time)."""
        active = {c.nip: c for c in await self._vault.active_contexts()}
        found: dict[str, SyncStatus] = {}
        for nip in nips:
            try:
                found[nip] = await self._status(nip, active.get(nip))
            except UnknownClient:
                continue
        return found

    async def known_nips(self, *, after: str | None, limit: int) -> list[str]:
        """NIPs with sync settings or sync state, in NIP order after ``after``."""
        async with self._sessions() as session:
            return await repository.client_nips_after(session, after, limit)

    async def _status(self, nip: str, context: ActiveContext | None) -> SyncStatus:
        enabled = _subjects_of(context)
        async with self._sessions() as session:
            client = await repository.load_client(session, nip)
            states = await repository.load_states(session, nip)
            stored = await purchases.count(session, nip)
            rejections = await repository.list_rejections(session, nip)
        if context is None and client is None and not states and await self._vault.status(nip) is None:
            raise UnknownClient(nip)
        now = self._engine.now()
        by_subject = {s.subject_type: s for s in states}
        subjects = [
            SubjectStatus(
                subject_type=subject,
                enabled=subject in enabled,
                running=self._scheduler.is_running(nip, subject),
                state=by_subject.get(subject),
                lag=lag(now, state.hwm) if (state := by_subject.get(subject)) else None,
            )
            for subject in SubjectType
            if subject in by_subject or subject in enabled
        ]
        remaining = getattr(self._budget, "remaining", None)
        budget = {group.value: remaining(nip, group) for group in SYNC_GROUPS} if callable(remaining) else None
        return SyncStatus(
            client_nip=nip,
            credential_active=context is not None,
            preferences=self._engine.resolve(client),
            fetch_requested_at=client.fetch_requested_at if client else None,
            invoices_stored=stored,
            subjects=subjects,
            rejected=rejections,
            budget=budget,
        )

    async def fetch_now(self, nip: str, requested_by: str) -> FetchNowQueued:
        """Queue a run of every subject of ``nip``: as soon as the minimum poll interval since its last run allows
        (or at once with the operator override). The rate-limit budget still applies when it runs."""
        context = await self._active(nip)
        if context is None:
            if await self._vault.status(nip) is None:
                raise UnknownClient(nip)
            raise CredentialNotActive(nip)
        now = self._engine.now()
        async with self._sessions() as session, session.begin():
            queued = await self._queue(session, nip, _subjects_of(context), requested_by, now)
        self._scheduler.wake()
        return queued

    async def _queue(
        self, session: AsyncSession, nip: str, subjects: Sequence[SubjectType], requested_by: str, now: datetime
    ) -> FetchNowQueued:
        settings = self._engine.settings
        await repository.upsert_client(session, nip, now, fetch_requested_at=now, fetch_requested_by=requested_by[:200])
        await repository.ensure_states(session, [(nip, s) for s in subjects], now)
        policy = SyncPolicy(min_poll_interval=timedelta(seconds=settings.min_poll_interval_s))
        runs_at: dict[SubjectType, datetime] = {}
        for state in await repository.load_states(session, nip):
            if state.subject_type not in subjects:
                continue
            earliest = earliest_fetch_now(
                now, state.last_run_at, policy, override=settings.fetch_now_ignores_min_interval
            )
            when = earliest if state.next_run_at is None else min(state.next_run_at, earliest)
            if state.next_run_at is None or when < state.next_run_at:
                await repository.update_state(session, nip, state.subject_type, now, next_run_at=when)
            runs_at[state.subject_type] = max(when, now)
        return FetchNowQueued(now, runs_at)

    async def set_preferences(self, nip: str, changes: dict[str, Any]) -> SyncStatus:
        """Set the month-close day and backfill depth (keys left out stay as they are)."""
        if not await self.is_known(nip):
            raise UnknownClient(nip)
        async with self._sessions() as session, session.begin():
            await repository.upsert_client(session, nip, self._engine.now(), **changes)
        return await self.status(nip)
