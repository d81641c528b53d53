"""The availability monitor: every interval, Latarnia's status and (while KSeF looks down) a probe of KSeF."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ksef_gateway.outages.latarnia import Latarnia, LatarniaUnavailable
from ksef_gateway.outages.service import Availability

log = logging.getLogger(__name__)


class AvailabilityMonitor:
    def __init__(self, availability: Availability, latarnia: Latarnia | None, *, interval_s: float) -> None:
        self._availability = availability
        self._latarnia = latarnia
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._forever(), name="ksef-availability")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def check(self) -> None:
        await self._availability.refresh()
        if self._latarnia is not None:
            try:
                reading = await self._latarnia.status()
            except LatarniaUnavailable as exc:
                # Latarnia's silence says nothing about KSeF: keep what is recorded.
                log.info("Latarnia did not answer: %s", exc)
            else:
                await self._availability.observe_latarnia(reading)
        await self._availability.probe_if_needed()

    async def _forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("the availability check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)
