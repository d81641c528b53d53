"""Stopping a service's background loops without cutting a database transaction in half.

A task cancelled while it awaits a database call may leave that call's transaction open on a connection nobody
returns (seen with aiosqlite: the file's write lock stayed taken until the connection was garbage-collected, and
the next writer of the file waited tens of seconds). So a loop is asked to stop (it checks its stop flag between
units of work) and given time to finish the unit in hand; cancelling is only the fallback for one that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

# Long enough for a unit of work (a batch of deliveries, a pass of short transactions), short enough for a
# rolling restart.
STOP_GRACE_S = 10.0


async def finish_or_cancel(task: asyncio.Task[None], *, what: str, grace_s: float = STOP_GRACE_S) -> None:
    """Wait up to ``grace_s`` for ``task`` (already asked to stop) to end; cancel it after that.

    An exception the task died of is logged, not raised: the service still stops cleanly.
    """
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
    except TimeoutError:
        log.warning("%s still busy after %ss; cancelling it", what, grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except asyncio.CancelledError:
        if not task.done():  # the caller was cancelled, not the task: do not leave it running unowned
            task.cancel()
        raise
    except Exception:
        log.exception("%s had stopped with an error", what)
