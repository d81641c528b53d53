"""Runs the purchase sync in the background: due (client, subject) pairs of the contexts this replica leases.

``SyncScheduler`` runs due subjects of the contexts this replica leases (``ContextLeases``) among the clients the
vault knows (``Vault.active_contexts()``), nearest month-close deadline first, with bounded concurrency. When the
rate-limit budget has no slot soon (``BudgetExhausted``) or KSeF's circuit is open (``CircuitOpen``) the run
reschedules its subject and the worker moves on.

Work starts on events, not on a polling tick: a new or replaced credential (``credential_changed``) and a "fetch
now" (``wake``) look for due work at once. Between events the loop sleeps until the earliest ``next_run_at`` it knows
of (a finished run reports its own), and at most ``tick_interval_s``: the fallback that notices what no event
announces here (a context another replica handed over, a lease to balance, a row changed by another process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ksef_gateway.ownership.service import ContextLeases
from ksef_gateway.settings import SyncSettings
from ksef_gateway.sync.domain import SubjectType, enabled_subjects, order_due
from ksef_gateway.sync.engine import Clock, RunReport, SyncEngine, utcnow
from ksef_gateway.vault.service import ActiveContext
from platform_common.tasks import finish_or_cancel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncTarget:
    """A client the vault holds a working credential for, with the subject types to sync."""

    client_nip: str
    subjects: tuple[SubjectType, ...]


class TargetSource(Protocol):
    async def targets(self) -> list[SyncTarget]:
        """The clients to sync whose context this replica holds."""


class SyncScheduler:
    """Runs due (client, subject) pairs, nearest month-close deadline first, at most ``max_concurrency`` at once."""

    def __init__(self, engine: SyncEngine, source: TargetSource, settings: SyncSettings, *, clock: Clock = utcnow):
        self.engine = engine
        self._source = source
        self.settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._running: dict[tuple[str, SubjectType], asyncio.Task[RunReport]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        # The earliest later next_run_at the last tick saw (or a finished run reported): when the loop wakes next.
        self._next_due: datetime | None = None
        if isinstance(source, LeasedVaultTargets):
            source.is_busy = self.is_busy  # a context is handed to another replica only between its runs

    async def start(self) -> None:
        if self.settings.enabled and self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="purchase-sync-scheduler")

    async def stop(self) -> None:
        # The loop ends after the tick in hand (its database work is short; see platform_common.tasks). Runs are
        # cancelled: one may wait minutes for an export, and its state is persisted before each KSeF call.
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await finish_or_cancel(self._task, what="purchase sync scheduler")
            self._task = None
        running = list(self._running.values())
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._running.clear()

    def wake(self) -> None:
        """Look for due work now (a "fetch now" request, a new credential)."""
        self._wake.set()

    async def credential_changed(self, nip: str) -> None:
        """A credential was added, replaced or removed: the set of clients to sync may have changed."""
        self.wake()

    def is_running(self, nip: str, subject: SubjectType) -> bool:
        return (nip, subject) in self._running

    def is_busy(self, nip: str) -> bool:
        """A run of any of the client's subjects is in flight (an export included: it runs inside the run)."""
        return any(running_nip == nip for running_nip, _ in self._running)

    async def _loop(self) -> None:
        while not self._stopping:
            # Cleared before the tick: a wake-up that arrives while it runs makes the next wait return at once.
            self._wake.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purchase sync scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sleep_s())

    def sleep_s(self) -> float:
        """How long the loop waits for a wake-up: until the next known due time, at most ``tick_interval_s``."""
        fallback = self.settings.tick_interval_s
        if self._next_due is None:
            return fallback
        return max(0.0, min(fallback, (self._next_due - self._clock()).total_seconds()))

    def _due_at(self, when: datetime | None) -> None:
        if when is not None and (self._next_due is None or when < self._next_due):
            self._next_due = when
            self.wake()  # the loop may be sleeping towards a later moment: let it recompute

    async def tick(self) -> list[asyncio.Task[RunReport]]:
        """Start every due subject that is not running yet; returns the tasks started (tests may await them)."""
        now = self._clock()
        targets = await self._source.targets()
        # What finished runs reported while this tick ran stays (it is in the database too, but maybe after the
        # plan's read); what has passed is done. Not reset before the awaits above: a run finishing meanwhile would
        # find nothing planned, wake the loop and make every tick of a busy replica follow the previous one at once.
        kept = self._next_due if self._next_due is not None and self._next_due > now else None
        if not targets:
            self._next_due = kept
            return []
        pairs = [(t.client_nip, s) for t in targets for s in t.subjects]
        plan = await self.engine.plan(pairs, now)
        self._next_due = min((t for t in (kept, plan.next_at) if t is not None), default=None)
        due = [d for d in plan.due if (d.client_nip, d.subject_type) not in self._running]
        started = []
        for item in order_due(due, now):
            key = (item.client_nip, item.subject_type)
            task = asyncio.create_task(self._run(key), name=f"purchase-sync:{key[0]}:{key[1].value}")
            self._running[key] = task
            started.append(task)
        return started

    async def _run(self, key: tuple[str, SubjectType]) -> RunReport:
        try:
            async with self._slots:
                report = await self.engine.run(*key)
        finally:
            self._running.pop(key, None)
        self._due_at(report.next_run_at)
        return report


class ContextSource(Protocol):
    """The vault, or anything listing contexts the way it does (the vault's plus the delegated clients)."""

    async def active_contexts(self) -> list[ActiveContext]: ...


class LeasedVaultTargets:
    """The vault's active contexts whose lease this replica holds, after moving it towards its fair share of them
    (``ContextLeases.balance``): each tick it takes free contexts while under the share and hands surplus over while
    above it, never a context with a run in flight (``is_busy``; the scheduler sets it to its own running runs)."""

    def __init__(self, vault: ContextSource, leases: ContextLeases | None) -> None:
        self._vault = vault
        self._leases = leases
        self.is_busy: Callable[[str], bool] = lambda nip: False

    async def targets(self) -> list[SyncTarget]:
        active = await self._vault.active_contexts()
        held = (
            await self._leases.balance([c.nip for c in active], busy=self.is_busy) if self._leases is not None else None
        )
        found = []
        for context in active:
            if held is not None and context.nip not in held:
                continue  # another replica drives this context
            subjects = enabled_subjects(
                {SubjectType.SUBJECT3: context.subject3, SubjectType.SUBJECT_AUTHORIZED: context.subject_authorized}
            )
            found.append(SyncTarget(context.nip, tuple(subjects)))
        return found
