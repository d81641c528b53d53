"""DelegationChecker: re-checks delegated access in KSeF every ``check_interval_s`` and at once when asked (a new
activation, a refusal seen by the sync, a new office certificate). Woken by events; the interval is the fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ksef_gateway.delegation.service import Delegation
from platform_common.auth.clock import Clock, system_clock

log = logging.getLogger(__name__)


class DelegationChecker:
    def __init__(self, delegation: Delegation, clock: Clock = system_clock) -> None:
        self._delegation = delegation
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def tick(self) -> int:
        """One pass: tell the listeners what changed, then check every due client. Returns the checks run."""
        await self._delegation.announce_pending()
        checked = 0
        for access in await self._delegation.due():
            try:
                await self._delegation.check(access.client_nip)
            except Exception:
                log.exception("delegated access check of %s failed", access.client_nip)
            checked += 1
        return checked

    async def _loop(self) -> None:
        wake = self._delegation.wake_event
        interval = self._delegation.settings.check_interval_s
        while not self._stopping:
            wake.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("delegated access checker pass failed")
            earliest = await self._delegation.earliest_check()
            delay = interval
            if earliest is not None:
                delay = min(interval, max((earliest - self._clock()).total_seconds(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(delay, 0.01))

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="delegation-checker")

    async def stop(self) -> None:
        self._stopping = True
        self._delegation.wake_event.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
