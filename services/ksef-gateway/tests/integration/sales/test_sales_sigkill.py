"""Sales sending is exactly once through repeated SIGKILLs: the gateway as a process of its own (``ksef-gateway
serve`` on PostgreSQL, settings from ``GATEWAY_*``) is killed 20 times at random moments while invoices are being
submitted, and restarted on the same database each time. At the end every invoice is in KSeF exactly once, accepted
(or a duplicate resolved to the right KSeF number) with its UPO, and announced by exactly one ``invoice.sent``.

Each life is forked from a helper process (this file run with ``--zygote``) that imported the gateway once: a cold
import costs ~4 s of CPU, and 21 of them would be most of the test. The life then runs the very entry point of the
``ksef-gateway`` script (``ksef_gateway.main:run`` → ``service_cli`` → ``serve``), reading its settings from the
environment. It is a process of its own: SIGKILL drops its database connections and cuts its calls to KSeF
mid-flight, as a crashed pod would.

The KSeF simulator serves real HTTP from a thread of the test process and survives every kill, as KSeF does; so does
the fake auth-svc whose JWKS the gateway verifies the test's tokens against. The random choices (kill moments, bursts
of submissions) come from one printed seed; rerun one with ``KSEF_HUB_SIGKILL_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import IO, Any, NoReturn, cast

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from ksef_gateway.db import client_access, messaging_tables, sales_invoice
from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.sales.deadlines import WARSAW
from ksef_gateway.sales.domain import FINAL_STATES
from ksef_gateway.sales.rendering import SalesInvoiceIn, render_fa3
from ksef_gateway.sales.repository import SalesRepository
from ksef_gateway.settings import SCHEMA
from ksef_gateway.testing import KsefHarness
from ksef_sim.domain.seed import random_nip
from ksef_sim.domain.sessions import SessionInvoice
from ksef_sim.records import StoredInvoice
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.auth.clock import system_clock
from platform_common.client_access import ClientAccessProjection
from platform_common.db import Database
from platform_common.settings import DatabaseSettings
from platform_common.testing import wait_until
from platform_common.testing.auth import DEFAULT_OFFICE, TokenFactory

INVOICES = 60
KILLS = 20
SEED_ENV = "KSEF_HUB_SIGKILL_SEED"
ZYGOTE_FLAG = "--zygote"
# One replica id for every life: a restarted pod keeps its host name, and a replica retakes its own lease rows at once
# (ownership/service.py, ``balance``) instead of waiting out the dead life's TTL.
REPLICA_ID = "sigkill-test"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
UNFINISHED = ("queued", "sending", "submitted")
# Where a kill is aimed: at a random moment of a life that answers, at one still starting, or at the moment an
# invoice is seen in a state (``sending`` is the narrowest window: from its commit to the answer of the POST).
AIMS = ("anytime", "starting", "queued", "sending", "submitted")
AIM_WEIGHTS = (3, 3, 2, 8, 4)


# --- the zygote: this file run as a script ---------------------------------------------------------------------


def _zygote() -> None:
    """Import the gateway once, then fork one life per request line ``{"argv": [...], "log": path}``: answer
    ``{"pid": n}`` at once and ``{"exit": code}`` when the life has ended and been reaped (so a killed life is gone,
    not a zombie, when the test reads it)."""
    import asyncpg  # noqa: F401  # what a life would import lazily on its first connection or in `serve`
    import uvicorn  # noqa: F401

    from ksef_gateway.main import run

    # A fork copies only the calling thread: with no other thread yet, a life misses nothing (no lock held by one).
    assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
    print(json.dumps({"ready": True}), flush=True)
    while line := sys.stdin.readline():
        job = json.loads(line)
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        pid = os.fork()
        if pid == 0:
            _life(run, job["argv"], log)
        os.close(log)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


def _life(run: Any, argv: list[str], log: int) -> NoReturn:
    """A forked life: ``ksef-gateway <argv>`` with its output in ``log``; never returns into the zygote's loop."""
    code = 1
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.argv = ["ksef-gateway", *argv]
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# --- the test's side ---------------------------------------------------------------------------------------------


def _reserve_port() -> socket.socket:
    """A loopback port kept for every life: bound with SO_REUSEADDR and never listening, so each life's uvicorn
    (SO_REUSEADDR too) binds it again, while nothing else can take it between two lives (Linux gives no connect()
    a port that is bound, and refuses a bind without SO_REUSEADDR)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Lives:
    """The gateway's successive lives on one port, forked by the zygote (a child of this test, ended by its handle)."""

    def __init__(self, zygote: subprocess.Popen[str], logs: Path) -> None:
        self._zygote = zygote
        self.logs = logs
        self.port_reservation = _reserve_port()
        self.port = int(self.port_reservation.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.pid: int | None = None
        self.count = 0
        self.started_at = datetime.now(UTC)

    async def _read(self) -> dict[str, Any]:
        line = await asyncio.to_thread(cast(IO[str], self._zygote.stdout).readline)
        if not line:
            raise AssertionError(f"the zygote exited ({self._zygote.poll()}):\n{self.tail()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def _fork(self, *argv: str) -> int:
        stdin = cast(IO[str], self._zygote.stdin)
        stdin.write(json.dumps({"argv": list(argv), "log": str(self.logs)}) + "\n")
        stdin.flush()
        return int((await self._read())["pid"])

    async def started(self) -> None:
        assert (await self._read())["ready"]

    async def run_to_end(self, *argv: str) -> int:
        await self._fork(*argv)
        return int((await self._read())["exit"])

    async def start(self) -> None:
        assert self.pid is None
        self.count += 1
        with self.logs.open("a") as log:
            log.write(f"\n===== life {self.count} =====\n")
        self.started_at = datetime.now(UTC)
        self.pid = await self._fork("serve", "--port", str(self.port))

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)  # the zygote reaps its lives at once: a gone pid is a life that ended
        except ProcessLookupError:
            return False
        return True

    async def kill(self) -> int:
        """SIGKILL the current life and wait until it is reaped; its exit code (-9 when the kill did it)."""
        assert self.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        return int((await self._read())["exit"])

    async def ready(self, http: httpx.AsyncClient, *, timeout: float = 60) -> None:
        async def up() -> bool:
            if not self.alive():
                raise AssertionError(f"the gateway's life {self.count} exited by itself:\n{self.tail()}")
            try:
                return (await http.get(f"{self.url}/readyz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, timeout=timeout, interval=0.05, what=f"the gateway's life {self.count} ready")

    def tail(self, chars: int = 6000) -> str:
        return self.logs.read_text(errors="replace")[-chars:] if self.logs.exists() else "(no log)"


@contextlib.asynccontextmanager
async def zygote_lives(env: dict[str, str], tmp_path: Path) -> AsyncIterator[Lives]:
    logs = tmp_path / "gateway.log"
    with (tmp_path / "zygote.log").open("w") as stderr:
        zygote = subprocess.Popen(  # this very file, with arguments we made
            [sys.executable, __file__, ZYGOTE_FLAG],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    lives = Lives(zygote, logs)
    try:
        await asyncio.wait_for(lives.started(), timeout=60)
        yield lives
    finally:
        if lives.pid is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(lives.kill(), timeout=10)
        lives.port_reservation.close()
        cast(IO[str], zygote.stdin).close()
        try:
            await asyncio.to_thread(zygote.wait, 10)
        except subprocess.TimeoutExpired:
            zygote.kill()  # our own child, by its handle
            zygote.wait()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[RunningSim]:
    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            public_base_url=f"http://127.0.0.1:{port}",
            rate_limits=RateLimitMode.OFF,
            invoice_processing_delay_s=0.2,  # KSeF decides asynchronously: kills land while invoices wait for it
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=15,
        )

    with serve(settings) as running:
        yield running


def gateway_env(pg_url: str, sim: RunningSim, tokens: TokenFactory, auth_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_") and k not in PROXY_VARIABLES}
    auth = tokens.settings(auth_url)
    env |= {
        "GATEWAY_DB__URL": pg_url,
        "GATEWAY_DB__POOL_SIZE": "5",
        "GATEWAY_MESSAGING__TRANSPORT": "inprocess",
        # Published outbox rows stay (the default retention, said out loud): the test counts them.
        "GATEWAY_MESSAGING__OUTBOX_RETENTION_S": "86400",
        "GATEWAY_AUTH__JWKS_URL": auth.jwks_url,
        "GATEWAY_AUTH__INTROSPECTION_URL": auth.introspection_url,
        "GATEWAY_AUTH__TOKEN_URL": auth.token_url,
        "GATEWAY_AUTH__ISSUER": auth.issuer,
        "GATEWAY_AUTH__AUDIENCE": auth.audience,
        "GATEWAY_KSEF__ENVIRONMENT": "sim",
        "GATEWAY_KSEF__SIM_BASE_URL": sim.api_url,
        "GATEWAY_KSEF__REPLICA_ID": REPLICA_ID,
        "GATEWAY_KSEF__AUTH_POLL_INTERVAL_S": "0.02",
        "GATEWAY_VAULT__MASTER_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
        # KSeF's production limits (30 sends a minute) would make 60 invoices take minutes; the simulator's are off.
        "GATEWAY_BUDGET__MODE": "off",
        # The sync scheduler is what takes the leases of the vault's contexts (LeasedVaultTargets): the sales sender
        # only sends for leased contexts. No backfill: the client has no purchases to fetch.
        "GATEWAY_SYNC__ENABLED": "true",
        "GATEWAY_SYNC__BACKFILL_MONTHS": "0",
        "GATEWAY_SYNC__TICK_INTERVAL_S": "0.5",
        "GATEWAY_SALES__TICK_INTERVAL_S": "0.2",
        "GATEWAY_SALES__POLL_FIRST_S": "0.05",
        "GATEWAY_SALES__POLL_MAX_S": "0.5",
        "GATEWAY_TELEMETRY__LOG_LEVEL": "INFO",
        "GATEWAY_TELEMETRY__LOG_JSON": "false",
        "GATEWAY_DATA_DIR": str(data_dir),
    }
    return env


def fa3(nip: str, number: str) -> bytes:
    invoice = {
        "number": number,
        "issue_date": datetime.now(WARSAW).date().isoformat(),
        "seller": {"nip": nip, "name": "Piekarnia Testowa Sp. z o.o.", "address": {"line1": "ul. Chlebowa 1"}},
        "buyer": {
            "nip": "5260250274",
            "name": "Hurtownia Odbiorca S.A.",
            "address": {"line1": "ul. Handlowa 2", "line2": "00-950 Warszawa"},
        },
        "lines": [
            {"name": "Chleb żytni", "unit": "szt.", "quantity": "10", "unit_net_price": "100.00", "rate": "5"},
            {"name": "Usługa dostawy", "quantity": "1", "unit_net_price": "50.00", "rate": "23"},
        ],
    }
    return render_fa3(SalesInvoiceIn.model_validate(invoice), generated_at=datetime.now(UTC))


@dataclass
class Client:
    """The ERP's side: submits each invoice with its own Idempotency-Key, and again with the same key after a
    connection that died (the first attempt may or may not have been stored)."""

    http: httpx.AsyncClient
    lives: Lives
    nip: str
    headers: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)
    retried: int = 0
    replayed: int = 0

    async def submit(self, key: str, xml: bytes) -> None:
        headers = self.headers | {"Idempotency-Key": key, "Content-Type": "application/xml"}
        while True:
            try:
                r = await self.http.post(f"{self.lives.url}/clients/{self.nip}/sales", content=xml, headers=headers)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code in (200, 202):
                self.ids[key] = str(r.json()["id"])
                self.replayed += r.headers.get("idempotent-replayed") == "true"
                return
            if r is not None and r.status_code != 503:
                raise AssertionError(f"submitting {key}: {r.status_code} {r.text}")
            self.retried += 1

            async def answering() -> bool:
                try:
                    return (await self.http.get(f"{self.lives.url}/readyz", timeout=2)).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(answering, timeout=60, interval=0.05, what=f"a gateway to resubmit {key} to")


@pytest.mark.postgres
async def test_sales_sending_is_exactly_once_through_twenty_sigkills(
    sim: RunningSim, pg_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get(SEED_ENV) or secrets.randbits(32))
    print(f"sales SIGKILL test: seed {seed} (rerun with {SEED_ENV}={seed})")
    started = time.monotonic()
    nip = random_nip(Random(seed))
    kill_rng, submit_rng = Random(f"{seed}:kills"), Random(f"{seed}:submits")
    bodies = {f"erp-{i}": fa3(nip, f"FV/K/{i}/2026") for i in range(INVOICES)}
    tokens = TokenFactory(clock=system_clock)
    db = Database(DatabaseSettings(url=SecretStr(pg_url)), SCHEMA)
    landed: list[tuple[str, dict[str, int]]] = []
    try:
        async with (
            tokens.serve() as auth_url,
            httpx.AsyncClient(timeout=10, trust_env=False) as http,
            zygote_lives(gateway_env(pg_url, sim, tokens, auth_url, tmp_path / "data"), tmp_path) as lives,
        ):
            assert await lives.run_to_end("migrate") == 0, lives.tail()
            # As approval-svc's integration.changed would have: the office may act for this client.
            async with db.sessionmaker() as session, session.begin():
                await ClientAccessProjection(client_access, db).seed(session, DEFAULT_OFFICE, [nip])
            await lives.start()
            await lives.ready(http)
            token = await KsefHarness(sim.root_url, http).create_ksef_token(nip)
            manage = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.credentials.manage'], nips=[nip])}"}
            r = await http.put(
                f"{lives.url}/clients/{nip}/credential", json={"kind": "ksef_token", "token": token}, headers=manage
            )
            assert r.status_code == 201, r.text
            sender = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.send', 'ksef.read'], nips=[nip])}"}
            client = Client(http, lives, nip, sender)

            async def counts() -> dict[str, int]:
                async with db.sessionmaker() as session:
                    return await SalesRepository(session).counts(nip)

            async def caught(state: str, within_s: float) -> bool:
                """Watch (for a bounded time) for an invoice that entered ``state`` in this life (one left there by
                the previous life does not count): aims a kill at it, never a precondition of anything."""
                since = lives.started_at
                query = select(func.count()).where(
                    sales_invoice.c.client_nip == nip,
                    sales_invoice.c.status == state,
                    sales_invoice.c.updated_at >= since,
                )
                deadline = time.monotonic() + within_s
                while time.monotonic() < deadline:
                    async with db.sessionmaker() as session:
                        if (await session.execute(query)).scalar():
                            return True
                    await asyncio.sleep(0.003)
                return False

            async def kill_repeatedly() -> None:
                for _ in range(KILLS):
                    aim = kill_rng.choices(AIMS, weights=AIM_WEIGHTS)[0]
                    if aim == "starting":
                        # Maybe before it answers: authenticating, opening a session, reconciling the last life's rows.
                        await asyncio.sleep(kill_rng.uniform(0.0, 1.5))  # the chaos itself, not a synchronisation
                    else:
                        await lives.ready(http)
                        if aim == "anytime":
                            await asyncio.sleep(kill_rng.uniform(0.2, 2.0))
                        elif not await caught(aim, within_s=4.0):
                            aim += " (missed)"
                    await lives.kill()
                    # Read with the life dead: exactly the states the kill caught the invoices in.
                    caught_now = {s: n for s, n in (await counts()).items() if s in UNFINISHED}
                    landed.append((aim, caught_now))
                    print(
                        f"  kill {len(landed):2} at {time.monotonic() - started:5.1f} s, aimed at {aim}: {caught_now}"
                    )
                    await lives.start()

            async def submit_in_bursts() -> None:
                pending = list(bodies.items())
                submissions = []
                while pending:
                    burst = pending[: submit_rng.randint(1, 5)]
                    pending = pending[len(burst) :]
                    submissions += [asyncio.create_task(client.submit(key, xml)) for key, xml in burst]
                    await asyncio.sleep(submit_rng.uniform(0.3, 2.0))
                await asyncio.gather(*submissions)

            await asyncio.gather(kill_repeatedly(), submit_in_bursts())
            chaos_s = time.monotonic() - started

            async def all_final() -> dict[str, int] | None:
                now = await counts()
                return now if sum(now.values()) == INVOICES and set(now) <= FINAL_STATES else None

            await lives.ready(http)
            final = await wait_until(all_final, timeout=60, interval=0.1, what="every sales invoice decided")

            # --- the invoices, as the API shows them ---------------------------------------------------------
            assert sorted(client.ids) == sorted(bodies), "an invoice was never stored"
            async with db.sessionmaker() as session:
                rows = (
                    await session.execute(
                        select(sales_invoice.c.id, sales_invoice.c.idempotency_key).where(
                            sales_invoice.c.client_nip == nip
                        )
                    )
                ).all()
            assert sorted((r.idempotency_key, str(r.id)) for r in rows) == sorted(client.ids.items()), (
                "one stored invoice per Idempotency-Key, the one the client was answered with"
            )
            in_ksef = [i for i in sim.sim.store.all(StoredInvoice) if i.seller_nip == nip]
            held = Counter(i.invoice_hash for i in in_ksef)
            number_of = {i.invoice_hash: i.ksef_number for i in in_ksef}
            duplicates, reconciled_found, reconciled_absent, resent = [], 0, 0, 0
            for key, xml in bodies.items():
                invoice_id = client.ids[key]
                r = await http.get(f"{lives.url}/clients/{nip}/sales/{invoice_id}", headers=sender)
                assert r.status_code == 200, r.text
                done = r.json()
                assert done["invoice_hash"] == sha256_b64(xml)
                assert done["status"] in ("accepted", "duplicate"), (key, done)
                # Accepted, or KSeF's 440 resolved to the original that KSeF holds: this very document.
                assert done["ksef_number"] == number_of.get(done["invoice_hash"]), (key, done)
                if done["status"] == "duplicate":
                    duplicates.append(key)
                    assert done["history"][-1]["detail"]["same_document"] is True, done
                upo = await http.get(f"{lives.url}/clients/{nip}/sales/{invoice_id}/upo", headers=sender)
                assert upo.status_code == 200 and done["ksef_number"].encode() in upo.content, (key, upo.text)
                history = done["history"]
                reconciled_found += sum(
                    1 for h in history if h["status"] == "submitted" and h["detail"].get("reconciled")
                )
                reconciled_absent += sum(
                    1 for h in history if h["status"] == "queued" and h["detail"].get("reconciled")
                )
                resent += max(0, [h["status"] for h in history].count("sending") - 1)

            # --- KSeF holds each invoice exactly once, and nothing else of this seller --------------------
            expected = {sha256_b64(xml) for xml in bodies.values()}
            assert {h: n for h, n in held.items() if n != 1} == {}, "an invoice is in KSeF more than once"
            assert set(held) == expected, "KSeF lacks an invoice, or holds one nobody submitted"
            # Every POST that reached KSeF: one sent again after KSeF had it comes back as 440, so it must end as a
            # duplicate, never as a plain acceptance (and it is legitimate only when that POST was in flight at a kill).
            posts = Counter(i.invoice_hash for i in sim.sim.store.all(SessionInvoice) if i.invoice_hash in expected)
            assert set(posts) == expected
            twice = {h for h, n in posts.items() if n > 1}
            assert twice == {sha256_b64(bodies[key]) for key in duplicates}, "a second POST not told as a duplicate"

            # --- exactly one invoice.sent per invoice -----------------------------------------------------------
            outbox = messaging_tables.outbox
            async with db.sessionmaker() as session:
                payloads = (
                    await session.execute(select(outbox.c.payload).where(outbox.c.topic == "invoice.sent"))
                ).all()
            sent = [json.loads(p.payload)["payload"] for p in payloads]
            sent = [e for e in sent if e["client_nip"] == nip]
            per_invoice = Counter(e["invoice_id"] for e in sent)
            assert per_invoice == Counter(client.ids.values()), "invoice.sent is not exactly once per invoice"
            numbers = {e["invoice_id"]: e["ksef_number"] for e in sent}
            assert numbers == {client.ids[key]: number_of[sha256_b64(xml)] for key, xml in bodies.items()}, (
                "an invoice.sent names another KSeF number than KSeF holds"
            )

            print(
                f"{lives.count} lives, {len(landed)} SIGKILLs in {chaos_s:.1f} s, all decided after "
                f"{time.monotonic() - started:.1f} s: {final}"
            )
            for state in UNFINISHED:
                print(f"  kills that caught an invoice {state}: {sum(1 for _, c in landed if c.get(state))}")
            print(
                f"  sends reconciled by hash: {reconciled_found} found in KSeF (→ submitted), {reconciled_absent} "
                f"absent (→ queued again, {resent} sends after such a return)"
            )
            print(f"  POSTs that reached KSeF: {posts.total()} for {INVOICES} invoices")
            print(f"  duplicates resolved to the original ({len(duplicates)}): {duplicates}")
            print(
                f"  submissions retried after a dead connection: {client.retried}, "
                f"answered as replays of a stored one: {client.replayed}"
            )
    finally:
        await db.dispose()
        log = tmp_path / "gateway.log"
        if log.exists():
            errors = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line]
            print(f"gateway log: {log} ({len(errors)} tracebacks)")


if __name__ == "__main__" and sys.argv[1:] == [ZYGOTE_FLAG]:
    _zygote()
