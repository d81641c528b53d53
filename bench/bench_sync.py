"""Purchase sync end to end: KSeF (the simulator over real HTTP) -> the gateway stores each invoice -> its
``invoice.fetched`` event is published from the outbox. Compared, in the same run and against the same simulator,
with a plain sequential loop over the PyPI ``ksef-client`` package (metadata query + one download per invoice).

Two scenarios, rate limits off in the simulator and in the gateway's budget:

- ``N`` invoices for one client;
- ``N`` invoices spread over ``M`` clients (``N // M`` each).

The gateway is the real service (``ksef_gateway.main.create_app`` with SQLite and the in-process transport), each
client's KSeF token registered through its vault; the clock runs from registration until the last
``invoice.fetched`` left the outbox. The ``ksef-client`` loop runs in a child process (so its peak RSS is its own) and
authenticates with the same kind of token. The gateway's peak RSS is this process's, which also hosts the simulator.

Prints figures; asserts only that every invoice arrived exactly once.

    uv run python bench/bench_sync.py [--invoices 1000] [--clients 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any, cast

from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from ksef_gateway.ksef.environments import Environment
from ksef_gateway.main import create_app
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.vault.domain import CredentialKind, Scope
from ksef_gateway.vault.service import CredentialSetup
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.auth import new_token
from ksef_sim.domain.seed import SeedOptions, random_nip, seed_invoices
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim
from ksef_sim.testing import SIM_HOST_NAME, RunningSim, resolve_to_loopback, serve
from platform_common.contracts.invoices import InvoiceFetched
from platform_common.messaging.dispatch import Dispatcher
from platform_common.messaging.transport import InProcessBus
from platform_common.settings import DatabaseSettings, MessagingSettings

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
SEED_SPREAD = timedelta(days=20)
WORKER_FLAG = "--ksef-client-worker"


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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _own_peak_rss_mb() -> float:
    """A child's own peak: ru_maxrss survives execve (and a vfork'ed child starts inside the parent's memory), so
    the child reads VmHWM, which belongs to its new address space; getrusage where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_rss_mb()


# --- the simulator -------------------------------------------------------------------------------------------------


@contextmanager
def simulator(data_dir: Path) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:  # a proxy would take the simulator's host name off loopback
        os.environ.pop(variable, None)

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=data_dir / "ksef-sim.sqlite3",
            # A host name, not a loopback literal: ksef-client refuses pre-signed URLs on loopback addresses.
            public_base_url=f"http://{SIM_HOST_NAME}:{port}",
            rate_limits=RateLimitMode.OFF,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=2026,
        )

    with resolve_to_loopback(SIM_HOST_NAME), serve(settings) as running:
        yield running


def prepare_clients(sim: Sim, counts: list[int], rng: Random) -> list[Client]:
    """Seed each client's purchase invoices (ending a minute ago: all below the HWM) and issue its KSeF token."""
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


# --- the gateway ---------------------------------------------------------------------------------------------------


@dataclass
class FetchedCounter:
    """Stands on the in-process bus as a consumer of ``invoice.fetched``: sees each event the outbox published."""

    expected: int
    seen: set[tuple[str, str]] = field(default_factory=set)
    duplicates: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def topics(self) -> list[str]:
        return [InvoiceFetched.topic]

    async def deliver(self, topic: str, key: str | None, value: bytes, *, source: str) -> None:
        payload = json.loads(value)["payload"]
        item = (payload["client_nip"], payload["ksef_number"])
        if item in self.seen:
            self.duplicates += 1
        self.seen.add(item)
        if len(self.seen) >= self.expected:
            self.done.set()


def gateway_settings(api_url: str, data_dir: Path) -> GatewaySettings:
    return GatewaySettings.model_validate(
        {
            "db": DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{data_dir / 'gateway.db'}")),
            "messaging": MessagingSettings(transport="inprocess", relay_poll_interval_s=0.2),
            "data_dir": data_dir,
            "ksef": {"sim_base_url": api_url, "environment": "sim", "replica_id": "bench"},
            "vault": {"master_keys": {"bench": base64.b64encode(os.urandom(32)).decode()}},
            "budget": {"mode": "off"},
            "telemetry": {"log_level": "WARNING"},
            "sync": {"tick_interval_s": 0.2, "export_poll_interval_s": 0.05, "max_concurrency": 8},
        }
    )


async def gateway_run(running: RunningSim, clients: list[Client], data_dir: Path) -> Figures:
    bus = InProcessBus()
    counter = FetchedCounter(expected=sum(c.invoices for c in clients))
    bus.attach(cast(Dispatcher, counter))
    app = create_app(gateway_settings(running.api_url, data_dir), bus=bus, migrate_on_start=True)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        gateway = Gateway.of(app.state.runtime)
        started = time.perf_counter()
        for client in clients:
            setup = CredentialSetup(
                kind=CredentialKind.KSEF_TOKEN,
                scope=Scope.READ,
                environment=Environment.SIM,
                token=SecretStr(client.token),
            )
            await gateway.vault.register(client.nip, setup, "bench")
        await asyncio.wait_for(counter.done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
    if counter.duplicates:
        raise AssertionError(f"{counter.duplicates} invoice.fetched events were published twice")
    return Figures(len(counter.seen), elapsed, _peak_rss_mb())


# --- the ksef-client loop (child process) --------------------------------------------------------------------------


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


def ksef_client_run(running: RunningSim, clients: list[Client], date_from: datetime) -> Figures:
    job = {
        "api_url": running.api_url,
        "clients": [{"nip": c.nip, "token": c.token} for c in clients],
        "date_from": date_from.isoformat(),
    }
    done = subprocess.run(  # noqa: S603  # this very script, with data we made
        [sys.executable, __file__, WORKER_FLAG], input=json.dumps(job), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the ksef-client loop failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Figures(int(result["invoices"]), float(result["seconds"]), float(result["peak_rss_mb"]))


# --- the run -------------------------------------------------------------------------------------------------------


def _line(label: str, figures: Figures) -> str:
    return (
        f"  {label:<34} {figures.invoices:>6} invoices in {figures.seconds:7.2f}s = {figures.per_second:8.1f} "
        f"invoices/s | peak RSS {figures.peak_rss_mb:7.1f} MB"
    )


def scenario(running: RunningSim, label: str, counts: list[int], rng: Random, tmp: Path) -> None:
    date_from = running.sim.clock.now() - SEED_SPREAD - timedelta(hours=1)
    # Separate clients per contender: neither gets invoices the other already warmed up.
    ours = prepare_clients(running.sim, counts, rng)
    theirs = prepare_clients(running.sim, counts, rng)
    data_dir = tmp / f"gateway-{label.replace(' ', '-')}"
    data_dir.mkdir()
    gateway = asyncio.run(gateway_run(running, ours, data_dir))
    baseline = ksef_client_run(running, theirs, date_from)
    if baseline.invoices != sum(counts):
        raise AssertionError(f"ksef-client loop downloaded {baseline.invoices} of {sum(counts)} invoices")
    print(f"{label}:")
    print(_line("gateway (KSeF -> stored -> event)", gateway))
    print(_line("ksef-client sequential loop", baseline))
    print(f"  ratio gateway / ksef-client: {gateway.per_second / baseline.per_second:.1f}x invoices per second")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--invoices", "-n", type=int, default=1000, help="N: invoices per scenario")
    parser.add_argument("--clients", "-m", type=int, default=10, help="M: clients of the many-clients scenario")
    args = parser.parse_args()
    if args.invoices < 1 or args.clients < 1:
        parser.error("--invoices and --clients must be positive")
    print(f"purchase sync: N={args.invoices} invoices, M={args.clients} clients, rate limits off (sim and budget)")
    rng = Random(2026)
    many = [args.invoices // args.clients + (1 if i < args.invoices % args.clients else 0) for i in range(args.clients)]
    with tempfile.TemporaryDirectory() as tmp_name, simulator(Path(tmp_name)) as running:
        tmp = Path(tmp_name)
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        scenario(running, "one client", [args.invoices], rng, tmp)
        scenario(running, f"{args.clients} clients", [c for c in many if c > 0], rng, tmp)
    print("  (the gateway's peak RSS includes the in-process simulator; ksef-client's is its own process)")


def worker() -> None:
    job = json.loads(sys.stdin.read())
    print(json.dumps(ksef_client_loop(job["api_url"], job["clients"], job["date_from"])))


if __name__ == "__main__":
    if sys.argv[1:] == [WORKER_FLAG]:
        worker()
    else:
        main()
