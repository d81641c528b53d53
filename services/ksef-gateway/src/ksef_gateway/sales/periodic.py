"""The sales capability's periodic work: offline deadlines recomputed with their alerts, and the monthly backfills.

Both are idempotent per pass (an alert and a month are marked before they are announced or released, from the
state read), so every replica may run this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from ksef_gateway.sales.deadlines import WARSAW
from ksef_gateway.sales.service import SalesInvoices

log = logging.getLogger(__name__)


class SalesPeriodic:
    def __init__(self, sales: SalesInvoices, *, warn_before: timedelta, interval_s: float) -> None:
        self._sales = sales
        self._warn_before = warn_before
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._forever(), name="sales-periodic")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def check(self) -> None:
        await self._sales.watch_deadlines(self._warn_before)
        # A backfill's day is the client's calendar day, in Poland.
        await self._sales.run_due_backfills(self._sales.clock().astimezone(WARSAW).date())

    async def _forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("the sales invoices' periodic check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)
