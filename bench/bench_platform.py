"""The whole platform under load: an office with many clients and their purchase invoices, from KSeF (the
simulator) through ksef-gateway, the event transport and buffer-svc, over HTTP only, on both runners.

For each runner (``--runners distributed,embedded``):

- **distributed**: ``ksef_hub.distributed.Supervisor`` (what ``make up`` runs: every service its own OS process, two
  replicas of the gateway and of buffer-svc, the simulator its own process) over a PostgreSQL and a Kafka broker of
  its own (an ``InfraInstance`` on free ports in a temporary directory, as the distributed journey has), so the suite's
  infrastructure is neither measured nor disturbed. The front (the one port that proxies the five APIs) runs in this
  process, as in the journey; its memory is this process's.
- **embedded**: ``ksef_hub.embedded.create_embedded_app`` (what ``make run`` serves) in a child process over uvicorn on
  loopback, without demo data: every service and the simulator in that one process, over **its own SQLite files and
  the in-process bus**. Not PostgreSQL and Kafka: the embedded runner owns its database and transport (its settings fix
  them), so that is the only embedded platform there is; the comparison is the product's two shapes, not two
  transports under one topology. Its outbox relays poll every 0.2 s (fixed by the runner) where the distributed
  services here poll every 0.1 s.

Both get the journey's fast ticks (``ksef_hub.onboarding.FAST``: simulator rate limits off, the gateway's budget off,
short polls), as environment variables. The same steps then run on each, through ``ksef_hub.onboarding`` (the helpers
the distributed journey uses):

1. ``auth-svc bootstrap``'s office and operator (the distributed runner's one-shot step; in the embedded child the
   same ``auth_svc.bootstrap.bootstrap`` call once its services are up).
2. The clients, the quickest honest way the platform allows: the consent request, the client's agreement by the
   e-mailed link and the activation code from the return address, ``--concurrency`` clients at a time (the owner's
   invitation is left unaccepted: activation does not need it and the bench reads as the office). Timed apart.
3. Each client's KSeF token made in the simulator (an XAdES login there, as the owner would) and its purchase
   invoices seeded through the simulator's operator API ``POST /_sim/seed``, unevenly as in a real office (a few
   large clients, a long tail: weight ``1 / rank**0.8``). Timed apart.
4. **The clock** runs from seeding done until every invoice is listed in buffer-svc for its client: it includes the
   office registering every client's token with the gateway (``PUT /gateway/clients/{nip}/credential``, each checked
   in KSeF; that alone is printed too), the gateway's first sync of each client (export, download, store), the
   ``invoice.fetched`` events and buffer-svc consuming them. "Listed" is read from ``GET /buffer/clients/{nip}/months``
   (counts), asked one client at a time in turn over the unfinished ones (its latency is printed as a fourth read,
   "the count poll"; asking every client at once would load buffer-svc as much as the ingestion measured), so the
   end is seen within about one request of it; afterwards every client's buffer is listed page by page and must
   hold each seeded invoice exactly once (asserted).
5. **Meanwhile**, from seeding done to the last invoice listed: latency of the read APIs an office uses while
   invoices arrive (one request in flight per API, rotating over the clients): buffer-svc's list of a client's month,
   the gateway's sync status of a client, approval-svc's months of a client; Kafka consumer lag per consumer group
   (distributed: committed offsets against the partitions' ends, read with aiokafka's admin client and a group-less
   consumer, every second) and each service's outbox backlog (``GET /<service>/ops/messaging``, as an operator: with
   the in-process bus this is the embedded runner's consumer lag, its consumers getting events inside the outbox
   relay). Lag and backlog print their maximum, their value when the last invoice was listed, and how long after that
   they reached zero.
6. **Memory**: peak RSS (``/proc/<pid>/status`` VmHWM; psutil is not installed) of every service process, the
   simulator and the front; for embedded, the one process.

**Baseline**, measured in the same run against each runner's own simulator once the platform is idle: the plain
sequential loop over the PyPI ``ksef-client`` package that bench_sync.py uses (per client a KSeF-token login, the
metadata query, one download per invoice), in a child process, over ``--baseline-invoices`` invoices of clients of
its own (one per twenty of the office's) seeded the same uneven way. The ratio printed is the platform's end-to-end
rate (KSeF -> every invoice listed in the buffer, its token registration included) over the loop's download rate: how
many times faster the platform brings an office's invoices all the way into its buffer than a script merely
downloads them one by one.

A table of both runners' figures and the ratio distributed / embedded closes the run. Every figure depends on the
machine: the distributed runner's nine processes, its PostgreSQL and Kafka, the front and the bench share its cores
(``os.cpu_count()`` is printed), where the embedded runner is one process (one core for Python) beside the bench.
Prints figures and never asserts on speed; asserts only that every seeded invoice is in the buffer exactly once.

    uv run python bench/bench_platform.py [--clients 200] [--invoices 100000] [--runners distributed,embedded]
        [--concurrency 16] [--baseline-invoices 2000] [--timeout 3600]
    uv run python bench/bench_platform.py --clients 20 --invoices 2000      # a quick run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from random import Random
from typing import Any, TypeVar, cast

import httpx

T = TypeVar("T")

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
EMBEDDED_WORKER = "--embedded-worker"
RUNNERS = ("distributed", "embedded")
PASSWORD = "bench-platform-2026"  # noqa: S105  # a throw-away platform on loopback
OFFICE_NAME = "Biuro Rachunkowe Obciążenie Sp. z o.o."
ADMIN, OPERATOR = "admin@obciazenie.example.com", "ops@obciazenie.example.com"
SERVICE_PREFIXES = ("auth", "gateway", "buffer", "approval", "notify")
SEED_SPREAD_DAYS = 20
SELLERS_PER_CLIENT = 40
SAMPLE_PAUSE_S = 0.05  # between one read API's samples: each API has one request in flight, not a flood
MONITOR_INTERVAL_S = 1.0
DRAIN_TIMEOUT_S = 120.0
RELOGIN_S = 600.0  # access tokens live 15 minutes; a long run signs in again well before
RANK_EXPONENT = 0.8


def _drop_proxies(env: dict[str, str] | None = None) -> dict[str, str]:
    target = os.environ if env is None else env
    for variable in PROXY_VARIABLES:  # a proxy would take loopback traffic off this machine
        target.pop(variable, None)
    return dict(target)


def uneven_split(total: int, parts: int) -> list[int]:
    """``total`` over ``parts`` by weight ``1 / rank**0.8`` (largest remainder), each at least one."""
    parts = max(1, min(parts, total))
    weights = [1.0 / (i + 1) ** RANK_EXPONENT for i in range(parts)]
    spare = total - parts
    shares = [w / sum(weights) * spare for w in weights]
    counts = [1 + int(s) for s in shares]
    by_remainder = sorted(range(parts), key=lambda i: shares[i] - int(shares[i]), reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def proc_status_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def bounded(limit: int, calls: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


def _fast_env() -> dict[str, str]:
    from ksef_hub.onboarding import FAST

    return {k: v for variables in FAST.values() for k, v in variables.items()}


# --- a running platform, either runner -----------------------------------------------------------------------------


@dataclass
class Live:
    """What the measurement needs of a running platform: its URL, its simulator and its processes."""

    runner: str
    base_url: str
    sim_root: str  # the simulator's root (its API under /v2, its operator API under /_sim)
    sim_operator: dict[str, str]
    kafka_bootstrap: str | None
    processes: Callable[[], dict[str, int | None]]  # name -> pid, now
    restarts: Callable[[], dict[str, int]] = lambda: {}
    notes: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def distributed_platform(tmp: Path, office_nip: str) -> AsyncIterator[Live]:
    import uvicorn

    from ksef_hub.distributed import Bootstrap, InfraInstance, Supervisor
    from ksef_hub.onboarding import FAST
    from platform_common.testing.auth import serve_config_on_loopback

    infra = InfraInstance(tmp / "infra", pg_port=free_port(), kafka_port=free_port(), kafka_controller_port=free_port())
    supervisor = Supervisor(
        tmp / "platform",
        infra,
        extra_env=FAST,
        bootstrap=Bootstrap(OPERATOR, OFFICE_NAME, office_nip, ADMIN, PASSWORD),
    )
    try:
        await supervisor.start()
        config = uvicorn.Config(supervisor.front_app(), log_config=None, access_log=False)
        async with serve_config_on_loopback(config, supervisor.front_sock) as front:
            processes = supervisor.processes

            def pids() -> dict[str, int | None]:
                found = {name: p.pid for name, p in processes.items()}
                found["front (proxy, in the bench's process)"] = os.getpid()
                return found

            yield Live(
                runner="distributed",
                base_url=front,
                sim_root=processes["ksef-sim"].url,
                sim_operator={"Authorization": f"Bearer {supervisor.sim_operator_token()}"},
                kafka_bootstrap=infra.kafka_bootstrap,
                processes=pids,
                restarts=lambda: {p.name: p.restarts for p in processes.values() if p.restarts},
                notes=[f"logs in {supervisor.logs}"],
            )
    finally:
        await supervisor.stop()
        await infra.run("down")


@contextlib.asynccontextmanager
async def embedded_platform(tmp: Path, office_nip: str) -> AsyncIterator[Live]:
    data_dir = tmp / "embedded"
    data_dir.mkdir()
    operator_token = secrets.token_urlsafe(32)
    env = _drop_proxies(
        {
            **os.environ,
            **_fast_env(),
            "KSEF_SIM_OPERATOR_TOKEN": operator_token,
            "KSEF_HUB_LOG_LEVEL": "WARNING",
        }
    )
    job = {"data_dir": str(data_dir), "office_nip": office_nip}
    log_path = tmp / "embedded.stderr.log"
    with log_path.open("wb") as log:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            EMBEDDED_WORKER,
            json.dumps(job),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
        )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        while True:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=180)
            if not line:
                await child.wait()
                raise RuntimeError(f"the embedded runner exited:\n{log_path.read_text(errors='replace')[-4000:]}")
            if line.startswith(b"{"):
                ready = json.loads(line)
                break
        base = f"http://127.0.0.1:{ready['port']}"
        yield Live(
            runner="embedded",
            base_url=base,
            sim_root=f"{base}/ksef-sim",
            sim_operator={"Authorization": f"Bearer {operator_token}"},
            kafka_bootstrap=None,
            processes=lambda: {"embedded (every service + simulator)": child.pid if child.returncode is None else None},
            notes=[f"log in {log_path}"],
        )
    finally:
        if child.returncode is None:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.write(b"quit\n")
                await child.stdin.drain()
            try:
                await asyncio.wait_for(child.wait(), timeout=60)
            except TimeoutError:
                child.kill()  # our own child, by its handle
                await child.wait()


async def embedded_serve(job: dict[str, Any]) -> None:
    """In the child: the embedded platform served on a loopback port, the office bootstrapped once it is up."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.routing import Mount

    from auth_svc.bootstrap import bootstrap
    from ksef_hub.embedded import AUTH_PREFIX, create_embedded_app

    os.umask(0o077)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    root = create_embedded_app(Path(job["data_dir"]), public_url=f"http://127.0.0.1:{port}", demo=False)
    config = uvicorn.Config(root, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("the embedded server stopped during startup")
        await asyncio.sleep(0.05)
    mounts = {route.path: cast(FastAPI, route.app) for route in root.routes if isinstance(route, Mount)}
    # What `auth-svc bootstrap` does, on the embedded auth-svc's own database, now that its migrations have run.
    await bootstrap(
        mounts[AUTH_PREFIX].state.settings,
        operator_email=OPERATOR,
        operator_password=PASSWORD,
        office_name=OFFICE_NAME,
        office_nip=job["office_nip"],
        admin_email=ADMIN,
        admin_password=PASSWORD,
    )
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # "quit", or EOF when the bench is gone
    server.should_exit = True
    await serving


def embedded_worker(job: dict[str, Any]) -> None:
    _drop_proxies()
    asyncio.run(embedded_serve(job))


# --- the baseline: a sequential ksef-client loop (its own process) -------------------------------------------------

# The very loop bench_sync.py measures, run through that script's own worker mode, so both benches compare against
# the same baseline.
BENCH_SYNC = Path(__file__).with_name("bench_sync.py")
KSEF_CLIENT_WORKER = "--ksef-client-worker"


@dataclass(frozen=True)
class Baseline:
    clients: int
    invoices: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.invoices / self.seconds if self.seconds else float("inf")


async def run_baseline(live: Live, http: httpx.AsyncClient, invoices: int, clients: int, rng: Random) -> Baseline:
    from ksef_gateway.testing import KsefHarness
    from ksef_sim.domain.seed import random_nip

    harness = KsefHarness(live.sim_root, http)
    counts = uneven_split(invoices, clients)
    nips = [random_nip(rng) for _ in counts]
    date_from = (datetime.now(UTC) - timedelta(days=SEED_SPREAD_DAYS + 1)).isoformat()
    seeded = 0
    for nip, count in zip(nips, counts, strict=True):
        seeded += await seed(http, live, nip, count)
    tokens = [await harness.create_ksef_token(nip, ("InvoiceRead",)) for nip in nips]
    job = {
        "api_url": f"{live.sim_root}/v2",
        "clients": [{"nip": n, "token": t} for n, t in zip(nips, tokens, strict=True)],
        "date_from": date_from,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(BENCH_SYNC), KSEF_CLIENT_WORKER],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
        env=_drop_proxies(dict(os.environ)),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the ksef-client loop failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    if int(result["invoices"]) != seeded:
        raise AssertionError(f"the ksef-client loop downloaded {result['invoices']} of {seeded} invoices")
    return Baseline(len(nips), seeded, float(result["seconds"]))


# --- measuring -----------------------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    samples: list[float] = field(default_factory=list)  # ms
    refused: Counter[int] = field(default_factory=Counter)  # non-200 answers by status

    def quantile(self, q: int) -> float:
        if not self.samples:
            return float("nan")
        if len(self.samples) == 1:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=100, method="inclusive")[q - 1]


@dataclass
class Gauge:
    """A backlog sampled over time: its maximum, its value when the last invoice was listed, when it reached 0."""

    maximum: int = 0
    at_end: int | None = None
    zero_after_s: float | None = None
    last: int = 0

    def add(self, value: int) -> None:
        self.last = value
        self.maximum = max(self.maximum, value)


@dataclass
class Result:
    runner: str
    clients: int
    invoices: int
    largest: int
    smallest: int
    startup_s: float
    onboarding_s: float
    tokens_s: float
    seeding_s: float
    registration_s: float
    ingest_s: float
    latencies: list[Series]
    kafka_lag: dict[str, Gauge]
    outbox: dict[str, Gauge]
    rss: dict[str, tuple[float | None, float | None]]  # name -> (peak, now) MB
    restarts: dict[str, int]
    retried: int  # 502/503 answers (or refused connections) the bench's clients asked again
    dead_letters: dict[str, int]
    baseline: Baseline | None
    notes: list[str]

    @property
    def per_second(self) -> float:
        return self.invoices / self.ingest_s if self.ingest_s else float("inf")


async def seed(http: httpx.AsyncClient, live: Live, nip: str, count: int) -> int:
    response = await http.post(
        f"{live.sim_root}/_sim/seed",
        json={
            "buyerNip": nip,
            "count": count,
            "sellers": min(SELLERS_PER_CLIENT, count),
            "spreadDays": SEED_SPREAD_DAYS,
            "corrections": 0,
        },
        headers=live.sim_operator,
    )
    if response.status_code != 201:
        raise AssertionError(f"seeding {nip}: {response.status_code} {response.text}")
    return int(response.json()["created"])


class KafkaLag:
    """Consumer lag per group on a broker: committed offsets (admin client) against the partitions' ends (a
    group-less read_committed consumer), over every partition of each topic the group has committed on."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._topics: dict[str, set[str]] = {}
        self._partitions: dict[str, list[int]] = {}

    async def __aenter__(self) -> KafkaLag:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, isolation_level="read_committed"
        )
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def sample(self) -> dict[str, int]:
        from aiokafka import TopicPartition

        lags: dict[str, int] = {}
        groups = sorted(str(g[0]) for g in await self.admin.list_consumer_groups())
        for group in groups:
            committed = await self.admin.list_consumer_group_offsets(group)
            topics = self._topics.setdefault(group, set())
            topics.update(tp.topic for tp in committed)
            unknown = [t for t in topics if t not in self._partitions]
            if unknown:
                for described in await self.admin.describe_topics(unknown):
                    self._partitions[described["topic"]] = [p["partition"] for p in described["partitions"]]
            partitions = [TopicPartition(t, p) for t in sorted(topics) for p in self._partitions.get(t, [])]
            if not partitions:
                continue
            ends = await self.consumer.end_offsets(partitions)
            total = 0
            for tp in partitions:
                done = committed.get(tp)
                # No commit on a partition yet: the group reads it from the beginning (auto_offset_reset=earliest).
                position = done.offset if done is not None and done.offset >= 0 else 0
                total += max(0, int(ends[tp]) - position)
            lags[group] = total
        return lags


async def outbox_backlog(http: httpx.AsyncClient, operator: dict[str, str]) -> dict[str, int]:
    pending: dict[str, int] = {}
    for prefix in SERVICE_PREFIXES:
        response = await http.get(f"/{prefix}/ops/messaging", headers=operator)
        if response.status_code == 200:
            pending[prefix] = int(response.json()["outbox"]["pending"])
    return pending


async def measure(
    live: Live,
    clients: int,
    invoices: int,
    concurrency: int,
    baseline_invoices: int,
    timeout_s: float,
    startup_s: float,
    rng: Random,
    office_nip: str,
) -> Result:
    from ksef_gateway.testing import KsefHarness
    from ksef_hub.onboarding import PlatformClient, RetryUnavailable
    from ksef_sim.domain.seed import random_nip

    limits = httpx.Limits(max_connections=concurrency + 16, max_keepalive_connections=concurrency + 16)
    # As the journey's client: a 502/503 (a proxied connection the service had just closed, a replica away) is asked
    # again; how often is printed, since each such retry is inside the latency sampled.
    retrying = RetryUnavailable(limits)
    browsers: list[RetryUnavailable] = []

    def browser() -> RetryUnavailable:
        browsers.append(RetryUnavailable())
        return browsers[-1]

    async with (
        httpx.AsyncClient(base_url=live.base_url, timeout=120, trust_env=False, transport=retrying) as http,
        httpx.AsyncClient(timeout=600, trust_env=False) as sim_http,
    ):
        platform = PlatformClient(http, PASSWORD, mail_interval=0.25, browser_transport=browser)
        admin = await platform.login(ADMIN)
        operator = await platform.login(OPERATOR)

        async def relogin() -> None:
            while True:
                await asyncio.sleep(RELOGIN_S)
                admin.update(await platform.login(ADMIN))  # in place: every sampler holds these very dicts
                operator.update(await platform.login(OPERATOR))

        relogging = asyncio.create_task(relogin())
        try:
            office_id = (await http.get("/auth/me", headers=admin)).json()["context"]["org"]
            nips: list[str] = []
            while len(nips) < clients:
                nip = random_nip(rng)
                if nip != office_nip and nip not in nips:
                    nips.append(nip)
            counts = dict(zip(nips, uneven_split(invoices, clients), strict=True))
            print(f"  [{live.runner}] onboarding {clients} clients, {concurrency} at a time ...", flush=True)

            started = time.perf_counter()
            await bounded(
                concurrency,
                [
                    partial(
                        platform.connect_client,
                        admin,
                        office_id,
                        f"Klient {i + 1} Sp. z o.o.",
                        nip,
                        owner_email=f"zarzad@{nip}.example.com",
                        return_email=f"kody-{nip}@obciazenie.example.com",
                        accept_invitation=False,
                    )
                    for i, nip in enumerate(nips)
                ],
            )
            onboarding_s = time.perf_counter() - started

            harness = KsefHarness(live.sim_root, sim_http)
            started = time.perf_counter()
            tokens = dict(
                zip(
                    nips,
                    await bounded(concurrency, [partial(harness.create_ksef_token, nip) for nip in nips]),
                    strict=True,
                )
            )
            tokens_s = time.perf_counter() - started
            print(f"  [{live.runner}] seeding {invoices} purchase invoices in the simulator ...", flush=True)
            started = time.perf_counter()
            seeded = {nip: await seed(sim_http, live, nip, count) for nip, count in counts.items()}
            seeding_s = time.perf_counter() - started
            if sum(seeded.values()) != invoices:
                raise AssertionError(f"the simulator created {sum(seeded.values())} of {invoices} invoices")

            # --- the clock: seeding done -> every invoice listed in buffer-svc -------------------------------
            t0 = time.perf_counter()
            stop = asyncio.Event()
            period = datetime.now(UTC).strftime("%Y-%m")
            series = [
                Series("buffer-svc: a client's month, 50 a page"),
                Series("ksef-gateway: a client's sync status"),
                Series("approval-svc: a client's months"),
            ]
            months_series = Series("buffer-svc: a client's months (the count poll)")
            paths: list[Callable[[str], tuple[str, dict[str, Any]]]] = [
                lambda nip: (f"/buffer/clients/{nip}/purchases", {"period": period, "limit": 50}),
                lambda nip: (f"/gateway/clients/{nip}/sync", {}),
                lambda nip: (f"/approval/clients/{nip}/months", {}),
            ]

            async def sample_reads(s: Series, path: Callable[[str], tuple[str, dict[str, Any]]]) -> None:
                i = 0
                while not stop.is_set():
                    url, params = path(nips[i % len(nips)])
                    begun = time.perf_counter()
                    response = await http.get(url, params=params, headers=admin)
                    elapsed = (time.perf_counter() - begun) * 1000
                    if response.status_code == 200:
                        s.samples.append(elapsed)
                    else:
                        s.refused[response.status_code] += 1
                    i += 1
                    await asyncio.sleep(SAMPLE_PAUSE_S)

            kafka_lag: dict[str, Gauge] = {}
            outbox: dict[str, Gauge] = {}
            lag_reader = KafkaLag(live.kafka_bootstrap) if live.kafka_bootstrap else None

            async def monitor_once() -> None:
                if lag_reader is not None:
                    for group, lag in (await lag_reader.sample()).items():
                        kafka_lag.setdefault(group, Gauge()).add(lag)
                for service, pending in (await outbox_backlog(http, operator)).items():
                    outbox.setdefault(service, Gauge()).add(pending)

            async def monitor() -> None:
                while not stop.is_set():
                    await monitor_once()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), MONITOR_INTERVAL_S)

            async with contextlib.AsyncExitStack() as stack:
                if lag_reader is not None:
                    await stack.enter_async_context(lag_reader)
                samplers = [asyncio.create_task(sample_reads(s, p)) for s, p in zip(series, paths, strict=True)]
                monitoring = asyncio.create_task(monitor())
                begun = time.perf_counter()
                await bounded(
                    concurrency,
                    [partial(platform.register_token, admin, nip, tokens[nip]) for nip in nips],
                )
                registration_s = time.perf_counter() - begun
                print(
                    f"  [{live.runner}] tokens registered in {registration_s:.1f} s; waiting for the buffer", flush=True
                )

                listed: dict[str, int] = dict.fromkeys(nips, 0)
                pending = list(nips)
                last_report = time.perf_counter()
                # One count in flight at a time, the way the read samplers ask: polling every unfinished client at
                # once would load buffer-svc's database as much as the ingestion being measured. A client is asked
                # again once every other unfinished one has been; near the end few remain, so the last is seen soon.
                while pending:
                    nip = pending.pop(0)
                    begun = time.perf_counter()
                    response = await http.get(f"/buffer/clients/{nip}/months", headers=admin)
                    now = time.perf_counter()
                    if response.status_code == 200:
                        months_series.samples.append((now - begun) * 1000)
                        listed[nip] = sum(int(m["entries"]) for m in response.json())
                    else:
                        months_series.refused[response.status_code] += 1
                    if listed[nip] < seeded[nip]:
                        pending.append(nip)
                    if now - t0 > timeout_s:
                        raise AssertionError(
                            f"{live.runner}: {sum(listed.values())} of {invoices} invoices listed after "
                            f"{timeout_s:.0f} s ({len(pending)} clients unfinished)"
                        )
                    if now - last_report > 15:
                        last_report = now
                        print(
                            f"  [{live.runner}] {now - t0:6.0f} s: {sum(listed.values())} of {invoices} listed",
                            flush=True,
                        )
                    if pending:
                        await asyncio.sleep(SAMPLE_PAUSE_S)
                t1 = time.perf_counter()
                ingest_s = t1 - t0
                stop.set()
                await asyncio.gather(*samplers, monitoring)

                # At the end, then until every backlog is empty (other consumers may still be working).
                await monitor_once()
                for gauge in [*kafka_lag.values(), *outbox.values()]:
                    gauge.at_end = gauge.last
                    gauge.zero_after_s = 0.0 if gauge.last == 0 else None
                while time.perf_counter() - t1 < DRAIN_TIMEOUT_S and any(
                    g.zero_after_s is None for g in [*kafka_lag.values(), *outbox.values()]
                ):
                    await asyncio.sleep(MONITOR_INTERVAL_S)
                    await monitor_once()
                    for gauge in [*kafka_lag.values(), *outbox.values()]:
                        if gauge.zero_after_s is None and gauge.last == 0:
                            gauge.zero_after_s = time.perf_counter() - t1

            # Exactly once: every client's buffer listed in full.
            async def check(nip: str) -> None:
                entries = await platform.entries(nip, admin)
                numbers = Counter(e["ksef_number"] for e in entries)
                if len(entries) != seeded[nip] or len(numbers) != seeded[nip]:
                    raise AssertionError(
                        f"{live.runner}: {nip} holds {len(entries)} entries, {len(numbers)} distinct, of "
                        f"{seeded[nip]} seeded"
                    )

            await bounded(concurrency, [partial(check, nip) for nip in nips])

            dead_letters: dict[str, int] = {}
            for prefix in SERVICE_PREFIXES:
                response = await http.get(f"/{prefix}/ops/dead-letters", params={"limit": 500}, headers=operator)
                dead_letters[prefix] = len(response.json()) if response.status_code == 200 else -1
            rss = {
                name: (proc_status_mb(pid, "VmHWM"), proc_status_mb(pid, "VmRSS")) if pid else (None, None)
                for name, pid in live.processes().items()
            }
            restarts = live.restarts()
            retried = retrying.retried + sum(b.retried for b in browsers)

            baseline = None
            if baseline_invoices > 0:
                print(f"  [{live.runner}] baseline: the sequential ksef-client loop ...", flush=True)
                baseline_clients = max(1, min(baseline_invoices, clients // 20 or 1))
                baseline = await run_baseline(live, sim_http, baseline_invoices, baseline_clients, rng)
        finally:
            relogging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relogging

    sizes = sorted(seeded.values())
    return Result(
        runner=live.runner,
        clients=clients,
        invoices=invoices,
        largest=sizes[-1],
        smallest=sizes[0],
        startup_s=startup_s,
        onboarding_s=onboarding_s,
        tokens_s=tokens_s,
        seeding_s=seeding_s,
        registration_s=registration_s,
        ingest_s=ingest_s,
        latencies=[*series, months_series],
        kafka_lag=kafka_lag,
        outbox=outbox,
        rss=rss,
        restarts=restarts,
        retried=retried,
        dead_letters=dead_letters,
        baseline=baseline,
        notes=live.notes,
    )


# --- printing ------------------------------------------------------------------------------------------------------


def _mb(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else f"{'n/a':>8}"


def _after(value: float | None) -> str:
    return f"{value:7.1f} s" if value is not None else f"> {DRAIN_TIMEOUT_S:.0f} s"


def print_result(r: Result) -> None:
    print()
    print(
        f"{r.runner}: {r.clients} clients, {r.invoices} purchase invoices (largest client {r.largest}, smallest "
        f"{r.smallest})"
    )
    print(f"  platform started in {r.startup_s:.1f} s; {', '.join(r.notes)}")
    print(
        f"  set-up (not timed): {r.clients} clients consented and activated over HTTP in {r.onboarding_s:.1f} s "
        f"({r.onboarding_s / r.clients * 1000:.0f} ms a client); KSeF tokens made in {r.tokens_s:.1f} s; invoices "
        f"seeded in {r.seeding_s:.1f} s"
    )
    print(
        f"  end to end (seeding done -> every invoice listed in buffer-svc): {r.invoices} invoices in "
        f"{r.ingest_s:.1f} s = {r.per_second:.1f} invoices/s; exactly once: ok"
    )
    print(
        f"    (of that, registering the {r.clients} tokens with the gateway, each checked in KSeF: "
        f"{r.registration_s:.1f} s)"
    )
    print("  read latency while invoices arrived (ms, answers 200 only):")
    print(f"    {'API':<48} {'samples':>8} {'p50':>8} {'p95':>8}  other answers")
    for s in r.latencies:
        refused = ", ".join(f"{n}x {code}" for code, n in sorted(s.refused.items())) or "-"
        print(f"    {s.label:<48} {len(s.samples):>8} {s.quantile(50):8.1f} {s.quantile(95):8.1f}  {refused}")
    if r.kafka_lag:
        print("  Kafka consumer lag per consumer group (messages):")
        print(f"    {'group':<42} {'max':>8} {'at end':>8}  zero after the end")
        for group, g in sorted(r.kafka_lag.items()):
            print(f"    {group:<42} {g.maximum:>8} {g.at_end or 0:>8}  {_after(g.zero_after_s)}")
    else:
        print("  Kafka consumer lag: none (in-process bus; its consumers lag by the outbox backlog below)")
    print("  outbox backlog per service (events written, not yet published):")
    print(f"    {'service':<42} {'max':>8} {'at end':>8}  zero after the end")
    for service, g in sorted(r.outbox.items()):
        print(f"    {service:<42} {g.maximum:>8} {g.at_end or 0:>8}  {_after(g.zero_after_s)}")
    print("  memory per process (MB, /proc VmHWM = peak since the process started, VmRSS = now):")
    print(f"    {'process':<42} {'peak':>8} {'now':>8}")
    for name, (peak, now) in r.rss.items():
        print(f"    {name:<42} {_mb(peak)} {_mb(now)}")
    print(
        f"  restarts: {r.restarts or 'none'}; answers 502/503 asked again: {r.retried}; dead letters by service: "
        f"{r.dead_letters}"
    )
    if r.baseline is not None:
        b = r.baseline
        print(
            f"  baseline, sequential ksef-client loop on this runner's simulator: {b.invoices} invoices of "
            f"{b.clients} clients in {b.seconds:.1f} s = {b.per_second:.1f} invoices/s"
        )
        print(
            f"  ratio platform end to end / ksef-client loop: {r.per_second / b.per_second:.2f}x invoices per "
            "second (the platform's figure includes storing, the events and the buffer)"
        )


def _platform_peak_mb(r: Result) -> float:
    """Peak RSS summed over the platform's processes (the front, in the bench's own process, left out)."""
    return sum(peak for name, (peak, _now) in r.rss.items() if peak is not None and not name.startswith("front"))


def print_comparison(results: list[Result]) -> None:
    by = {r.runner: r for r in results}
    d, e = by.get("distributed"), by.get("embedded")
    if d is None or e is None:
        return
    rows: list[tuple[str, float, float | None]] = [
        ("end-to-end throughput (invoices/s)", d.per_second, e.per_second),
        ("end-to-end time (s)", d.ingest_s, e.ingest_s),
        ("of it, token registration (s)", d.registration_s, e.registration_s),
        ("onboarding, per client (ms)", d.onboarding_s / d.clients * 1000, e.onboarding_s / e.clients * 1000),
    ]
    for sd, se in zip(d.latencies, e.latencies, strict=True):
        rows.append((f"{sd.label}, p50 (ms)", sd.quantile(50), se.quantile(50)))
        rows.append((f"{sd.label}, p95 (ms)", sd.quantile(95), se.quantile(95)))
    buffer_lag = d.kafka_lag.get("buffer-svc")
    if buffer_lag is not None:
        # Embedded has no broker: its buffer-svc gets each event inside the gateway's outbox relay (next row).
        rows.append(("buffer-svc consumer group lag, max (messages)", buffer_lag.maximum, None))
    gateway_d, gateway_e = d.outbox.get("gateway"), e.outbox.get("gateway")
    if gateway_d and gateway_e:
        rows.append(("gateway outbox backlog, max (events)", gateway_d.maximum, gateway_e.maximum))
    rows.append(("peak RSS, all platform processes (MB)", _platform_peak_mb(d), _platform_peak_mb(e)))
    if d.baseline and e.baseline:
        rows.append(("baseline ksef-client loop (invoices/s)", d.baseline.per_second, e.baseline.per_second))
        rows.append(
            ("platform / baseline (x)", d.per_second / d.baseline.per_second, e.per_second / e.baseline.per_second)
        )
    print()
    print(f"distributed vs embedded ({d.clients} clients, {d.invoices} invoices):")
    print(f"  {'figure':<62} {'distributed':>12} {'embedded':>12} {'dist/emb':>10}")
    for label, dv, ev in rows:
        shown = f"{ev:12.1f}" if ev is not None else f"{'-':>12}"
        ratio = f"{dv / ev:9.2f}x" if ev else f"{'-':>10}"
        print(f"  {label:<62} {dv:12.1f} {shown} {ratio}")
    print("  (peak RSS: distributed sums every service process and the simulator, each peak taken separately; the")
    print("   front runs in the bench's process and is left out; embedded is its one process, simulator included)")


# --- main ----------------------------------------------------------------------------------------------------------


async def run(runners: list[str], args: argparse.Namespace) -> list[Result]:
    from ksef_sim.domain.seed import random_nip

    results = []
    for runner in runners:
        rng = Random(2026)
        office_nip = random_nip(rng)
        with tempfile.TemporaryDirectory(prefix=f"bench-platform-{runner}-") as tmp:
            print(f"\n[{runner}] starting the platform ...", flush=True)
            started = time.perf_counter()
            opening = distributed_platform if runner == "distributed" else embedded_platform
            async with opening(Path(tmp), office_nip) as live:
                startup_s = time.perf_counter() - started
                result = await measure(
                    live,
                    args.clients,
                    args.invoices,
                    args.concurrency,
                    args.baseline_invoices,
                    args.timeout,
                    startup_s,
                    rng,
                    office_nip,
                )
            print_result(result)
            results.append(result)
    print_comparison(results)
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == EMBEDDED_WORKER:
        embedded_worker(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=200, help="the office's clients (200)")
    parser.add_argument("--invoices", type=int, default=100_000, help="purchase invoices over all clients (100 000)")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="distributed,embedded (both)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients onboarded/registered at a time (16)")
    parser.add_argument(
        "--baseline-invoices",
        type=int,
        help="invoices the ksef-client loop downloads (min(invoices, 2000); 0: no baseline)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="longest wait for the buffer, seconds (3600)")
    args = parser.parse_args()
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    if not runners or any(r not in RUNNERS for r in runners):
        parser.error(f"--runners: a comma-separated subset of {','.join(RUNNERS)}")
    if args.clients < 1 or args.invoices < args.clients or args.concurrency < 1:
        parser.error("--clients and --concurrency must be positive, --invoices at least --clients")
    if args.baseline_invoices is None:
        args.baseline_invoices = min(args.invoices, 2000)
    _drop_proxies()
    print(
        f"platform benchmark: {args.clients} clients, {args.invoices} purchase invoices, runners {', '.join(runners)}"
        f" ({os.cpu_count()} CPUs)"
    )
    started = time.perf_counter()
    asyncio.run(run(runners, args))
    print(f"\nbench_platform took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
