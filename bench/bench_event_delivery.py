"""Event delivery throughput and latency: outbox -> transport -> idempotent consumer, on both transports.

Prints figures; asserts nothing (targets live here, not in timed tests). Kafka figures need the broker and
PostgreSQL from scripts/infra.sh (``make bench`` starts them); without them only the in-process figures print.

    uv run python bench/bench_event_delivery.py [--events 2000] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from platform_common.testing.contract import Harness, open_harness
from platform_common.testing.pg import temporary_database

PG_ENV = "KSEF_HUB_TEST_PG_DSN"
KAFKA_ENV = "KSEF_HUB_TEST_KAFKA_BOOTSTRAP"


async def _until(probe: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError("events were not all applied in time")
        await asyncio.sleep(0.01)


async def _run(h: Harness, events: int, batch: int, keys: int) -> dict[str, float]:
    written_at: dict[str, float] = {}
    started = time.perf_counter()
    for start in range(0, events, batch):
        items = [(f"{5260250000 + (i % keys)}", {"idx": i}) for i in range(start, min(events, start + batch))]
        for env in await h.emit(items):
            written_at[str(env.id)] = time.perf_counter()
    await _until(lambda: _count_at_least(h, events), timeout=300)
    elapsed = time.perf_counter() - started
    return {"events": events, "seconds": elapsed, "per_second": events / elapsed}


async def _count_at_least(h: Harness, n: int) -> bool:
    return await h.applied_count() >= n


async def _latency(h: Harness, samples: int) -> list[float]:
    """Commit-to-applied time of single events written one at a time (the relay is woken on commit)."""
    out = []
    for i in range(samples):
        before = await h.applied_count()
        t0 = time.perf_counter()
        await h.emit([("5260250274", {"idx": 10_000_000 + i})])
        await _until(lambda before=before: _count_at_least(h, before + 1), timeout=30)  # type: ignore[misc]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _report(label: str, tp: dict[str, float], lat: list[float]) -> None:
    q = statistics.quantiles(lat, n=20)
    print(
        f"{label:<26} {tp['events']:>6.0f} events in {tp['seconds']:6.2f}s = {tp['per_second']:8.0f} events/s | "
        f"latency ms p50 {statistics.median(lat):6.1f}  p95 {q[18]:6.1f}  max {max(lat):6.1f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100, help="events per producer transaction")
    parser.add_argument("--keys", type=int, default=50, help="distinct client NIPs (ordering keys)")
    parser.add_argument("--latency-samples", type=int, default=40)
    args = parser.parse_args()
    print(f"event delivery: {args.events} events, {args.batch} per transaction, {args.keys} keys")

    with tempfile.TemporaryDirectory() as tmp:
        async with open_harness("inprocess", f"sqlite+aiosqlite:///{tmp}/p.db", f"sqlite+aiosqlite:///{tmp}/c.db") as h:
            tp = await _run(h, args.events, args.batch, args.keys)
            _report("in-process + SQLite", tp, await _latency(h, args.latency_samples))

    pg, kafka = os.environ.get(PG_ENV), os.environ.get(KAFKA_ENV)
    if not (pg and kafka):
        print(f"kafka + postgresql: not measured ({PG_ENV} / {KAFKA_ENV} unset; run `make bench`)")
        return
    with temporary_database(pg, prefix="bench") as url:
        async with open_harness("kafka", url, url, kafka_bootstrap=kafka, partitions=6) as h:
            tp = await _run(h, args.events, args.batch, args.keys)
            _report("kafka + PostgreSQL", tp, await _latency(h, args.latency_samples))


if __name__ == "__main__":
    asyncio.run(main())
