"""Sales sending end to end: FA(3) XML posted to the gateway (``POST /clients/{nip}/sales``) -> sent through the
context's reused online session to KSeF (the simulator over real HTTP, in its own process as KSeF is) -> status polled
until accepted -> UPO stored -> ``invoice.sent`` published from the outbox. One run prints three parts:

1. **Throughput**, rate limits off in the simulator (``rate_limits=off``) and in the gateway's budget (``mode=off``),
   ``invoice_processing_delay_s`` at a small realistic value (0.5 s): N invoices across M clients, submitted
   concurrently over HTTP (in-process ASGI, ``--concurrency`` requests at a time) against a plain sequential loop
   over the PyPI ``ksef-client`` package doing the same work with the same simulator, one request at a time: per
   client a login with the KSeF token, one online session, each invoice sent, polled until final (every 0.05 s) and
   its UPO downloaded, the session closed. The loop runs in two forms: *send all, then poll + UPO each* (on all N:
   its polls overlap KSeF's processing, the strongest a sequential script gets) and *one by one* (send, wait out,
   UPO, then the next: bound by the processing delay, so run on ``--naive-invoices`` only, its rate being the same
   at any N). Gateway, loops and simulator each run in their own process (no shared event loop). The gateway's
   clock runs from the first POST until the bench's consumer on the in-process bus has seen the last
   ``invoice.sent`` (stored with its UPO, then published); its clients' tokens are registered before that clock
   (each checked in KSeF, timed apart). A loop's clock runs from its start (logins included) to its last UPO.
   Target beside each ratio: >= 2x.
2. **Latency from KSeF's acceptance to ``invoice.sent`` on the bus**: acceptance is the simulator's ``final_at`` of
   the session invoice (receipt + ``invoice_processing_delay_s``: the instant its status turns 200), read from the
   simulator's store; "on the bus" is the moment the bench's consumer on the gateway's in-process bus received the
   envelope (the outbox relay's delivery; ``outbox_message.published_at``, stamped once every consumer has it, is
   printed beside it). Both clocks are this machine's UTC clock. p50 / p95 / max against p95 < 2 s, with where the
   time goes: the sender's per-invoice phases from ``sales_invoice_history`` and its KSeF calls, timed in the
   gateway's process.
3. **Correctness** (asserted): every invoice of both contenders accepted exactly once in the simulator's records (by
   invoice hash: one session invoice with status 200 and one stored invoice, none refused or duplicated), each with a
   UPO (the gateway's row holds it and it names the KSeF number; the loop downloaded it), and every ``invoice.sent``
   published exactly once.

Prints figures and never asserts on speed; asserts only correctness.

    uv run python bench/bench_send.py [--invoices 300] [--clients 3] [--concurrency 16]
        [--processing-delay 0.5] [--naive-invoices 30] [--timeout 600] [--dump results.json]

The gateway runs on PostgreSQL when ``KSEF_HUB_TEST_PG_DSN`` is set (``bash scripts/infra.sh up && eval "$(bash
scripts/infra.sh env)"``; ``make bench`` does both), in a throw-away database; else on SQLite. The simulator child is
this script in a worker mode, as in bench_sync.py: it serves ``ksef_sim.testing.serve()`` and, on a JSON line on
stdin, issues KSeF tokens (``InvoiceRead``, ``InvoiceWrite``) in its own process and reports its session invoices.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import IO, Any, cast

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
PG_ENV = "KSEF_HUB_TEST_PG_DSN"
SIM_WORKER = "--ksef-sim-worker"
GATEWAY_WORKER = "--gateway-worker"
KSEF_CLIENT_WORKER = "--ksef-client-worker"
WORKERS = (SIM_WORKER, GATEWAY_WORKER, KSEF_CLIENT_WORKER)
THROUGHPUT_TARGET = 2.0  # gateway / ksef-client loop, invoices per second
LATENCY_P95_TARGET_S = 2.0
BASELINE_POLL_S = 0.05  # the loop's pause between two looks at an invoice still processing
# KSeF's status codes of an invoice not yet decided (REFERENCE.md §7): received, processing.
PROCESSING_CODES = (100, 150)


@dataclass(frozen=True)
class Client:
    nip: str
    token: str


def _drop_proxies() -> None:
    for variable in PROXY_VARIABLES:  # a proxy would take the simulator's host name off loopback
        os.environ.pop(variable, None)


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM belongs to the new address space; ru_maxrss would survive execve)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _last_json_line(text: str) -> dict[str, Any]:
    lines = [line for line in text.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result line in the worker's output:\n{text[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_worker(flag: str, job: dict[str, Any], *, log: Path) -> dict[str, Any]:
    """Run this very script as ``flag``'s worker with ``job`` on stdin; its last JSON line on stdout is the result."""
    with log.open("w") as stderr:
        done = subprocess.run(  # noqa: S603  # this very script, with data we made
            [sys.executable, __file__, flag],
            input=json.dumps(job),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{flag} failed (exit {done.returncode}):\n{log.read_text()[-4000:]}")
    return _last_json_line(done.stdout)


def invoices_of(nip: str, count: int, series: str, generated_at: str) -> list[bytes]:
    """``count`` FA(3) sales invoices of seller ``nip``, numbered ``FV/<series>/<i>``, as the integration tests build
    them (gateway/tests/integration/sales): rendered from the gateway's JSON invoice model. The same arguments give
    the same bytes (``generated_at`` goes into the header), so the bench can hash what a worker sent."""
    from ksef_gateway.sales.rendering import SalesInvoiceIn, render_fa3

    generated = datetime.fromisoformat(generated_at)
    today = generated.date().isoformat()
    documents = []
    for i in range(count):
        invoice = {
            "number": f"FV/{series}/{i + 1}",
            "issue_date": today,
            "seller": {"nip": nip, "name": "Piekarnia Testowa Sp. z o.o.", "address": {"line1": "ul. Chlebowa 1"}},
            "buyer": {
                "nip": "5260250274",
                "name": "Hurtownia Odbiorca S.A.",
                "address": {"line1": "ul. Handlowa 2", "line2": "00-950 Warszawa"},
            },
            "lines": [
                {
                    "name": "Chleb żytni",
                    "unit": "szt.",
                    "quantity": "10",
                    "unit_net_price": f"{100 + i}.00",
                    "rate": "5",
                },
                {"name": "Usługa dostawy", "quantity": "1", "unit_net_price": "50.00", "rate": "23"},
            ],
        }
        documents.append(render_fa3(SalesInvoiceIn.model_validate(invoice), generated_at=generated))
    return documents


def _b64_sha256(data: bytes) -> str:
    import hashlib

    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, max."""
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0]
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return cuts[49], cuts[94], ordered[-1]


# --- the simulator (its own process) -------------------------------------------------------------------------------


class SimProcess:
    """The simulator served by a child process (``SIM_WORKER``); tokens issued and records read there on request."""

    def __init__(self, tmp: Path, processing_delay_s: float) -> None:
        data_dir = tmp / "sim"
        data_dir.mkdir()
        self.operator_token = secrets.token_urlsafe(32)
        env = {**os.environ, "KSEF_SIM_OPERATOR_TOKEN": self.operator_token}
        for variable in PROXY_VARIABLES:
            env.pop(variable, None)
        self.log_path = data_dir / "stderr.log"
        self._log = self.log_path.open("w")
        config = {"data_dir": str(data_dir), "random_seed": 2026, "processing_delay_s": processing_delay_s}
        self._process = subprocess.Popen(  # noqa: S603  # this very script, with data we made
            [sys.executable, __file__, SIM_WORKER, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.port = int(self._read()["port"])

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def _read(self) -> dict[str, Any]:
        stdout = cast(IO[str], self._process.stdout)
        while True:
            line = stdout.readline()
            if not line:
                self._process.wait(timeout=10)
                raise RuntimeError(f"the simulator process exited:\n{self.log_path.read_text()[-4000:]}")
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        stdin = cast(IO[str], self._process.stdin)
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self._read()

    def clients(self, count: int) -> list[Client]:
        """``count`` fresh contexts, each with its owner's KSeF token allowed to send."""
        return [Client(c["nip"], c["token"]) for c in self.ask({"op": "clients", "count": count})["clients"]]

    def records(self, nips: Sequence[str]) -> dict[str, Any]:
        """The session invoices and stored invoices of these sellers, as the simulator holds them."""
        return self.ask({"op": "records", "nips": list(nips)})

    def stats(self) -> dict[str, Any]:
        import httpx

        headers = {"Authorization": f"Bearer {self.operator_token}"}
        url = f"http://127.0.0.1:{self.port}/_sim/stats"
        response = httpx.get(url, headers=headers, timeout=30, trust_env=False)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def close(self) -> None:
        try:
            if self._process.poll() is None:
                self.ask({"op": "quit"})
            self._process.wait(timeout=30)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self._process.kill()  # our own child, by its handle
            self._process.wait(timeout=10)
        finally:
            self._log.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _sim_records(sim: Any, nips: list[str]) -> dict[str, Any]:
    from ksef_sim.domain.sessions import SessionInvoice
    from ksef_sim.records import StoredInvoice

    wanted = set(nips)
    session_invoices = [
        {
            "nip": i.context_value,
            "hash": i.invoice_hash,
            "code": i.code,
            "ksef_number": i.ksef_number,
            "final_at": i.final_at.isoformat(),
            "invoicing_date": i.invoicing_date.isoformat(),
            "upo_ready": i.upo_ready,
        }
        for i in sim.store.all(SessionInvoice)
        if i.context_value in wanted
    ]
    stored = [
        {"nip": i.seller_nip, "hash": i.invoice_hash, "ksef_number": i.ksef_number}
        for i in sim.store.all(StoredInvoice)
        if i.seller_nip in wanted
    ]
    return {"session_invoices": session_invoices, "stored": stored}


def sim_worker(config: dict[str, Any]) -> None:
    from ksef_sim.domain.auth import new_token
    from ksef_sim.domain.seed import random_nip
    from ksef_sim.refs import RefType, reference_number
    from ksef_sim.security import Identifier
    from ksef_sim.settings import RateLimitMode, SimSettings
    from ksef_sim.testing import SIM_HOST_NAME, serve

    _drop_proxies()
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    data_dir = Path(config["data_dir"])

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=data_dir / "ksef-sim.sqlite3",
            public_base_url=f"http://{SIM_HOST_NAME}:{port}",
            rate_limits=RateLimitMode.OFF,
            invoice_processing_delay_s=float(config["processing_delay_s"]),
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=int(config["random_seed"]),
        )

    rng = Random(int(config["random_seed"]))
    with serve(settings, operator_auto_auth=False) as running:
        print(json.dumps({"port": running.port}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "clients":
                clients = []
                for _ in range(int(command["count"])):
                    nip = random_nip(rng)
                    owner = Identifier("Nip", nip)
                    now = running.sim.clock.now()
                    record, token = new_token(
                        reference_number(RefType.KSEF_TOKEN, now),
                        owner,
                        owner,
                        "bench_send",
                        ["InvoiceRead", "InvoiceWrite"],
                        now,
                    )
                    running.sim.store.put(record)
                    clients.append({"nip": nip, "token": token})
                answer: dict[str, Any] = {"clients": clients}
            elif command["op"] == "records":
                answer = _sim_records(running.sim, [str(n) for n in command["nips"]])
            else:
                print(json.dumps({"bye": True}), flush=True)
                break
            print(json.dumps(answer), flush=True)


# --- the gateway (its own process) ---------------------------------------------------------------------------------


@dataclass
class SentCounter:
    """Stands on the in-process bus as a consumer of ``invoice.sent``: when each one arrived."""

    expected: int
    received_at: dict[str, datetime] = field(default_factory=dict)  # ksef_number -> when this consumer had it
    duplicates: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def topics(self) -> list[str]:
        from platform_common.contracts.invoices import InvoiceSent

        return [InvoiceSent.topic]

    async def deliver(self, topic: str, key: str | None, value: bytes, *, source: str) -> None:
        now = datetime.now(UTC)
        number = json.loads(value)["payload"]["ksef_number"]
        if number in self.received_at:
            self.duplicates += 1
            return
        self.received_at[number] = now
        if len(self.received_at) >= self.expected:
            self.done.set()


class Timed:
    """Wraps an object's coroutine methods (or one bound coroutine) and sums their calls and seconds by name."""

    def __init__(self, inner: Any, totals: dict[str, list[float]], prefix: str = "") -> None:
        self._inner = inner
        self._totals = totals
        self._prefix = prefix

    def wrap(self, name: str, method: Any) -> Any:
        totals = self._totals

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                entry = totals.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - started

        return timed

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if asyncio.iscoroutinefunction(attribute):
            return self.wrap(self._prefix + name, attribute)
        return attribute


@contextmanager
def gateway_database(tmp: Path) -> Iterator[tuple[str, str]]:
    """(URL, label): a throw-away PostgreSQL database when ``KSEF_HUB_TEST_PG_DSN`` is set, else an SQLite file."""
    admin = os.environ.get(PG_ENV)
    if not admin:
        yield f"sqlite+aiosqlite:///{tmp / 'gateway.db'}", f"SQLite ({PG_ENV} unset)"
        return
    from platform_common.testing.pg import temporary_database

    with temporary_database(admin, prefix="bench_send") as url:
        yield url, f"PostgreSQL ({PG_ENV}, a throw-away database)"


async def gateway_run(job: dict[str, Any]) -> dict[str, Any]:
    """The real gateway app (in-process transport, its default sales settings): register the clients' tokens, wait
    for their leases, then POST every invoice over in-process HTTP and wait for the last ``invoice.sent``."""
    import httpx
    from asgi_lifespan import LifespanManager
    from pydantic import SecretStr
    from sqlalchemy import select

    from ksef_gateway.db import messaging_tables, sales_invoice, sales_invoice_history
    from ksef_gateway.main import create_app
    from ksef_gateway.settings import GatewaySettings
    from ksef_gateway.wiring import Gateway
    from ksef_sim.testing import SIM_HOST_NAME, resolve_to_loopback
    from platform_common.messaging.dispatch import Dispatcher
    from platform_common.messaging.transport import InProcessBus
    from platform_common.settings import DatabaseSettings
    from platform_common.testing import wait_until
    from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

    clients = [Client(c["nip"], c["token"]) for c in job["clients"]]
    per_client = int(job["per_client"])
    nips = [c.nip for c in clients]
    documents = {c.nip: invoices_of(c.nip, per_client, f"G{i}", job["generated_at"]) for i, c in enumerate(clients)}
    # Round robin over the clients, as an office's ERPs would post: every context has work from the start.
    order = [(nip, documents[nip][i]) for i in range(per_client) for nip in nips]
    tokens = TokenFactory(clock=FakeClock(datetime.now(UTC)))
    settings = GatewaySettings.model_validate(
        {
            "db": DatabaseSettings(url=SecretStr(job["db_url"])),
            "messaging": {"transport": "inprocess"},
            "auth": tokens.settings(),
            "data_dir": Path(job["data_dir"]),
            "ksef": {"sim_base_url": job["api_url"], "environment": "sim", "replica_id": "bench"},
            "vault": {"master_keys": {"bench": base64.b64encode(os.urandom(32)).decode()}},
            "budget": {"mode": "off"},
            "telemetry": {"log_level": "WARNING"},
            "sync": {"enabled": False},
            # sales: the shipped defaults (tick, poll schedule, contexts at a time): the product as configured.
        }
    )
    bus = InProcessBus()
    counter = SentCounter(expected=len(order))
    bus.attach(cast(Dispatcher, counter))
    app = create_app(settings, bus=bus, migrate_on_start=True)
    authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = tokens.clock, tokens.transport()
    ksef_calls: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    statuses: dict[int, int] = {}
    timed_out = False
    with resolve_to_loopback(SIM_HOST_NAME):
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            await open_clients(app, *nips)
            gateway = Gateway.of(app.state.runtime)
            sender = cast(Any, gateway.sales_sender)
            # Timed in place: the sender's port to KSeF (each call) and its steps (each a DB transaction or more;
            # ``tick`` is its loop looking for contexts with due work).
            sender._ksef = Timed(sender._ksef, ksef_calls)
            step_timer = Timed(sender, steps)
            for step in ("tick", "_send", "_check", "_move", "_defer"):
                setattr(sender, step, step_timer.wrap(step.lstrip("_"), getattr(sender, step)))
            manage = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.credentials.manage'], nips=nips)}"}
            send = {
                "Authorization": f"Bearer {tokens.mint(perms=['ksef.send', 'ksef.read'], nips=nips)}",
                "Content-Type": "application/xml",
            }
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as api:
                registering = time.perf_counter()
                for client in clients:
                    body = {"kind": "ksef_token", "token": client.token}
                    r = await api.put(f"/clients/{client.nip}/credential", json=body, headers=manage)
                    if r.status_code != 201:
                        raise RuntimeError(f"registering {client.nip}: {r.status_code} {r.text}")
                for nip in nips:

                    async def leased(nip: str = nip) -> bool:
                        return gateway.leases.holds(nip) or await gateway.leases.try_acquire(nip)

                    await wait_until(leased, timeout=30, what=f"the lease of {nip}")
                registration_s = time.perf_counter() - registering

                limit = asyncio.Semaphore(int(job["concurrency"]))
                submitted_at: dict[str, datetime] = {}

                async def submit(nip: str, xml: bytes) -> None:
                    async with limit:
                        at = datetime.now(UTC)
                        r = await api.post(f"/clients/{nip}/sales", content=xml, headers=send)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 202:
                        submitted_at[r.json()["id"]] = at

                started, cpu_started = time.perf_counter(), time.process_time()
                await asyncio.gather(*(submit(nip, xml) for nip, xml in order))
                submitted_s = time.perf_counter() - started
                try:
                    await asyncio.wait_for(counter.done.wait(), timeout=float(job["timeout_s"]))
                except TimeoutError:
                    timed_out = True
                elapsed = time.perf_counter() - started
                cpu_s = time.process_time() - cpu_started

            async with app.state.runtime.db.sessionmaker() as session:
                invoice_rows = (
                    await session.execute(
                        select(
                            sales_invoice.c.id,
                            sales_invoice.c.client_nip,
                            sales_invoice.c.status,
                            sales_invoice.c.ksef_number,
                            sales_invoice.c.invoice_hash,
                            sales_invoice.c.upo,
                            sales_invoice.c.created_at,
                        ).where(sales_invoice.c.client_nip.in_(nips))
                    )
                ).all()
                history_rows = (
                    await session.execute(
                        select(
                            sales_invoice_history.c.invoice_id,
                            sales_invoice_history.c.status,
                            sales_invoice_history.c.at,
                        )
                    )
                ).all()
                outbox = messaging_tables.outbox
                published_rows = (
                    await session.execute(
                        select(outbox.c.payload, outbox.c.published_at).where(outbox.c.topic == "invoice.sent")
                    )
                ).all()
    history: dict[str, dict[str, str]] = {}
    for row in history_rows:
        # The last time it entered each state (a row sent again after a reconcile has two ``queued``).
        history.setdefault(str(row.invoice_id), {})[row.status] = _aware(row.at).isoformat()
    published: dict[str, str | None] = {}
    for row in published_rows:
        envelope = json.loads(row.payload) if isinstance(row.payload, str | bytes) else row.payload
        number = envelope["payload"]["ksef_number"]
        published[number] = _aware(row.published_at).isoformat() if row.published_at else None
    invoices = [
        {
            "id": str(row.id),
            "nip": row.client_nip,
            "status": row.status,
            "ksef_number": row.ksef_number,
            "hash": row.invoice_hash,
            "upo_names_number": bool(row.upo and row.ksef_number and row.ksef_number.encode() in bytes(row.upo)),
            "created_at": _aware(row.created_at).isoformat(),
            "posted_at": submitted_at[str(row.id)].isoformat() if str(row.id) in submitted_at else None,
            "history": history.get(str(row.id), {}),
        }
        for row in invoice_rows
    ]
    return {
        "expected": len(order),
        "http_statuses": {str(k): v for k, v in statuses.items()},
        "timed_out": timed_out,
        "duplicates": counter.duplicates,
        "seconds": elapsed,
        "cpu_s": cpu_s,
        "submitted_s": submitted_s,
        "registration_s": registration_s,
        "received_at": {k: v.isoformat() for k, v in counter.received_at.items()},
        "published_at": published,
        "invoices": invoices,
        "ksef_calls": ksef_calls,
        "steps": steps,
        "sales_settings": settings.sales.model_dump(include={"tick_interval_s", "poll_first_s", "poll_max_s"}),
        "relay_poll_interval_s": settings.messaging.relay_poll_interval_s,
        "peak_rss_mb": _peak_rss_mb(),
    }


def gateway_worker() -> None:
    _drop_proxies()
    job = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(gateway_run(job))))


# --- the ksef-client loop (its own process) ------------------------------------------------------------------------


def ksef_client_loop(job: dict[str, Any]) -> dict[str, Any]:
    """What a script over ksef-client does, one request at a time: per client, log in with the token, open an online
    session, send the invoices, poll each until KSeF decides and download its UPO, close the session. ``wait_each``:
    each invoice is sent, waited out and its UPO fetched before the next is sent (the loop as the brief reads);
    otherwise every invoice of the client is sent first, then each polled (its waits overlap KSeF's processing)."""
    from ksef_client import KsefClient, KsefClientOptions
    from ksef_client.models import FormCode
    from ksef_client.services import AuthCoordinator, OnlineSessionWorkflow

    clients: list[dict[str, str]] = job["clients"]
    per_client, series, wait_each = int(job["per_client"]), str(job["series"]), bool(job["wait_each"])
    documents = {c["nip"]: invoices_of(c["nip"], per_client, series, job["generated_at"]) for c in clients}
    accepted: list[dict[str, Any]] = []
    refused = 0
    polls = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    options = KsefClientOptions(base_url=job["api_url"], strict_presigned_url_validation=False, timeout_seconds=30)
    with KsefClient(options) as ksef:
        token_key = ksef.security.get_public_key_certificate("KsefTokenEncryption").certificate
        session_key = ksef.security.get_public_key_certificate("SymmetricKeyEncryption").certificate
        workflow = OnlineSessionWorkflow(ksef.sessions)
        for client in clients:
            access = AuthCoordinator(ksef.auth).authenticate_with_ksef_token(
                token=client["token"],
                public_certificate=token_key,
                context_identifier_type="Nip",
                context_identifier_value=client["nip"],
                poll_interval_seconds=0.01,
                max_attempts=500,
            )
            session = workflow.open_session(
                form_code=FormCode(system_code="FA (3)", schema_version="1-0E", value="FA"),
                public_certificate=session_key,
                access_token=access.access_token,
            )
            pending = documents[client["nip"]]
            while pending:
                chunk, pending = (pending[:1], pending[1:]) if wait_each else (pending, [])
                references = [session.send_invoice(xml).reference_number for xml in chunk]
                for reference in references:
                    while True:
                        status = session.get_invoice_status(reference)
                        polls += 1
                        if status.status.code not in PROCESSING_CODES:
                            break
                        time.sleep(BASELINE_POLL_S)
                    if status.status.code != 200 or not status.ksef_number:
                        refused += 1
                        continue
                    upo = session.get_invoice_upo_by_ref(reference)
                    accepted.append(
                        {"ksef_number": status.ksef_number, "upo_names_number": status.ksef_number.encode() in upo}
                    )
            session.close()
    return {
        "accepted": accepted,
        "refused": refused,
        "polls": polls,
        "seconds": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu_started,
        "peak_rss_mb": _peak_rss_mb(),
    }


def ksef_client_worker() -> None:
    _drop_proxies()
    job = json.loads(sys.stdin.read())
    print(json.dumps(ksef_client_loop(job)))


# --- the run -------------------------------------------------------------------------------------------------------


def check_sim(records: dict[str, Any], hashes: set[str], who: str) -> dict[str, dict[str, Any]]:
    """Every invoice accepted exactly once in the simulator (by hash), nothing else sent; by KSeF number."""
    session_invoices = records["session_invoices"]
    accepted = [i for i in session_invoices if i["code"] == 200]
    other = [i for i in session_invoices if i["code"] != 200]
    if other:
        codes = sorted({i["code"] for i in other})
        raise AssertionError(f"{who}: {len(other)} session invoices not accepted (codes {codes})")
    seen = [i["hash"] for i in accepted]
    twice = len(seen) - len(set(seen))
    if twice or set(seen) != hashes:
        missing = len(hashes - set(seen))
        raise AssertionError(f"{who}: {missing} of {len(hashes)} invoices not accepted in KSeF, {twice} accepted twice")
    stored = [i["hash"] for i in records["stored"]]
    if sorted(stored) != sorted(hashes):
        raise AssertionError(f"{who}: the simulator stores {len(stored)} invoices for {len(hashes)} sent")
    return {i["ksef_number"]: i for i in accepted}


def _ms(values: Sequence[float]) -> str:
    p50, p95, top = _quantiles(values)
    return f"p50 {p50 * 1000:6.0f} ms, p95 {p95 * 1000:6.0f} ms, max {top * 1000:6.0f} ms"


def _seconds_between(later: str | None, earlier: str | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


@dataclass(frozen=True)
class Loop:
    """One run of the ksef-client loop: its label, whether it waits out each invoice, its result."""

    label: str
    wait_each: bool
    result: dict[str, Any]

    @property
    def per_second(self) -> float:
        return len(self.result["accepted"]) / float(self.result["seconds"])


def report(
    gateway: dict[str, Any],
    loops: list[Loop],
    gateway_sim: dict[str, dict[str, Any]],
    db_label: str,
    invoices: int,
    clients: int,
    delay_s: float,
) -> None:
    ours = invoices / float(gateway["seconds"])
    print(
        f"1. throughput, submit -> accepted with UPO: {invoices} invoices over {clients} clients "
        f"({invoices // clients} each), invoice_processing_delay_s = {delay_s}"
    )
    print(f"   (rate limits off in the simulator and the gateway's budget; gateway on {db_label})")
    print(
        f"    {'gateway (POST -> KSeF -> UPO -> invoice.sent)':<50} {invoices:>5} in {gateway['seconds']:7.2f} s = "
        f"{ours:7.1f} invoices/s | peak RSS {gateway['peak_rss_mb']:.0f} MB | CPU {gateway['cpu_s']:.1f} s"
    )
    print(
        f"      (all {invoices} POSTs answered 202 within {gateway['submitted_s']:.2f} s; before the clock, "
        f"registering the {clients} tokens, each checked in KSeF, and taking the leases: "
        f"{gateway['registration_s']:.2f} s)"
    )
    for loop in loops:
        result = loop.result
        print(
            f"    {loop.label:<50} {len(result['accepted']):>5} in {result['seconds']:7.2f} s = "
            f"{loop.per_second:7.1f} invoices/s | peak RSS {result['peak_rss_mb']:.0f} MB | "
            f"CPU {result['cpu_s']:.1f} s | {result['polls']} polls"
        )
        if loop.wait_each and len(result["accepted"]) < invoices:
            print(
                f"      (run on {len(result['accepted'])} invoices to keep the bench short: its rate does not depend "
                f"on N; all {invoices} would take ~{invoices / loop.per_second:.0f} s, at least {invoices} x "
                f"{delay_s} s)"
            )
    for loop in loops:
        ratio = ours / loop.per_second
        print(
            f"    ratio gateway / {loop.label}: {ratio:.2f}x invoices per second "
            f"(target >= {THROUGHPUT_TARGET:.0f}x: {verdict(ratio >= THROUGHPUT_TARGET)})"
        )

    received: dict[str, str] = gateway["received_at"]
    published: dict[str, str | None] = gateway["published_at"]
    to_bus = [cast(float, _seconds_between(at, gateway_sim[n]["final_at"])) for n, at in received.items()]
    to_published = [
        d for n, at in published.items() if (d := _seconds_between(at, gateway_sim[n]["final_at"])) is not None
    ]
    p50, p95, top = _quantiles(to_bus)
    print()
    print("2. latency, KSeF's acceptance (the simulator's final_at) -> invoice.sent on the bus")
    print(
        f"    received by the bench's consumer on the in-process bus: p50 {p50:.2f} s, p95 {p95:.2f} s, max "
        f"{top:.2f} s (target p95 < {LATENCY_P95_TARGET_S:.0f} s: {verdict(p95 < LATENCY_P95_TARGET_S)})"
    )
    print(f"    outbox_message.published_at (after every consumer had it): {_ms(to_published)}")
    posted_to_bus = [
        d
        for i in gateway["invoices"]
        if (d := _seconds_between(received.get(i["ksef_number"]), i["posted_at"])) is not None
    ]
    print(f"    whole way, POST -> invoice.sent on the bus:                {_ms(posted_to_bus)}")

    settings = gateway["sales_settings"]
    print(
        f"   where the time goes, per invoice (sales_invoice_history, the simulator's invoicing_date / final_at; "
        f"sales settings as shipped: tick {settings['tick_interval_s']} s, first poll {settings['poll_first_s']} s, "
        f"longest pause {settings['poll_max_s']} s; relay poll {gateway['relay_poll_interval_s']} s):"
    )
    phases: dict[str, list[float]] = {
        "queued -> sending (waits for its turn)": [],
        "sending -> submitted (DB + POST to KSeF)": [],
        "KSeF receipt -> final_at (processing)": [],
        "final_at -> accepted (poll + UPO + commit)": [],
        "accepted -> on the bus (outbox relay)": [],
    }
    keys = list(phases)
    for invoice in gateway["invoices"]:
        h = invoice["history"]
        sim = gateway_sim.get(invoice["ksef_number"] or "")
        if sim is None:
            continue
        spans = (
            _seconds_between(h.get("sending"), h.get("queued")),
            _seconds_between(h.get("submitted"), h.get("sending")),
            _seconds_between(sim["final_at"], sim["invoicing_date"]),
            _seconds_between(h.get("accepted"), sim["final_at"]),
            _seconds_between(received.get(invoice["ksef_number"]), h.get("accepted")),
        )
        for key, span in zip(keys, spans, strict=True):
            if span is not None:
                phases[key].append(span)
    for key, values in phases.items():
        mean = statistics.fmean(values) * 1000 if values else float("nan")
        print(f"    {key:<44} mean {mean:6.0f} ms, {_ms(values)}")
    wall = float(gateway["seconds"])
    for title, table in (("KSeF calls of the sender", gateway["ksef_calls"]), ("sender steps", gateway["steps"])):
        parts = [
            f"{name} {int(count)} x {total / count * 1000:.0f} ms = {total:.1f} s"
            for name, (count, total) in sorted(table.items())
        ]
        print(f"    {title} (summed over {clients} concurrent contexts, wall {wall:.1f} s): " + ", ".join(parts))


def run(args: argparse.Namespace, tmp: Path) -> None:
    per_client = args.invoices // args.clients
    invoices = per_client * args.clients
    generated_at = datetime.now(UTC).isoformat()
    with SimProcess(tmp, args.processing_delay) as sim, gateway_database(tmp) as (db_url, db_label):
        ours, theirs = sim.clients(args.clients), sim.clients(args.clients)
        naive_per_client = args.naive_invoices // args.clients
        naive = sim.clients(args.clients) if naive_per_client else []
        data_dir = tmp / "gateway"
        data_dir.mkdir()
        job = {
            "api_url": sim.api_url,
            "clients": [{"nip": c.nip, "token": c.token} for c in ours],
            "per_client": per_client,
            "db_url": db_url,
            "data_dir": str(data_dir),
            "concurrency": args.concurrency,
            "timeout_s": args.timeout,
            "generated_at": generated_at,
        }
        gateway = run_worker(GATEWAY_WORKER, job, log=tmp / "gateway.stderr.log")
        gateway_records = sim.records([c.nip for c in ours])
        loops: list[tuple[Loop, dict[str, Any], set[str]]] = []
        plans = [("ksef-client loop: send all, then poll + UPO each", False, theirs, per_client, "K")]
        if naive_per_client:
            plans.append(("ksef-client loop: send, wait, UPO, one by one", True, naive, naive_per_client, "W"))
        for label, wait_each, contexts, count, series in plans:
            job = {
                "api_url": sim.api_url,
                "clients": [{"nip": c.nip, "token": c.token} for c in contexts],
                "per_client": count,
                "series": series,
                "wait_each": wait_each,
                "generated_at": generated_at,
            }
            result = run_worker(KSEF_CLIENT_WORKER, job, log=tmp / f"loop-{series}.stderr.log")
            hashes = {_b64_sha256(x) for c in contexts for x in invoices_of(c.nip, count, series, generated_at)}
            loops.append((Loop(label, wait_each, result), sim.records([c.nip for c in contexts]), hashes))
        by_status = sim.stats()["responsesByStatus"]

    if args.dump is not None:
        raw = {
            "gateway": {"result": gateway, "sim": gateway_records},
            "loops": [{"label": loop.label, "result": loop.result, "sim": records} for loop, records, _ in loops],
        }
        args.dump.write_text(json.dumps(raw, indent=1))
    # 3. correctness first: figures of a wrong run are not worth printing.
    if gateway["timed_out"]:
        raise AssertionError(
            f"the gateway published {len(gateway['received_at'])} of {invoices} invoice.sent within {args.timeout} s"
        )
    if gateway["http_statuses"] != {"202": invoices}:
        raise AssertionError(f"submissions answered {gateway['http_statuses']}, want 202 for all {invoices}")
    if gateway["duplicates"]:
        raise AssertionError(f"{gateway['duplicates']} invoice.sent events were delivered twice")
    rows = gateway["invoices"]
    not_done = [r for r in rows if r["status"] != "accepted" or not r["upo_names_number"]]
    if len(rows) != invoices or not_done:
        raise AssertionError(f"gateway: {len(not_done)} of {len(rows)} invoices not accepted with their UPO")
    gateway_sim = check_sim(gateway_records, {r["hash"] for r in rows}, "gateway")
    if {r["ksef_number"] for r in rows} != set(gateway_sim) or set(gateway["received_at"]) != set(gateway_sim):
        raise AssertionError("gateway: KSeF numbers of its rows, the simulator and invoice.sent disagree")
    if len(gateway["published_at"]) != invoices or None in gateway["published_at"].values():
        raise AssertionError("gateway: not every invoice.sent outbox row is published exactly once")
    accepted_in_sim = [*gateway_sim.values()]
    for loop, records, hashes in loops:
        loop_sim = check_sim(records, hashes, loop.label)
        result = loop.result
        if result["refused"] or not all(a["upo_names_number"] for a in result["accepted"]):
            raise AssertionError(f"{loop.label}: {result['refused']} refused or a UPO without its KSeF number")
        if {a["ksef_number"] for a in result["accepted"]} != set(loop_sim):
            raise AssertionError(f"{loop.label}: its KSeF numbers and the simulator's disagree")
        accepted_in_sim.extend(loop_sim.values())
    upo_in_sim = sum(1 for i in accepted_in_sim if i["upo_ready"])

    report(
        gateway, [loop for loop, _, _ in loops], gateway_sim, db_label, invoices, args.clients, args.processing_delay
    )
    counts = " + ".join(str(len(loop.result["accepted"])) for loop, _, _ in loops)
    print()
    print(
        f"3. correctness: each of the {invoices} (gateway) + {counts} (loops) invoices accepted exactly once in the "
        f"simulator (by "
        f"hash: one session invoice with 200, one stored invoice, none refused), each with its UPO (the gateway's row "
        f"and the loop's download name its KSeF number; {upo_in_sim} UPOs issued by the simulator), every "
        f"invoice.sent published once: ok"
    )
    print(f"    simulator /v2 answers by status: {by_status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--invoices", "-n", type=int, default=300, help="invoices in all (default 300)")
    parser.add_argument("--clients", "-m", type=int, default=3, help="clients they are spread over (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="gateway POSTs in flight at once (default 16)")
    parser.add_argument(
        "--processing-delay", type=float, default=0.5, help="simulator's invoice_processing_delay_s (default 0.5)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds the gateway may take (default 600)")
    parser.add_argument(
        "--naive-invoices",
        type=int,
        default=30,
        help="invoices for the one-by-one ksef-client loop, spread over --clients (default 30; 0 leaves it out)",
    )
    parser.add_argument("--dump", type=Path, help="write the raw per-invoice results as JSON to this file")
    args = parser.parse_args()
    if (
        args.clients < 1
        or args.invoices < args.clients
        or args.concurrency < 1
        or args.processing_delay < 0
        or args.naive_invoices < 0
    ):
        parser.error(
            "want --clients >= 1, --invoices >= --clients, --concurrency >= 1, --processing-delay >= 0, "
            "--naive-invoices >= 0"
        )
    if args.invoices % args.clients:
        print(f"(--invoices rounded down to {args.invoices // args.clients * args.clients}: the same for each client)")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    print("sales sending benchmark (KSeF simulator, gateway and ksef-client loop each in their own process)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        run(args, Path(tmp_name))
    print(f"\nbench_send took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] in WORKERS:
        if sys.argv[1] == SIM_WORKER:
            sim_worker(json.loads(sys.argv[2]))
        elif sys.argv[1] == GATEWAY_WORKER:
            gateway_worker()
        else:
            ksef_client_worker()
    else:
        main()
