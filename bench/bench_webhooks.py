"""notify-svc's webhooks: deliveries per second to a loopback receiver and the time from an event's row in the
outbox to the receiver's 2xx, with ``--subscriptions`` subscriptions, beside a plain baseline measured in the same
run against the same receiver.

The path measured is the embedded one, end to end: an ``invoice.fetched`` row committed to an outbox (as the
gateway commits it), the relay publishing it on the ``InProcessBus``, notify-svc's fan-out consumer (inbox dedup,
the event and one delivery row per subscription that may receive it, one transaction), the sender claiming due
deliveries, signing them (``standardwebhooks``), resolving and pinning the target, POSTing it and recording the
attempt. The receiver (``platform_common.testing.http_receiver``, raw asyncio on 127.0.0.1) notes the moment each
request arrived and answers 200 at once.

1. **Throughput**: ``--events`` events committed in batches of ``--batch``, spread over the subscriptions'
   clients (one subscription per client organisation, each seeing only its client), until every delivery is
   recorded delivered. Beside it: the same number of signed POSTs sent by a plain ``httpx.AsyncClient`` kept
   ``--concurrency`` requests busy (the sender's own concurrency), nothing stored.
2. **Latency**: ``--samples`` events committed one at a time, each waited for; p50/p95 from the commit to the
   receiver's arrival (target p95 < 1 s embedded). Beside it: one plain signed POST at a time.

A report, not a test: a missed target prints MISSED and the exit status stays 0. It asserts only that what it
measured is right (every delivery arrived, verified with the subscription's secret, none twice).

    uv run python bench/bench_webhooks.py [--db sqlite|postgres] [--subscriptions 100] [--events 2000]
        [--batch 100] [--samples 100] [--quick]

PostgreSQL comes from ``KSEF_HUB_TEST_PG_DSN`` (``make bench`` starts it); SQLite (the embedded mode) is the
default, in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from notify_svc.main import DEFINITION
from notify_svc.settings import NotifySettings, WebhookSettings
from notify_svc.webhooks.service import NewSubscription
from notify_svc.wiring import webhook_sender, webhook_subscriptions
from platform_common.auth.principal import Principal
from platform_common.messaging.outbox import Outbox
from platform_common.nip import is_valid_nip
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, MessagingSettings, TelemetrySettings
from platform_common.testing.events import invoice_fetched
from platform_common.testing.http_receiver import Received, Receiver, Reply
from platform_common.testing.pg import temporary_database

PG_ENV = "KSEF_HUB_TEST_PG_DSN"
TARGET_P95_MS = 1000.0


@dataclass
class Arrivals:
    """What the receiver saw: when each webhook-id first arrived, and how often."""

    at: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def reply(self, request: Received) -> Reply:
        wid = request.headers.get("webhook-id", "")
        self.at.setdefault(wid, time.perf_counter())
        self.count[wid] = self.count.get(wid, 0) + 1
        self.changed.set()
        return Reply(200, b"ok")

    async def until(self, total: int, timeout: float = 600.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.at) < total:
                self.changed.clear()
                if len(self.at) >= total:
                    return
                await self.changed.wait()


def _nips(count: int) -> list[str]:
    found: list[str] = []
    n = 526_025_000
    while len(found) < count:
        n += 1
        nip = f"{n}{sum(int(d) * w for d, w in zip(str(n), (6, 5, 7, 2, 3, 4, 5, 6, 7), strict=True)) % 11}"
        if len(nip) == 10 and is_valid_nip(nip):
            found.append(nip)
    return found


def _client(nip: str) -> Principal:
    return Principal(
        id=f"erp-{nip}",
        ptype="user",
        org=uuid.uuid5(uuid.NAMESPACE_URL, nip),
        org_kind="client",
        perms=frozenset({"webhooks.manage"}),
        nips=frozenset({nip}),
    )


def _stats(samples_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


@asynccontextmanager
async def open_notify(db_url: str) -> AsyncIterator[ServiceRuntime]:
    private, _public = generate_keypair()
    settings = NotifySettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        seal_private_key=SecretStr(private),
        telemetry=TelemetrySettings(log_level="WARNING"),
        # Embedded mode's own allowance: the receiver is on loopback, over plain HTTP.
        webhooks=WebhookSettings(require_https=False, allowed_networks=["127.0.0.0/8"]),
    )
    runtime = ServiceRuntime(DEFINITION, settings, migrate_on_start=True)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _commit(runtime: ServiceRuntime, producer: Outbox, nips: list[str]) -> None:
    """``invoice.fetched`` rows in an outbox, one transaction, as the gateway writes them."""
    async with runtime.db.sessionmaker() as session, session.begin():
        for nip in nips:
            await producer.emit(session, invoice_fetched(nip), client_nip=nip)


async def _plain(url: str, secret: str, total: int, concurrency: int) -> tuple[float, list[float]]:
    """The baseline: signed POSTs with a plain client, ``concurrency`` at a time; seconds, and per-request ms."""
    signer = Webhook(secret)
    body = json.dumps({"type": "invoice.fetched", "data": {"n": 0}}).encode()
    latencies: list[float] = []
    queue = iter(range(total))
    async with httpx.AsyncClient(timeout=10) as http:

        async def worker() -> None:
            for i in queue:
                wid = f"msg_plain_{i}"
                now = datetime.now(UTC)
                headers = {
                    "webhook-id": wid,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(wid, now, body.decode()),
                    "content-type": "application/json",
                }
                t0 = time.perf_counter()
                r = await http.post(url, content=body, headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


async def run(db_url: str, args: argparse.Namespace) -> None:
    arrivals = Arrivals()
    receiver = await Receiver(reply=arrivals.reply).start()
    url = f"http://127.0.0.1:{receiver.port}/erp"
    try:
        async with open_notify(db_url) as runtime:
            service, sender = webhook_subscriptions(runtime), webhook_sender(runtime)
            # The gateway's outbox, as embedded mode has it: rows in a service's outbox, its relay woken on commit.
            producer = Outbox(runtime.definition.tables, producer="ksef-gateway")
            producer.on_commit_wake(runtime.relay.wake_event)
            nips = _nips(args.subscriptions)
            secrets: dict[str, str] = {}
            for nip in nips:
                _created, secret = await service.create(
                    _client(nip),
                    NewSubscription(url=url, event_types=["invoice.fetched"], contact_email="erp@example.com"),
                )
                secrets[nip] = secret
            assert isinstance(runtime.settings, NotifySettings)
            concurrency = runtime.settings.webhooks.concurrency

            # 1. Throughput.
            started = time.perf_counter()
            for start in range(0, args.events, args.batch):
                await _commit(runtime, producer, [nips[i % len(nips)] for i in range(start, start + args.batch)])
            await arrivals.until(args.events)
            seconds = time.perf_counter() - started
            duplicates = sum(c - 1 for c in arrivals.count.values())
            plain_s, _ = await _plain(url, secrets[nips[0]], args.events, concurrency)
            print(f"webhooks on {runtime.db.engine.dialect.name}: {args.subscriptions} subscriptions")
            print(
                f"  throughput: {args.events} deliveries in {seconds:.2f} s = {args.events / seconds:.0f}/s "
                f"(plain signed POSTs, {concurrency} at a time: {args.events / plain_s:.0f}/s; "
                f"ratio {seconds / plain_s:.1f}x the plain time); {duplicates} repeated"
            )

            # 2. Latency, one event at a time: outbox commit -> the receiver has it.
            latencies: list[float] = []
            for i in range(args.samples):
                nip = nips[i % len(nips)]
                seen = len(arrivals.at)
                t0 = time.perf_counter()
                await _commit(runtime, producer, [nip])
                await arrivals.until(seen + 1)
                latest = max(arrivals.at.values())
                latencies.append((latest - t0) * 1000)
            p50, p95 = _stats(latencies)
            _plain_s, plain_lat = await _plain(url, secrets[nips[0]], args.samples, 1)
            pp50, pp95 = _stats(plain_lat)
            verdict = "met" if p95 < TARGET_P95_MS else "MISSED"
            print(
                f"  outbox -> receiver: p50 {p50:.1f} ms, p95 {p95:.1f} ms (target < {TARGET_P95_MS:.0f} ms: "
                f"{verdict}); plain POST p50 {pp50:.2f} ms, p95 {pp95:.2f} ms (p95 ratio {p95 / pp95:.0f}x)"
            )
            print(f"  sender: {sender.attempts_ended} attempts recorded")

            # What was measured is right: the platform's deliveries verify with their subscription's secret.
            platform = [r for r in receiver.requests if not r.headers["webhook-id"].startswith("msg_plain_")]
            if len(platform) < args.events + args.samples:
                raise AssertionError(f"only {len(platform)} deliveries arrived")
            for request in platform[:: max(1, len(platform) // 200)]:
                body = json.loads(request.body)
                headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
                Webhook(secrets[body["data"]["client_nip"]]).verify(request.body, headers)
    finally:
        await receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--subscriptions", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="10 subscriptions, 200 events, 20 samples")
    args = parser.parse_args()
    quick = {"subscriptions": 10, "events": 200, "samples": 20}
    full = {"subscriptions": 100, "events": 2000, "samples": 100}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    logging.basicConfig(level=logging.WARNING)

    async def go() -> None:
        if args.db == "postgres":
            dsn = os.environ.get(PG_ENV)
            if not dsn:
                raise SystemExit(f"--db postgres needs {PG_ENV} (bash scripts/infra.sh up; eval its env)")
            with temporary_database(dsn, prefix="bench") as url:
                await run(url, args)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                await run(f"sqlite+aiosqlite:///{tmp}/notify.db", args)

    asyncio.run(go())


if __name__ == "__main__":
    main()
