"""Purchase sync end to end: KSeF (the simulator over real HTTP, in its own process as KSeF is) -> the gateway stores
each invoice -> its ``invoice.fetched`` event is published from the outbox. One run prints four parts:

1. **A fair fight**, rate limits off in the simulator and in the gateway's budget: the gateway against a plain
   sequential loop over the PyPI ``ksef-client`` package (metadata query + one download per invoice), same simulator,
   scenarios ``1x1000``, ``10x100`` and ``200x10`` (clients x invoices each). Gateway, loop and simulator each run in
   their own process, so each side's peak RSS is its own. The gateway's clients are registered first (each token
   checked in KSeF, timed apart); its clock runs from the start of the app until the last ``invoice.fetched`` left
   the outbox, the loop's from its start to its last download (its logins included, as the gateway's are). Targets
   beside the ratios: >= 3x, and >= 5x where the scenario has many small clients (>= 100 clients).
2. **Where the gateway's time goes** in the many-small-clients scenario: the OpenTelemetry spans ``sync.*`` and
   ``KSeF <operation>`` collected with the SDK's in-memory exporter (phases without spans print ``n/a``), plus the
   publish latency (store commit -> ``invoice.fetched`` delivered) seen by the bench's consumer.
3. **Under KSeF's production limits** (simulator ``rate_limits=production``, gateway budget ``production``): a first
   full sync of many clients, its wall time beside the minimum the limits allow and the time the sequential metadata +
   download loop would need (both computed from the limit tables, not run), the simulator's 429 count and how evenly
   the clients were served.
4. **Memory**: the embedded platform (``ksef_hub.embedded.create_embedded_app``, what ``make run`` serves) with many
   synced clients, in a child process: its peak RSS against the 400 MB target.

Prints figures and never asserts on speed; asserts only that every invoice arrived exactly once.

    uv run python bench/bench_sync.py [--scenarios 1x1000,10x100,200x10] [--production-clients 200]
        [--production-invoices 50] [--skip-production] [--memory-clients 200] [--skip-memory]

The simulator has no HTTP way to issue a KSeF token (its operator API has ``/seed`` for invoices, but tokens come
only from ``POST /v2/tokens`` after an XAdES login, or from ``ksef_sim.domain.auth.new_token`` in its process), so
the simulator child is this script in a worker mode: it serves ``ksef_sim.testing.serve()`` and seeds invoices and
tokens in its own process on request (a JSON line on stdin); the bench reads ``/_sim/stats`` over HTTP with the
operator token it put in the child's ``KSEF_SIM_OPERATOR_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import IO, Any, cast

import httpx

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
SEED_SPREAD = timedelta(days=20)
KSEF_CLIENT_WORKER = "--ksef-client-worker"
SIM_WORKER = "--ksef-sim-worker"
GATEWAY_WORKER = "--gateway-worker"
EMBEDDED_WORKER = "--embedded-worker"
WORKERS = (KSEF_CLIENT_WORKER, SIM_WORKER, GATEWAY_WORKER, EMBEDDED_WORKER)
DEFAULT_SCENARIOS = "1x1000,10x100,200x10"
MANY_CLIENTS = 100  # a scenario with at least this many clients is the "many small clients" one (target 5x)
MEMORY_TARGET_MB = 400.0
# The gateway's phases as its OpenTelemetry spans name them (``authentication`` and ``publish`` are derived).
SYNC_PHASES = ("sync.run", "sync.export.wait", "sync.download", "sync.decrypt", "sync.parse", "sync.store")
KSEF_SPAN_PREFIX = "KSeF "
# The gateway's KSeF operations on public endpoints (``group=EndpointGroup.PUBLIC`` in ksef_gateway/ksef/client.py):
# limited per IP, so every client's calls share one budget.
PUBLIC_OPERATIONS = ("security.public_keys", "auth.challenge", "auth.ksef_token", "auth.xades_signature")
AUTH_SPAN_PREFIX = "KSeF auth"


@dataclass(frozen=True)
class Client:
    nip: str
    token: str
    invoices: int


@dataclass
class Figures:
    invoices: int
    seconds: float
    peak_rss_mb: float

    @property
    def per_second(self) -> float:
        return self.invoices / self.seconds if self.seconds else float("inf")


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _own_peak_rss_mb() -> float:
    """This process's own peak: ru_maxrss survives execve (and a vfork'ed child starts inside the parent's memory),
    so a child reads VmHWM, which belongs to its new address space; getrusage where there is no /proc."""
    peak = _proc_status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _drop_proxies() -> None:
    for variable in PROXY_VARIABLES:  # a proxy would take the simulator's host name off loopback
        os.environ.pop(variable, None)


def _last_json_line(text: str) -> dict[str, Any]:
    lines = [line for line in text.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result line in the worker's output:\n{text[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_worker(flag: str, job: dict[str, Any], *, log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this very script as ``flag``'s worker with ``job`` on stdin; its last JSON line on stdout is the result."""
    with log.open("w") as stderr:
        done = subprocess.run(  # noqa: S603  # this very script, with data we made
            [sys.executable, __file__, flag],
            input=json.dumps(job),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=False,
            env=env,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{flag} failed (exit {done.returncode}):\n{log.read_text()[-4000:]}")
    return _last_json_line(done.stdout)


# --- the simulator (its own process) -------------------------------------------------------------------------------


class SimProcess:
    """The simulator served by a child process (``SIM_WORKER``), seeded there on request."""

    def __init__(self, rate_limits: str, tmp: Path, name: str) -> None:
        data_dir = tmp / name
        data_dir.mkdir()
        self.operator_token = secrets.token_urlsafe(32)
        env = {**os.environ, "KSEF_SIM_OPERATOR_TOKEN": self.operator_token}
        for variable in PROXY_VARIABLES:
            env.pop(variable, None)
        self.log_path = data_dir / "stderr.log"
        self._log = self.log_path.open("w")
        config = {"rate_limits": rate_limits, "data_dir": str(data_dir), "random_seed": 2026}
        self._process = subprocess.Popen(  # noqa: S603  # this very script, with data we made
            [sys.executable, __file__, SIM_WORKER, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        ready = self._read()
        self.port = int(ready["port"])

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.root_url}/v2"

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

    def prepare(self, counts: list[int]) -> tuple[list[Client], datetime]:
        """Seed each client's purchase invoices there and issue its KSeF token; ``date_from`` precedes them all."""
        answer = self.ask({"op": "prepare", "counts": counts})
        clients = [Client(c["nip"], c["token"], int(c["invoices"])) for c in answer["clients"]]
        return clients, datetime.fromisoformat(answer["date_from"])

    def stats(self) -> dict[str, Any]:
        """``GET /_sim/stats`` of the operator API, with the operator token."""
        headers = {"Authorization": f"Bearer {self.operator_token}"}
        response = httpx.get(f"{self.root_url}/_sim/stats", headers=headers, timeout=30, trust_env=False)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def peak_rss_mb(self) -> float:
        return float(self.ask({"op": "rss"})["peak_rss_mb"])

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


def prepare_clients(sim: Any, counts: list[int], rng: Random) -> list[Client]:
    """In the simulator's process: seed each client's purchase invoices (ending a minute ago: all below the HWM) and
    issue its KSeF token, the owner's, in its own context."""
    from ksef_sim.domain.auth import new_token
    from ksef_sim.domain.seed import SeedOptions, random_nip, seed_invoices
    from ksef_sim.refs import RefType, reference_number
    from ksef_sim.security import Identifier

    clients = []
    now = sim.clock.now()
    for count in counts:
        nip = random_nip(rng)
        seed_invoices(
            sim,
            SeedOptions(
                buyer_nip=nip,
                count=count,
                sellers=25,
                start=now - SEED_SPREAD - timedelta(minutes=1),
                spread_days=SEED_SPREAD.total_seconds() / 86400,
            ),
        )
        owner = Identifier("Nip", nip)
        record, token = new_token(
            reference_number(RefType.KSEF_TOKEN, now), owner, owner, "bench_sync", ["InvoiceRead"], now
        )
        sim.store.put(record)
        clients.append(Client(nip, token, count))
    return clients


def sim_worker(config: dict[str, Any]) -> None:
    from ksef_sim.settings import RateLimitMode, SimSettings
    from ksef_sim.testing import SIM_HOST_NAME, serve

    _drop_proxies()
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    data_dir = Path(config["data_dir"])

    def settings(port: int) -> SimSettings:
        # The operator token comes from KSEF_SIM_OPERATOR_TOKEN, which the bench put in this process's environment.
        return SimSettings(
            database_path=data_dir / "ksef-sim.sqlite3",
            # A host name, not a loopback literal: ksef-client refuses pre-signed URLs on loopback addresses.
            public_base_url=f"http://{SIM_HOST_NAME}:{port}",
            rate_limits=RateLimitMode(config["rate_limits"]),
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=int(config["random_seed"]),
        )

    rng = Random(int(config["random_seed"]))
    # operator_auto_auth=False: /_sim is served exactly as to a stranger, so the bench must show the token.
    with serve(settings, operator_auto_auth=False) as running:
        print(json.dumps({"port": running.port}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "prepare":
                date_from = running.sim.clock.now() - SEED_SPREAD - timedelta(hours=1)
                clients = prepare_clients(running.sim, [int(c) for c in command["counts"]], rng)
                answer: dict[str, Any] = {
                    "clients": [{"nip": c.nip, "token": c.token, "invoices": c.invoices} for c in clients],
                    "date_from": date_from.isoformat(),
                }
            elif command["op"] == "rss":
                answer = {"peak_rss_mb": _own_peak_rss_mb()}
            else:
                print(json.dumps({"bye": True}), flush=True)
                break
            print(json.dumps(answer), flush=True)


# --- the gateway (its own process) ---------------------------------------------------------------------------------


@dataclass
class FetchedCounter:
    """Stands on the in-process bus as a consumer of ``invoice.fetched``: sees each event the outbox published, and
    when (per client, and how long after the envelope was made in the store's transaction)."""

    expected: int
    started: float = field(default_factory=time.perf_counter)
    seen: set[tuple[str, str]] = field(default_factory=set)
    duplicates: int = 0
    last_per_client: dict[str, float] = field(default_factory=dict)
    publish_latencies: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def topics(self) -> list[str]:
        from platform_common.contracts.invoices import InvoiceFetched

        return [InvoiceFetched.topic]

    async def deliver(self, topic: str, key: str | None, value: bytes, *, source: str) -> None:
        envelope = json.loads(value)
        payload = envelope["payload"]
        item = (payload["client_nip"], payload["ksef_number"])
        if item in self.seen:
            self.duplicates += 1
            return
        self.seen.add(item)
        # ``occurred_at`` is stamped when the envelope is made, in the transaction that stores the invoice and
        # writes its outbox row: from there to here is the publish phase (relay poll + delivery).
        occurred = datetime.fromisoformat(envelope["occurred_at"])
        self.publish_latencies.append((datetime.now(UTC) - occurred).total_seconds())
        self.last_per_client[payload["client_nip"]] = time.perf_counter() - self.started
        if len(self.seen) >= self.expected:
            self.done.set()


def _gateway_settings(api_url: str, data_dir: Path, budget_mode: str, master_key: str, *, sync: bool) -> Any:
    from pydantic import SecretStr

    from ksef_gateway.settings import GatewaySettings
    from platform_common.settings import DatabaseSettings, MessagingSettings

    return GatewaySettings.model_validate(
        {
            "db": DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{data_dir / 'gateway.db'}")),
            "messaging": MessagingSettings(transport="inprocess", relay_poll_interval_s=0.2),
            "data_dir": data_dir,
            "ksef": {"sim_base_url": api_url, "environment": "sim", "replica_id": "bench"},
            "vault": {"master_keys": {"bench": master_key}},
            "budget": {"mode": budget_mode},
            "telemetry": {"log_level": "WARNING"},
            # The gateway's own sync defaults (polling, scheduling, concurrency): the product as shipped.
            "sync": {"enabled": sync},
        }
    )


def _credential(token: str) -> Any:
    from pydantic import SecretStr

    from ksef_gateway.ksef.environments import Environment
    from ksef_gateway.vault.domain import CredentialKind, Scope
    from ksef_gateway.vault.service import CredentialSetup

    return CredentialSetup(
        kind=CredentialKind.KSEF_TOKEN, scope=Scope.READ, environment=Environment.SIM, token=SecretStr(token)
    )


async def gateway_run(job: dict[str, Any]) -> dict[str, Any]:
    """The real gateway app (SQLite, in-process transport): register every client's token, run until the last
    ``invoice.fetched`` left the outbox. With ``spans``, a TracerProvider with an in-memory exporter is the
    gateway's (``runtime.telemetry``, and the global one for any tracer taken from ``opentelemetry.trace``)."""
    from asgi_lifespan import LifespanManager
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ksef_gateway.main import create_app
    from ksef_gateway.wiring import Gateway
    from ksef_sim.testing import SIM_HOST_NAME, resolve_to_loopback
    from platform_common.messaging.dispatch import Dispatcher
    from platform_common.messaging.transport import InProcessBus
    from platform_common.telemetry import Telemetry

    clients = [Client(c["nip"], c["token"], int(c["invoices"])) for c in job["clients"]]
    data_dir = Path(job["data_dir"])
    exporter: InMemorySpanExporter | None = None
    telemetry: Telemetry | None = None
    if job["spans"]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        # enabled=False: the gateway's tracers record, but the app does not add FastAPI and SQLAlchemy
        # instrumentation (a span per query would slow the very thing measured).
        telemetry = Telemetry(provider, metrics.NoOpMeterProvider(), enabled=False)
    bus = InProcessBus()
    counter = FetchedCounter(expected=sum(c.invoices for c in clients))
    bus.attach(cast(Dispatcher, counter))
    master_key = base64.b64encode(os.urandom(32)).decode()
    timed_out = False
    with resolve_to_loopback(SIM_HOST_NAME):  # the export parts' pre-signed URLs name the simulator's host
        # Onboarding first, with the scheduler off: each registration checks its token in KSeF (a login), as when
        # an office adds its clients. Then the gateway starts afresh on that database and the clock runs from its
        # start until the last invoice.fetched left the outbox: the first full sync of registered clients.
        onboarding = create_app(
            _gateway_settings(job["api_url"], data_dir, job["budget_mode"], master_key, sync=False),
            bus=InProcessBus(),
            migrate_on_start=True,
        )
        registering = time.perf_counter()
        async with LifespanManager(onboarding, startup_timeout=60, shutdown_timeout=60):
            gateway = Gateway.of(onboarding.state.runtime)
            for client in clients:
                await gateway.vault.register(client.nip, _credential(client.token), "bench")
        registration_s = time.perf_counter() - registering
        if exporter is not None:
            exporter.clear()  # only the sync's spans
        settings = _gateway_settings(job["api_url"], data_dir, job["budget_mode"], master_key, sync=True)
        app = create_app(settings, bus=bus, telemetry=telemetry, migrate_on_start=True)
        counter.started = started = time.perf_counter()
        elapsed: float | None = None
        shutdown_hung = False
        try:
            async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
                try:
                    await asyncio.wait_for(counter.done.wait(), timeout=float(job["timeout_s"]))
                except TimeoutError:
                    timed_out = True
                elapsed = time.perf_counter() - started
        except TimeoutError:
            if elapsed is None:
                raise
            shutdown_hung = True  # measured already; reported, and the process ends anyway
    spans: dict[str, list[float]] = {}
    ksef_calls: dict[str, int] = {}
    if exporter is not None:
        for span in exporter.get_finished_spans():
            if span.start_time is None or span.end_time is None:
                continue
            entry = spans.setdefault(span.name, [0, 0.0])
            entry[0] += 1
            entry[1] += (span.end_time - span.start_time) / 1e9
            if span.name.startswith(KSEF_SPAN_PREFIX):
                operation = span.name.removeprefix(KSEF_SPAN_PREFIX)
                ksef_calls[operation] = ksef_calls.get(operation, 0) + 1
    return {
        "invoices": len(counter.seen),
        "expected": counter.expected,
        "timed_out": timed_out,
        "shutdown_hung": shutdown_hung,
        "duplicates": counter.duplicates,
        "seconds": elapsed,
        "registration_s": registration_s,
        "peak_rss_mb": _own_peak_rss_mb(),
        "completion_s": sorted(counter.last_per_client.values()),
        "clients_done": len(counter.last_per_client),
        "publish_latencies_s": counter.publish_latencies,
        "spans": spans,
        "ksef_calls": ksef_calls,
    }


def gateway_worker() -> None:
    _drop_proxies()
    job = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(gateway_run(job))))


@dataclass
class GatewayResult:
    figures: Figures
    raw: dict[str, Any]


def run_gateway(
    sim: SimProcess, clients: list[Client], tmp: Path, name: str, *, budget: str, spans: bool, timeout_s: float
) -> GatewayResult:
    data_dir = tmp / name
    data_dir.mkdir()
    job = {
        "api_url": sim.api_url,
        "clients": [{"nip": c.nip, "token": c.token, "invoices": c.invoices} for c in clients],
        "data_dir": str(data_dir),
        "budget_mode": budget,
        "spans": spans,
        "timeout_s": timeout_s,
    }
    raw = run_worker(GATEWAY_WORKER, job, log=data_dir / "stderr.log")
    if raw["duplicates"]:
        raise AssertionError(f"{raw['duplicates']} invoice.fetched events were published twice")
    if raw["shutdown_hung"]:
        print("  !! the gateway app did not shut down within 30 s after the sync (figures are unaffected)")
    if raw["timed_out"]:
        print(f"  !! the gateway delivered {raw['invoices']} of {raw['expected']} invoices within {timeout_s:.0f} s")
    return GatewayResult(Figures(int(raw["invoices"]), float(raw["seconds"]), float(raw["peak_rss_mb"])), raw)


# --- the ksef-client loop (its own process) ------------------------------------------------------------------------


def ksef_client_loop(api_url: str, clients: list[dict[str, Any]], date_from: str) -> dict[str, float]:
    """What a script over ksef-client does: log in with the token, page the metadata, download every invoice."""
    from ksef_client import KsefClient, KsefClientOptions
    from ksef_client.services import AuthCoordinator

    downloaded = 0
    started = time.perf_counter()
    options = KsefClientOptions(base_url=api_url, strict_presigned_url_validation=False, timeout_seconds=30)
    with KsefClient(options) as ksef:
        certificate = ksef.security.get_public_key_certificate("KsefTokenEncryption").certificate
        for client in clients:
            access = AuthCoordinator(ksef.auth).authenticate_with_ksef_token(
                token=client["token"],
                public_certificate=certificate,
                context_identifier_type="Nip",
                context_identifier_value=client["nip"],
                poll_interval_seconds=0.01,
                max_attempts=500,
            )
            offset = 0
            while True:
                page = ksef.invoices.query_invoice_metadata_by_date_range(
                    subject_type="Subject2",
                    date_type="PermanentStorage",
                    date_from=date_from,
                    access_token=access.access_token,
                    page_offset=offset,
                    page_size=250,
                    sort_order="Asc",
                )
                for metadata in page.invoices:
                    assert metadata.ksef_number is not None
                    ksef.invoices.get_invoice_bytes(metadata.ksef_number, access_token=access.access_token)
                    downloaded += 1
                if not page.has_more:
                    break
                offset += 1
    return {"invoices": downloaded, "seconds": time.perf_counter() - started, "peak_rss_mb": _own_peak_rss_mb()}


def ksef_client_worker() -> None:
    _drop_proxies()
    job = json.loads(sys.stdin.read())
    print(json.dumps(ksef_client_loop(job["api_url"], job["clients"], job["date_from"])))


def run_ksef_client(sim: SimProcess, clients: list[Client], date_from: datetime, tmp: Path, name: str) -> Figures:
    job = {
        "api_url": sim.api_url,
        "clients": [{"nip": c.nip, "token": c.token} for c in clients],
        "date_from": date_from.isoformat(),
    }
    result = run_worker(KSEF_CLIENT_WORKER, job, log=tmp / f"{name}.stderr.log")
    return Figures(int(result["invoices"]), float(result["seconds"]), float(result["peak_rss_mb"]))


# --- KSeF's limits, as arithmetic ----------------------------------------------------------------------------------


def earliest_last_request(count: int, windows: Sequence[tuple[float, int]]) -> float:
    """When the ``count``-th request can go out at the earliest, the first at t=0, under sliding windows
    ``(span_s, limit)`` enforced together (KSeF: a hit counts in a window while ``end > now - span``; requests are
    taken to be instantaneous, so this is a lower bound). Greedy: request k goes at the first instant where, in every
    window, the k-``limit``-th request before it has slid out (``t >= times[k - limit] + span``)."""
    if count <= 0:
        return 0.0
    times: list[float] = []
    t = 0.0
    for k in range(count):
        while True:
            later = t
            for span, limit in windows:
                if limit <= 0:
                    return math.inf
                if k >= limit and times[k - limit] > later - span:
                    later = times[k - limit] + span
            if later == t:
                break
            t = later
        times.append(t)
    return times[-1]


def _windows(limit: Any) -> tuple[tuple[float, int], ...]:
    return ((1.0, int(limit.per_second)), (60.0, int(limit.per_minute)), (3600.0, int(limit.per_hour)))


def public_minimum(calls: int, usable_fraction: float | None = None) -> float:
    """The least time ``calls`` calls to public endpoints (one per-IP budget) take: at KSeF's limits (the simulator's
    table), or at the share the gateway's budget allows itself (its ``limit_table``)."""
    if usable_fraction is None:
        from ksef_sim.ratelimit import PRODUCTION_LIMITS, Group

        return earliest_last_request(calls, _windows(PRODUCTION_LIMITS[Group.PUBLIC]))
    from ksef_gateway.budget.domain import limit_table

    ours = limit_table("production", {}, usable_fraction)
    assert ours is not None
    return earliest_last_request(calls, _windows(ours["public"]))


@dataclass(frozen=True)
class LimitEstimates:
    minimum_s: float  # what KSeF's limits allow the export path at the least
    minimum_gateway_s: float  # the same at the share of each window the gateway's budget allows itself
    sequential_s: float  # the sequential metadata + download loop, one client after another
    sequential_per_client_s: float


def limit_estimates(clients: int, invoices: int, usable_fraction: float) -> LimitEstimates:
    """From the limit tables in code: the simulator's (what it enforces; REFERENCE.md §13) and the gateway's.

    Export path (what the gateway does; REFERENCE.md §9): per client 2 public calls (``POST /auth/challenge``,
    ``POST /auth/ksef-token``; public endpoints are limited per IP, so all clients share one budget), then in its own
    context ``GET /auth/{ref}`` + ``POST /auth/token/redeem`` (other), one ``POST /invoices/exports``
    (invoiceExport), at least one ``GET /invoices/exports/{ref}`` (invoiceExportStatus); the package parts' pre-signed
    URLs are not limited. Limits count per (context, IP), and one or two calls per group never fill a context's
    window, so the only shared bottleneck is the public group:
        minimum = earliest_last_request(2 * clients, public windows) (+ one public-key fetch).

    Sequential loop (what a script over ksef-client does): per client the same auth, then ceil(n / 250) metadata
    pages (invoiceMetadata 8/16/20) and n downloads ``GET /invoices/ksef/{n}`` (invoiceDownload 8/16/64) in that
    client's context; one client after the other, so
        sequential = clients * (earliest_last_request(pages, metadata) + earliest_last_request(n, download)).
    With 50 invoices a client that is 180 s (16 downloads a minute), whatever the machine.
    """
    from ksef_sim.ratelimit import PRODUCTION_LIMITS, Group

    public_calls = 2 * clients + 1
    pages = max(1, math.ceil(invoices / 250))
    per_client = earliest_last_request(pages, _windows(PRODUCTION_LIMITS[Group.INVOICE_METADATA])) + (
        earliest_last_request(invoices, _windows(PRODUCTION_LIMITS[Group.INVOICE_DOWNLOAD]))
    )
    return LimitEstimates(
        minimum_s=public_minimum(public_calls),
        minimum_gateway_s=public_minimum(public_calls, usable_fraction),
        sequential_s=clients * per_client,
        sequential_per_client_s=per_client,
    )


# --- the embedded platform (its own process) -----------------------------------------------------------------------


async def embedded_run(job: dict[str, Any]) -> dict[str, Any]:
    """``create_embedded_app`` served over HTTP on loopback (the gateway calls the mounted simulator through the
    server, as under ``make run``), without the demo data; ``clients`` clients seeded in its simulator, their tokens
    registered in its gateway's vault, until every ``invoice.fetched`` was published."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.routing import Mount

    from ksef_gateway.settings import GatewaySettings
    from ksef_gateway.wiring import Gateway
    from ksef_hub.embedded import KSEF_SIM_PREFIX, create_embedded_app
    from platform_common.messaging.dispatch import Dispatcher

    data_dir = Path(job["data_dir"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    root = create_embedded_app(data_dir, public_url=f"http://127.0.0.1:{port}", demo=False)
    config = uvicorn.Config(root, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("the embedded server stopped during startup")
        await asyncio.sleep(0.05)
    rss_started = _own_peak_rss_mb()
    mounts = {route.path: cast(FastAPI, route.app) for route in root.routes if isinstance(route, Mount)}
    sim = mounts[KSEF_SIM_PREFIX].state.sim
    gateway_app = next(a for a in mounts.values() if isinstance(getattr(a.state, "settings", None), GatewaySettings))
    runtime = gateway_app.state.runtime
    counts = [int(job["invoices"])] * int(job["clients"])
    clients = prepare_clients(sim, counts, Random(2027))
    counter = FetchedCounter(expected=sum(counts))
    runtime.transport.bus.attach(cast(Dispatcher, counter))
    gateway = Gateway.of(runtime)
    counter.started = started = time.perf_counter()
    timed_out = False
    try:
        for client in clients:
            await gateway.vault.register(client.nip, _credential(client.token), "bench")
        await asyncio.wait_for(counter.done.wait(), timeout=float(job["timeout_s"]))
    except TimeoutError:
        timed_out = True
    elapsed = time.perf_counter() - started
    await asyncio.sleep(2)  # let the other services consume the last events (buffer-svc keeps a copy)
    rss_now = _proc_status_mb("VmRSS") or 0.0
    result = {
        "invoices": len(counter.seen),
        "expected": counter.expected,
        "clients_done": len(counter.last_per_client),
        "timed_out": timed_out,
        "duplicates": counter.duplicates,
        "seconds": elapsed,
        "rss_started_mb": rss_started,
        "rss_now_mb": rss_now,
        "peak_rss_mb": _own_peak_rss_mb(),
    }
    server.should_exit = True
    await serving
    return result


def embedded_worker() -> None:
    _drop_proxies()
    job = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(embedded_run(job))))


# --- the run -------------------------------------------------------------------------------------------------------


def _line(label: str, figures: Figures) -> str:
    return (
        f"    {label:<34} {figures.invoices:>6} invoices in {figures.seconds:7.2f} s = {figures.per_second:8.1f} "
        f"invoices/s | peak RSS {figures.peak_rss_mb:6.1f} MB"
    )


def _registration(result: GatewayResult) -> str:
    return (
        f"    (before that clock: registering the {len(result.raw['completion_s'])} clients' tokens, each checked in "
        f"KSeF, took {result.raw['registration_s']:.2f} s)"
    )


def _split(invoices: int, clients: int) -> list[int]:
    return [c for c in (invoices // clients + (1 if i < invoices % clients else 0) for i in range(clients)) if c > 0]


def parse_scenarios(text: str) -> list[tuple[int, int]]:
    """``"1x1000,10x100"`` -> [(1, 1000), (10, 100)]: clients x invoices per client."""
    scenarios = []
    for part in text.split(","):
        clients, _, invoices = part.strip().lower().partition("x")
        scenarios.append((int(clients), int(invoices)))
    if not scenarios or any(c < 1 or n < 1 for c, n in scenarios):
        raise ValueError(text)
    return scenarios


def _target(clients: int) -> float:
    return 5.0 if clients >= MANY_CLIENTS else 3.0


def fair_fight(scenarios: list[tuple[int, int]], tmp: Path, timeout_s: float) -> tuple[str, GatewayResult] | None:
    """Part 1; returns the spans of the many-small-clients scenario (the one with the most clients) for part 2."""
    breakdown_index = max(range(len(scenarios)), key=lambda i: scenarios[i][0])
    breakdown: tuple[str, GatewayResult] | None = None
    print("1. fair fight: gateway vs. a sequential ksef-client loop, rate limits off (simulator and gateway budget)")
    print("   (simulator, gateway and ksef-client loop each in their own process: each peak RSS is its own)")
    with SimProcess("off", tmp, "sim-off") as sim:
        for index, (clients, invoices) in enumerate(scenarios):
            label = f"{clients} client{'s' if clients > 1 else ''} x {invoices} invoices"
            counts = [invoices] * clients
            # Separate clients per contender: neither gets invoices the other already warmed up.
            ours, _ = sim.prepare(counts)
            theirs, date_from = sim.prepare(counts)
            spans = index == breakdown_index
            gateway = run_gateway(sim, ours, tmp, f"gateway-{index}", budget="off", spans=spans, timeout_s=timeout_s)
            baseline = run_ksef_client(sim, theirs, date_from, tmp, f"ksef-client-{index}")
            if baseline.invoices != sum(counts):
                raise AssertionError(f"ksef-client loop downloaded {baseline.invoices} of {sum(counts)} invoices")
            ratio = gateway.figures.per_second / baseline.per_second
            target = _target(clients)
            verdict = "target met" if ratio >= target else "below target"
            print(f"  {label}:")
            print(_line("gateway (KSeF -> stored -> event)", gateway.figures))
            print(_line("ksef-client sequential loop", baseline))
            print(_registration(gateway))
            print(
                f"    ratio gateway / ksef-client: {ratio:.1f}x invoices per second "
                f"(target >= {target:.0f}x: {verdict})"
            )
            if spans:
                breakdown = (label, gateway)
        stats = sim.stats()
        print(
            f"  simulator process: peak RSS {sim.peak_rss_mb():.1f} MB (counted on neither side); "
            f"/v2 answers by status {stats['responsesByStatus']}"
        )
    return breakdown


def _phase_line(name: str, count: int, total_s: float, wall_s: float) -> str:
    if count == 0:
        return f"    {name:<34} {'n/a':>7}"
    return f"    {name:<34} {count:>7} {total_s:10.2f} {total_s / count * 1000:10.1f} {total_s / wall_s * 100:9.1f} %"


def phases(label: str, result: GatewayResult) -> None:
    """Part 2: the gateway's spans of one run."""
    wall = result.figures.seconds
    spans: dict[str, list[float]] = result.raw["spans"]
    print()
    print(f"2. gateway phases, {label} (wall {wall:.2f} s, spans from an in-memory OpenTelemetry exporter;")
    print("   clients run concurrently and publish sums every invoice's latency, so a share can exceed 100 %)")
    print(f"    {'phase':<34} {'count':>7} {'total s':>10} {'mean ms':>10} {'share':>11}")

    def summed(predicate: Callable[[str], bool]) -> tuple[int, float]:
        chosen = [v for name, v in spans.items() if predicate(name)]
        return int(sum(v[0] for v in chosen)), float(sum(v[1] for v in chosen))

    def named(phase: str) -> Callable[[str], bool]:
        return lambda name: name == phase

    for phase in SYNC_PHASES[:1]:
        print(_phase_line(phase, *summed(named(phase)), wall))
    print(_phase_line("authentication (KSeF auth* spans)", *summed(lambda n: n.startswith(AUTH_SPAN_PREFIX)), wall))
    for phase in SYNC_PHASES[1:]:
        print(_phase_line(phase, *summed(named(phase)), wall))
    other = summed(lambda n: n.startswith(KSEF_SPAN_PREFIX) and not n.startswith(AUTH_SPAN_PREFIX))
    print(_phase_line("other KSeF calls (KSeF * spans)", *other, wall))
    latencies: list[float] = result.raw["publish_latencies_s"]
    print(_phase_line("publish (commit -> delivered), each", len(latencies), sum(latencies), wall))
    if latencies:
        print(
            f"      publish latency per invoice: median {statistics.median(latencies) * 1000:.0f} ms, max "
            f"{max(latencies) * 1000:.0f} ms (the outbox relay polls every 0.2 s)"
        )
    calls = result.raw["ksef_calls"]
    if calls:
        print("    KSeF calls: " + ", ".join(f"{op} {n}" for op, n in sorted(calls.items())))


def _fmt_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def production(clients: int, invoices: int, tmp: Path, timeout_s: float, full: tuple[int, int]) -> None:
    """Part 3: a first full sync under KSeF's production limits (simulator and gateway budget)."""
    from ksef_gateway.settings import BudgetSettings

    budget = BudgetSettings(mode="production")
    scaled = (clients, invoices) != full
    print()
    print(
        f"3. first full sync under KSeF's production limits: {clients} clients x {invoices} invoices"
        + (f" (scaled down from {full[0]} x {full[1]})" if scaled else "")
    )
    print(
        f"   (simulator rate_limits=production, gateway BudgetSettings(mode='production'), usable fraction "
        f"{budget.usable_fraction})"
    )
    with SimProcess("production", tmp, "sim-production") as sim:
        ours, _ = sim.prepare([invoices] * clients)
        result = run_gateway(sim, ours, tmp, "gateway-production", budget="production", spans=True, timeout_s=timeout_s)
        stats = sim.stats()
    estimates = limit_estimates(clients, invoices, budget.usable_fraction)
    wall = result.figures.seconds
    calls: dict[str, int] = result.raw["ksef_calls"]
    print(_line("gateway (KSeF -> stored -> event)", result.figures))
    print(_registration(result))
    print(
        f"    minimum the limits allow (export path: 2 public auth calls a client, limited per IP): "
        f"{_fmt_duration(estimates.minimum_s)} at KSeF's limits, {_fmt_duration(estimates.minimum_gateway_s)} at the "
        f"gateway's usable share"
    )
    public_made = sum(calls.get(operation, 0) for operation in PUBLIC_OPERATIONS)
    if public_made:
        print(
            f"    for the {public_made} public calls the gateway made (from its spans): "
            f"{_fmt_duration(public_minimum(public_made))} at KSeF's limits, "
            f"{_fmt_duration(public_minimum(public_made, budget.usable_fraction))} at its usable share"
        )
    print(
        f"    sequential metadata + download loop under the same limits (computed, not run): "
        f"{_fmt_duration(estimates.sequential_s)} ({_fmt_duration(estimates.sequential_per_client_s)} a client)"
        f" = {estimates.sequential_s / wall:.0f}x the gateway's wall time"
    )
    by_status: dict[str, int] = stats["responsesByStatus"]
    too_many = by_status.get("429", 0)
    print(
        f"    429 answers seen by the simulator: {too_many} (must be 0: {'ok' if too_many == 0 else 'NOT OK'}); "
        f"/v2 answers by status {by_status}"
    )
    completion: list[float] = result.raw["completion_s"]
    if completion:
        quantiles = statistics.quantiles(completion, n=20) if len(completion) > 1 else [completion[0]] * 19
        print(
            f"    fairness, per-client completion (last invoice.fetched) of {len(completion)} clients: first "
            f"{completion[0]:.1f} s, median {statistics.median(completion):.1f} s, p95 {quantiles[18]:.1f} s, last "
            f"{completion[-1]:.1f} s (spread {completion[-1] - completion[0]:.1f} s)"
        )
    if calls:
        print("    KSeF calls: " + ", ".join(f"{op} {n}" for op, n in sorted(calls.items())))
    if scaled:
        full_estimates = limit_estimates(*full, budget.usable_fraction)
        print(
            f"    at the full {full[0]} x {full[1]}: minimum {_fmt_duration(full_estimates.minimum_s)}, sequential "
            f"loop {_fmt_duration(full_estimates.sequential_s)} (computed; the gateway was not run at that size)"
        )


def memory(clients: int, invoices: int, tmp: Path, timeout_s: float) -> None:
    """Part 4: the embedded platform's peak RSS with ``clients`` synced clients, in a child process."""
    print()
    print(
        f"4. memory: the embedded platform (make run) with {clients} synced clients x {invoices} invoices, own process"
    )
    data_dir = tmp / "embedded"
    data_dir.mkdir()
    env = {**os.environ, "KSEF_HUB_LOG_LEVEL": "WARNING"}
    job = {"data_dir": str(data_dir), "clients": clients, "invoices": invoices, "timeout_s": timeout_s}
    result = run_worker(EMBEDDED_WORKER, job, log=tmp / "embedded.stderr.log", env=env)
    if result["duplicates"]:
        raise AssertionError(f"{result['duplicates']} invoice.fetched events were published twice (embedded)")
    peak = float(result["peak_rss_mb"])
    print(
        f"    synced {result['clients_done']} clients, {result['invoices']} of {result['expected']} invoices in "
        f"{result['seconds']:.1f} s" + (" (TIMED OUT)" if result["timed_out"] else "")
    )
    print(
        f"    RSS after startup {result['rss_started_mb']:.1f} MB, after the sync {result['rss_now_mb']:.1f} MB; "
        f"peak {peak:.1f} MB (target < {MEMORY_TARGET_MB:.0f} MB: "
        f"{'target met' if peak < MEMORY_TARGET_MB else 'above target'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help=f"fair-fight scenarios, clients x invoices each ({DEFAULT_SCENARIOS})",
    )
    parser.add_argument("--invoices", "-n", type=int, help="old form: N invoices for one client and over M clients")
    parser.add_argument("--clients", "-m", type=int, default=10, help="old form: M clients (with --invoices)")
    parser.add_argument("--production-clients", type=int, default=200, help="part 3: clients (default 200)")
    parser.add_argument("--production-invoices", type=int, default=50, help="part 3: invoices each (default 50)")
    parser.add_argument("--skip-production", action="store_true", help="leave out part 3 (production limits)")
    parser.add_argument("--memory-clients", type=int, default=200, help="part 4: clients (default 200)")
    parser.add_argument("--memory-invoices", type=int, default=20, help="part 4: invoices each (default 20)")
    parser.add_argument("--skip-memory", action="store_true", help="leave out part 4 (embedded platform RSS)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any one sync may take (default 900)")
    args = parser.parse_args()
    if args.invoices is not None:
        if args.invoices < 1 or args.clients < 1:
            parser.error("--invoices and --clients must be positive")
        many = _split(args.invoices, args.clients)
        if len(set(many)) != 1:
            parser.error("--invoices must divide by --clients (or use --scenarios)")
        scenarios = [(1, args.invoices), (len(many), many[0])]
    else:
        try:
            scenarios = parse_scenarios(args.scenarios)
        except ValueError:
            parser.error(f"--scenarios {args.scenarios!r}: want e.g. {DEFAULT_SCENARIOS}")
    for flag in ("production_clients", "production_invoices", "memory_clients", "memory_invoices"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    print("purchase sync benchmark (KSeF simulator in its own process)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        breakdown = fair_fight(scenarios, tmp, args.timeout)
        if breakdown is not None:
            phases(*breakdown)
        if args.skip_production:
            print("\n3. production limits: skipped (--skip-production)")
        else:
            production(args.production_clients, args.production_invoices, tmp, args.timeout, (200, 50))
        if args.skip_memory:
            print("\n4. memory: skipped (--skip-memory)")
        else:
            memory(args.memory_clients, args.memory_invoices, tmp, args.timeout)
    print(f"\nbench_sync took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] in WORKERS:
        flag = sys.argv[1]
        if flag == SIM_WORKER:
            sim_worker(json.loads(sys.argv[2]))
        elif flag == GATEWAY_WORKER:
            gateway_worker()
        elif flag == EMBEDDED_WORKER:
            embedded_worker()
        else:
            ksef_client_worker()
    else:
        main()
