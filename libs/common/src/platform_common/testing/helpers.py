from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds.

    Synchronisation on an observable condition, not a fixed sleep: it returns as soon as the condition holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {result!r})")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Refusal:
    """When a service first refused: seconds from the start to the moment the refused request was sent, and how
    many requests it still served before (0: the very next request was refused)."""

    after_s: float
    served_before: int


async def time_until_refused(
    get: Callable[[str], Awaitable[int]],
    paths: Mapping[str, str],
    *,
    timeout: float = 30.0,
    interval: float = 0.005,
) -> dict[str, Refusal]:
    """Poll every path (``get`` returns its status code) in one loop until each has answered 404 once, so one slow
    service does not inflate another's figure. Fails after ``timeout`` naming those that still answer."""
    started = time.monotonic()
    refusals: dict[str, Refusal] = {}
    served = dict.fromkeys(paths, 0)
    while True:
        for name, path in paths.items():
            if name in refusals:
                continue
            sent = time.monotonic() - started
            if await get(path) == 404:
                refusals[name] = Refusal(sent, served[name])
            else:
                served[name] += 1
        if len(refusals) == len(paths):
            return refusals
        if time.monotonic() - started > timeout:
            still = sorted(set(paths) - set(refusals))
            raise AssertionError(f"timed out after {timeout}s: {', '.join(still)} still serve the revoked client")
        await asyncio.sleep(interval)
