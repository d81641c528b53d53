"""Background work: integrations whose consent link or activation code ran out unused become ``expired``.

Each replica runs it; two replicas expiring the same row serialise on the row lock and the second finds it already
changed. Refusals at the moment of use (an expired link or code) do not wait for this: it only makes the state
visible to the office and to auth-svc without anybody touching the integration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from approval_svc.integrations.service import Integrations
from platform_common.tasks import finish_or_cancel

log = logging.getLogger(__name__)


class ExpirySweeper:
    def __init__(self, integrations: Integrations, *, interval_s: float) -> None:
        self._integrations = integrations
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop(), name="approval-svc expiry")

    async def stop(self) -> None:
        """A pass in progress finishes (it is one short transaction per integration) rather than being cut off."""
        if self._task is not None:
            self._stopping.set()
            await finish_or_cancel(self._task, what="approval-svc expiry")
            self._task = None

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                expired = await self._integrations.expire_overdue()
                if expired:
                    log.info("%d integration(s) expired unused", expired)
            except Exception:
                log.exception("expiring overdue integrations failed; next pass in %s s", self._interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval_s)
