"""buffer-svc's purchase buffer: ingest throughput and the office's list latency, each beside a plain baseline
measured in the same run on the same database. One run prints two parts:

1. **Ingest**: ``--clients`` x ``--invoices`` ``invoice.fetched`` events delivered through the ``InProcessBus`` to
   the buffer's real consumer (inbox dedup, the entry, its communication-log line and its ``status.changed`` outbox
   row, one transaction per event), ``--concurrency`` clients at a time, each client's events in order (as one
   Kafka partition would hand them over). Beside it: a plain ``INSERT`` of the same rows into a bare table with the
   same columns (primary key only), one SQLAlchemy core executemany in one transaction. Target >= 1 000 invoices/s.
2. **Office list latency**: ``GET /clients/{nip}/purchases`` through ``httpx.ASGITransport`` with an office token
   (``nips: ["*"]``, every client opened to the office, so each read also writes its access-ledger row), p50/p95
   for the default sort, a decision filter, a text filter and the keyset second page (``next_cursor``); in
   scenario A (the ingested clients, rotating over them, limit ``--invoices`` / 2 so that a client has a second
   page) and scenario B (one client with ``--big-per-month``
   entries in each of ``--big-months`` months, a month at a time, limit 100). Beside each: the same page (same
   WHERE, ORDER BY and LIMIT) read with a plain SQLAlchemy core SELECT on the app's own engine. Target p95 < 50 ms.

A report, not a test: a missed target prints MISSED and the exit status stays 0. It asserts only that what it
measured is right (every invoice stored once, no dead letters, the API and the plain SELECT return the same page).

    uv run python bench/bench_buffer.py [--db postgres|sqlite] [--clients 200] [--invoices 100] [--samples 200]
        [--warmup 20] [--concurrency 8] [--big-months 12] [--big-per-month 500] [--quick]

``--quick`` (20 clients x 50 invoices, 2 big months, 30 samples) checks in seconds that the bench works; sizes given
explicitly win over it. Ratios compare the service with its baseline, so they travel between machines better than
the absolute figures do (on a small machine PostgreSQL and the bench share the CPUs).

PostgreSQL comes from ``KSEF_HUB_TEST_PG_DSN`` (``bash scripts/infra.sh up && eval "$(bash scripts/infra.sh env)"``,
or ``make bench``); the bench works in a throw-away database next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from random import Random
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import Column, MetaData, Row, Select, Table, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from buffer_svc.db import purchase_entry
from buffer_svc.main import create_app
from buffer_svc.settings import BufferSettings
from platform_common.auth import Authenticator
from platform_common.contracts import InvoiceFetched
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.transport import InProcessBus
from platform_common.nip import is_valid_nip
from platform_common.settings import DatabaseSettings, MessagingSettings, TelemetrySettings
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients
from platform_common.testing.events import invoice_fetched, ksef_number
from platform_common.testing.pg import temporary_database

PG_ENV = "KSEF_HUB_TEST_PG_DSN"
INGEST_TARGET_PER_S = 1000.0
LIST_TARGET_P95_MS = 50.0
OFFICE_PERMS = ("buffer.read", "buffer.decide", "buffer.import", "audit.read")
NIP_WEIGHTS = (6, 5, 7, 2, 3, 4, 5, 6, 7)
# Four kinds of seller, five of each: the text filter looks for one kind, so it matches about a quarter of a client.
SELLER_KINDS = ("Hurtownia Papieru", "Stacja Paliw", "Serwis Komputerowy", "Drukarnia Offsetowa")
TEXT_QUERY = "paliw"
SCENARIO_A_MONTHS = ("2026-08", "2026-09", "2026-10", "2026-11")
BIG_LIMIT = 100
WARMUP_INVOICES = 20  # per warm-up client; as many warm-up clients as --concurrency, so the pool is filled too


@dataclass(frozen=True)
class Sizes:
    clients: int
    invoices: int
    samples: int
    warmup: int
    concurrency: int
    big_months: int
    big_per_month: int
    page: int  # scenario A's limit: below --invoices, or a client's entries fit one page and there is no second


@dataclass(frozen=True)
class Query:
    """One measured request: its label, the API's query parameters and the plain SELECT's filter."""

    label: str
    decision: str | None = None
    text: str | None = None
    second_page: bool = False


QUERIES = (
    Query("default sort (-issue_date)"),
    Query("filter decision=book", decision="book"),
    Query(f"filter q={TEXT_QUERY}", text=TEXT_QUERY),
    Query("keyset 2nd page (next_cursor)", second_page=True),
)


@dataclass
class Running:
    app: Any
    bus: InProcessBus
    http: httpx.AsyncClient
    engine: AsyncEngine
    office: dict[str, str]
    is_sqlite: bool


@dataclass
class Figures:
    """Latencies in milliseconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        if len(self.samples) < 2:
            return self.samples[0]
        return statistics.quantiles(self.samples, n=20)[18]


# --- data ----------------------------------------------------------------------------------------------------------


@dataclass
class Nips:
    """Valid NIPs (the API refuses others with 422), never the same one twice in a run; seeded, so runs compare."""

    rng: Random = field(default_factory=lambda: Random(2026))
    taken: set[str] = field(default_factory=set)

    def make(self, count: int) -> list[str]:
        found: list[str] = []
        while len(found) < count:
            digits = [self.rng.randint(1, 9)] + [self.rng.randint(0, 9) for _ in range(8)]
            if digits[1] == digits[2] == 0:  # valid by checksum, but the KSeF NIP pattern (the contracts) refuses it
                continue
            check = sum(d * w for d, w in zip(digits, NIP_WEIGHTS, strict=True)) % 11
            nip = "".join(map(str, digits)) + str(check)
            if check != 10 and nip not in self.taken and is_valid_nip(nip):
                self.taken.add(nip)
                found.append(nip)
        return found


@dataclass
class Invoices:
    """Events for the bench's clients, with serials unique across the run (a KSeF number is unique per client)."""

    sellers: list[tuple[str, str]]
    serial: int = 0

    def event(self, client_nip: str, seller: int, issued: date, index: int) -> InvoiceFetched:
        self.serial += 1
        seller_nip, seller_name = self.sellers[seller % len(self.sellers)]
        return invoice_fetched(
            client_nip,
            seller_nip=seller_nip,
            seller_name=seller_name,
            issued=issued,
            gross=f"{100 + (index * 131) % 9000}.{(index * 37) % 100:02d}",
            ksef_number=ksef_number(seller_nip, issued, self.serial),
        )

    def spread(self, client_nip: str, count: int, months: Sequence[str]) -> list[InvoiceFetched]:
        """``count`` invoices round-robin over ``months``, issue dates spread over each month's first 28 days; within
        a month a step of 7 sellers (prime to the 20 sellers and to the 4 kinds) gives every seller and every kind."""
        offset = self.serial
        out = []
        for i in range(count):
            in_month, nth = i % len(months), i // len(months)
            year, month = map(int, months[in_month].split("-"))
            issued = date(year, month, 1 + nth % 28)
            out.append(self.event(client_nip, nth * 7 + in_month + offset, issued, i))
        return out


def month_names(count: int, last: str = "2026-11") -> list[str]:
    year, month = map(int, last.split("-"))
    names = []
    for _ in range(count):
        names.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return names


def entry_values(event: InvoiceFetched, received_at: datetime) -> dict[str, Any]:
    """The row ``PurchaseBuffer.ingest`` writes for ``event``: what the plain baseline inserts."""
    return {
        "id": uuid.uuid4(),
        "client_nip": event.client_nip,
        "ksef_number": event.ksef_number,
        "period": event.p_1.strftime("%Y-%m"),
        "subject_role": event.subject_role,
        "seller_nip": event.seller.nip,
        "seller_name": event.seller.name,
        "invoice_number": event.p_2,
        "issue_date": event.p_1,
        "acquisition_date": event.acquisition_date,
        "currency": event.currency,
        "net_amount": event.net_amount,
        "vat_amount": event.vat_amount,
        "gross_amount": event.gross_amount,
        "vat_amount_pln": event.vat_amount_pln,
        "invoice_type": event.invoice_type,
        "corrected_ksef_number": event.corrected_ksef_number,
        "corrected_invoice_number": event.corrected_invoice_number,
        "invoice_hash": event.invoice_hash,
        "xml_ref": event.xml_ref,
        "received_at": received_at,
        "late_arrival": False,
        "decision": "unverified",
        "revision": 1,
    }


# --- the buffer app ------------------------------------------------------------------------------------------------


@asynccontextmanager
async def open_buffer(db_url: str) -> AsyncIterator[Running]:
    """buffer-svc as its integration tests build it: in-process bus, the fake auth-svc in-process, migrated."""
    clock = FakeClock()  # fixed: the office token minted once never expires during the run
    tokens = TokenFactory(clock=clock)
    settings = BufferSettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(client_id="buffer-svc", client_secret=tokens.add_service_client("buffer-svc")),
        # The hot paths log nothing at INFO; WARNING only keeps migration chatter out of the report.
        telemetry=TelemetrySettings(log_level="WARNING"),
    )
    bus = InProcessBus()
    app = create_app(settings, bus=bus, migrate_on_start=True)
    authenticator: Authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = clock, tokens.transport()
    office = {"Authorization": f"Bearer {tokens.mint(sub='accountant-1', perms=list(OFFICE_PERMS), nips=['*'])}"}
    async with LifespanManager(app, startup_timeout=120):
        runtime = app.state.runtime
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://buffer") as http:
            yield Running(app, bus, http, runtime.db.engine, office, runtime.db.is_sqlite)


async def deliver_all(running: Running, by_client: dict[str, list[bytes]], concurrency: int) -> float:
    """Deliver every client's envelopes, ``concurrency`` clients at a time and each client's in order; seconds."""
    pending = iter(by_client.items())

    async def worker() -> None:
        # One shared iterator: a worker takes the next client when it is done with one (no await in between).
        for nip, envelopes in pending:
            for value in envelopes:
                await running.bus.deliver(InvoiceFetched.topic, nip, value, source="bench")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def envelopes_of(events: dict[str, list[InvoiceFetched]]) -> dict[str, list[bytes]]:
    # Built before the clock starts: wrapping is the producer's work, not the consumer's.
    return {
        nip: [Envelope.wrap(e, producer="ksef-gateway", client_nip=nip).to_bytes() for e in evs]
        for nip, evs in events.items()
    }


async def count_entries(engine: AsyncEngine, nips: Sequence[str]) -> int:
    async with engine.connect() as conn:
        stmt = select(func.count()).select_from(purchase_entry).where(purchase_entry.c.client_nip.in_(list(nips)))
        return int((await conn.execute(stmt)).scalar_one())


async def dead_letters(running: Running) -> int:
    dead = running.app.state.runtime.definition.tables.dead_letter
    async with running.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(dead))).scalar_one())


async def wait_outbox_drained(running: Running, timeout_s: float = 300) -> float:
    started = time.perf_counter()
    relay = running.app.state.runtime.relay
    while await relay.pending_count():
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError("the outbox relay did not publish every status.changed in time")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


# --- the plain baselines -------------------------------------------------------------------------------------------


def bare_table() -> Table:
    """purchase_entry's columns and primary key, nothing else: no unique key, no index, no schema."""
    columns = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in purchase_entry.columns]
    return Table("bench_plain_entry", MetaData(), *columns)


async def plain_insert(engine: AsyncEngine, table: Table, rows: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(insert(table), rows)
    return time.perf_counter() - started


def plain_page(
    nip: str, *, period: str | None, query: Query, after: tuple[date, uuid.UUID] | None, limit: int
) -> Select[Any]:
    """The page ``EntryRepository.page`` reads for the default sort, written out by hand (limit + 1, as the service
    reads one more to know whether a next page exists)."""
    e = purchase_entry.c
    conditions: list[Any] = [e.client_nip == nip, e.archived_at.is_(None)]
    if period is not None:
        conditions.append(e.period == period)
    if query.decision is not None:
        conditions.append(e.decision == query.decision)
    if query.text is not None:
        pattern = f"%{query.text.lower()}%"
        columns = (e.invoice_number, e.ksef_number, e.seller_name, e.description)
        conditions.append(or_(*(func.lower(c).like(pattern, "\\") for c in columns)))
    if after is not None:
        value, last_id = after
        conditions.append(or_(e.issue_date < value, and_(e.issue_date == value, e.id < last_id)))
    return select(purchase_entry).where(*conditions).order_by(e.issue_date.desc(), e.id.desc()).limit(limit + 1)


async def plain_rows(engine: AsyncEngine, stmt: Select[Any]) -> Sequence[Row[Any]]:
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).all()


# --- measuring -----------------------------------------------------------------------------------------------------


async def timed(call: Callable[[int], Awaitable[None]], samples: int, warmup: int) -> Figures:
    for i in range(warmup):
        await call(i)
    figures = Figures()
    for i in range(samples):
        started = time.perf_counter()
        await call(i)
        figures.samples.append((time.perf_counter() - started) * 1000)
    return figures


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


@contextmanager
def database(kind: str, tmp: str) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp}/buffer.db"
        return
    admin = os.environ.get(PG_ENV)
    if not admin:
        yield None
        return
    with temporary_database(admin, prefix="bench_buffer") as url:
        yield url


# --- part 1: ingest ------------------------------------------------------------------------------------------------


async def part_ingest(running: Running, sizes: Sizes, invoices: Invoices, nips: list[str], fresh: Nips) -> None:
    print()
    print(
        f"1. ingest: {sizes.clients} clients x {sizes.invoices} invoices = {sizes.clients * sizes.invoices} "
        f"invoice.fetched, {sizes.concurrency} client{'s' if sizes.concurrency != 1 else ''} at a time, "
        "each client's in order"
    )
    events = {nip: invoices.spread(nip, sizes.invoices, SCENARIO_A_MONTHS) for nip in nips}
    warm_nips = fresh.make(sizes.concurrency)
    warm_events = {nip: invoices.spread(nip, WARMUP_INVOICES, SCENARIO_A_MONTHS) for nip in warm_nips}
    measured, warm = envelopes_of(events), envelopes_of(warm_events)

    await deliver_all(running, warm, sizes.concurrency)
    await wait_outbox_drained(running)
    seconds = await deliver_all(running, measured, sizes.concurrency)
    drained = await wait_outbox_drained(running)
    total = sizes.clients * sizes.invoices
    stored = await count_entries(running.engine, nips)
    if stored != total or await dead_letters(running):
        raise AssertionError(f"stored {stored} of {total} entries ({await dead_letters(running)} dead letters)")

    bare = bare_table()
    async with running.engine.begin() as conn:
        await conn.run_sync(bare.metadata.create_all)
    now = datetime.now(UTC)
    await plain_insert(running.engine, bare, [entry_values(e, now) for evs in warm_events.values() for e in evs])
    plain_s = await plain_insert(running.engine, bare, [entry_values(e, now) for evs in events.values() for e in evs])

    rate, plain_rate = total / seconds, total / plain_s
    print(
        f"    {'consumer path (bus -> inbox -> entry + log + outbox)':<56} {total:>6} in {seconds:7.2f} s = "
        f"{rate:8.0f} invoices/s (target >= {INGEST_TARGET_PER_S:.0f}/s: {verdict(rate >= INGEST_TARGET_PER_S)})"
    )
    print(
        f"    {'plain INSERT, one core executemany into a bare table':<56} {total:>6} in {plain_s:7.2f} s = "
        f"{plain_rate:8.0f} rows/s"
    )
    print(f"    ratio: the consumer path takes {seconds / plain_s:.1f}x the plain INSERT's time")
    print(f"    outbox: every status.changed published {drained:.2f} s after the last delivery returned")


# --- part 2: office list latency -----------------------------------------------------------------------------------


async def mark_decisions(running: Running, nips: Sequence[str]) -> None:
    """A third of each client's entries to book, a third not to, a third left unverified: the decision filter then
    has something to find and unverified entries get suggestions, as in a buffer in use. Set in SQL: setup."""
    e = purchase_entry.c
    async with running.engine.begin() as conn:
        rows = (
            await conn.execute(
                select(e.id).where(e.client_nip.in_(list(nips))).order_by(e.client_nip, e.issue_date, e.ksef_number)
            )
        ).all()
        decided_at = datetime(2026, 11, 20, 9, tzinfo=UTC)
        params = [{"b_id": r.id, "b_decision": ("book", "dont_book")[i % 3]} for i, r in enumerate(rows) if i % 3 != 2]
        stmt = (
            update(purchase_entry)
            .where(e.id == bindparam("b_id"))
            .values(
                decision=bindparam("b_decision"),
                decided_at=decided_at,
                decided_by="owner",
                decided_by_side="client",
                revision=2,
            )
        )
        await conn.execute(stmt, params)
    if not running.is_sqlite:
        # Fresh bulk loads have no planner statistics yet; a table in use has. Both sides read the same tables.
        async with running.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))


@dataclass(frozen=True)
class Target:
    """What one sample reads: a client and, in scenario B, a month."""

    nip: str
    period: str | None


async def scenario(running: Running, title: str, targets: list[Target], limit: int, sizes: Sizes) -> None:
    print(f"   {title}")
    print(
        f"    {'ms':<30} {'API p50':>8} {'API p95':>8}  {'API p95 target':<16} {'plain p50':>9} {'plain p95':>9} "
        f"{'p95 ratio':>10}"
    )
    url = "/clients/{}/purchases"

    def params_of(t: Target, q: Query, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if t.period is not None:
            params["period"] = t.period
        if q.decision is not None:
            params["decision"] = q.decision
        if q.text is not None:
            params["q"] = q.text
        if cursor is not None:
            params["cursor"] = cursor
        return params

    async def api_page(t: Target, q: Query, cursor: str | None = None) -> dict[str, Any]:
        r = await running.http.get(url.format(t.nip), params=params_of(t, q, cursor), headers=running.office)
        if r.status_code != 200:
            raise AssertionError(f"GET {r.url}: {r.status_code} {r.text[:500]}")
        body: dict[str, Any] = r.json()
        return body

    # Each target's second page starts where its first ended: the API's cursor, and the plain side's (value, id).
    first = Query("first page")
    cursors: dict[Target, str] = {}
    afters: dict[Target, tuple[date, uuid.UUID]] = {}
    for t in targets:
        page = await api_page(t, first)
        if page["next_cursor"] is None:
            raise AssertionError(f"{t}: one page holds every entry, so there is no second page (lower the limit)")
        cursors[t] = page["next_cursor"]
        plain_first = await plain_rows(
            running.engine, plain_page(t.nip, period=t.period, query=first, after=None, limit=limit)
        )
        last = plain_first[limit - 1]
        afters[t] = (last.issue_date, last.id)

    for q in QUERIES:

        def plain_stmt(t: Target, q: Query = q) -> Select[Any]:
            return plain_page(t.nip, period=t.period, query=q, after=afters[t] if q.second_page else None, limit=limit)

        # What is measured must be the same page on both sides.
        for t in targets[:3]:
            api_ids = [item["id"] for item in (await api_page(t, q, cursors[t] if q.second_page else None))["items"]]
            plain_ids = [str(r.id) for r in (await plain_rows(running.engine, plain_stmt(t)))[:limit]]
            if api_ids != plain_ids or not api_ids:
                raise AssertionError(
                    f"{q.label}, {t}: the API and the plain SELECT return different pages:\n{api_ids}\n{plain_ids}"
                )

        async def api_call(i: int, q: Query = q) -> None:
            t = targets[i % len(targets)]
            cursor = cursors[t] if q.second_page else None
            r = await running.http.get(url.format(t.nip), params=params_of(t, q, cursor), headers=running.office)
            if r.status_code != 200:
                raise AssertionError(f"GET {r.url}: {r.status_code} {r.text[:500]}")

        async def plain_call(i: int, q: Query = q) -> None:
            await plain_rows(running.engine, plain_stmt(targets[i % len(targets)], q))

        api = await timed(api_call, sizes.samples, sizes.warmup)
        plain = await timed(plain_call, sizes.samples, sizes.warmup)
        met = verdict(api.p95 < LIST_TARGET_P95_MS)
        print(
            f"    {q.label:<30} {api.p50:8.1f} {api.p95:8.1f}  {'< ' + f'{LIST_TARGET_P95_MS:.0f} ms: ' + met:<16} "
            f"{plain.p50:9.2f} {plain.p95:9.2f} {api.p95 / plain.p95:9.1f}x"
        )


async def part_list(running: Running, sizes: Sizes, invoices: Invoices, nips: list[str], fresh: Nips) -> None:
    (big_nip,) = fresh.make(1)
    months = month_names(sizes.big_months)
    big = {big_nip: invoices.spread(big_nip, sizes.big_months * sizes.big_per_month, months)}
    await deliver_all(running, envelopes_of(big), 1)  # setup through the same consumer path; not timed
    await wait_outbox_drained(running)
    await mark_decisions(running, [*nips, big_nip])
    await open_clients(running.app, *nips, big_nip)

    print()
    print(
        "2. office list latency: GET /clients/{nip}/purchases via httpx.ASGITransport, office token (nips ['*']), "
        "an access-ledger row per read"
    )
    print(
        f"   {sizes.samples} samples each after {sizes.warmup} warm-up requests; decisions set in SQL beforehand "
        "(1/3 book, 1/3 dont_book, 1/3 unverified)"
    )
    a_targets = [Target(nip, None) for nip in nips]
    await scenario(
        running,
        f"A: {sizes.clients} clients x {sizes.invoices} entries (all months), limit={sizes.page}, rotating over the "
        "clients",
        a_targets,
        sizes.page,
        sizes,
    )
    b_targets = [Target(big_nip, m) for m in months]
    await scenario(
        running,
        f"B: one client, {sizes.big_months} months x {sizes.big_per_month} entries, period=<a month>, "
        f"limit={BIG_LIMIT}, rotating over the months",
        b_targets,
        BIG_LIMIT,
        sizes,
    )


# --- main ----------------------------------------------------------------------------------------------------------


async def run(kind: str, sizes: Sizes) -> None:
    with tempfile.TemporaryDirectory() as tmp, database(kind, tmp) as url:
        if url is None:
            print(
                f"PostgreSQL: not measured ({PG_ENV} unset: run `bash scripts/infra.sh up` and "
                f'`eval "$(bash scripts/infra.sh env)"`, or `make bench`; or pass --db sqlite)'
            )
            return
        fresh = Nips()
        seller_nips = fresh.make(len(SELLER_KINDS) * 5)
        sellers = [
            (n, f"{SELLER_KINDS[i % len(SELLER_KINDS)]} {i // len(SELLER_KINDS) + 1} Sp. z o.o.")
            for i, n in enumerate(seller_nips)
        ]
        invoices = Invoices(sellers)
        nips = fresh.make(sizes.clients)
        async with open_buffer(url) as running:
            await part_ingest(running, sizes, invoices, nips, fresh)
            await part_list(running, sizes, invoices, nips, fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres", help="database (postgres)")
    parser.add_argument("--clients", type=int, help="clients ingested and read in scenario A (200; quick 20)")
    parser.add_argument("--invoices", type=int, help="invoices per client (100; quick 50)")
    parser.add_argument("--samples", type=int, help="measured requests per query and side (200; quick 30)")
    parser.add_argument("--warmup", type=int, help="unmeasured requests before each series (20; quick 5)")
    parser.add_argument("--concurrency", type=int, help="clients delivered at a time (postgres 8, sqlite 1)")
    parser.add_argument("--big-months", type=int, help="scenario B: months of the big client (12; quick 2)")
    parser.add_argument("--big-per-month", type=int, default=500, help="scenario B: entries a month (500)")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that the bench works")
    args = parser.parse_args()

    def pick(given: int | None, full: int, quick: int) -> int:
        return given if given is not None else (quick if args.quick else full)

    clients, invoices = pick(args.clients, 200, 20), pick(args.invoices, 100, 50)
    sizes = Sizes(
        clients=clients,
        invoices=invoices,
        samples=pick(args.samples, 200, 30),
        warmup=pick(args.warmup, 20, 5),
        # SQLite has one writer at a time: more deliveries at once would only queue on its lock.
        concurrency=args.concurrency if args.concurrency is not None else (1 if args.db == "sqlite" else 8),
        big_months=pick(args.big_months, 12, 2),
        big_per_month=args.big_per_month,
        page=max(1, invoices // 2),
    )
    for name in ("clients", "invoices", "samples", "concurrency", "big_months", "big_per_month"):
        if getattr(sizes, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if sizes.invoices < 2 or sizes.big_per_month <= BIG_LIMIT:
        parser.error(f"--invoices must be >= 2 and --big-per-month > {BIG_LIMIT}, or there is no second page")
    if sizes.warmup < 0:
        parser.error("--warmup must not be negative")
    label = "PostgreSQL" if args.db == "postgres" else "SQLite"
    print(f"purchase buffer benchmark (buffer-svc, {label}{', quick' if args.quick else ''})")
    started = time.perf_counter()
    asyncio.run(run(args.db, sizes))
    print(f"\nbench_buffer took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
