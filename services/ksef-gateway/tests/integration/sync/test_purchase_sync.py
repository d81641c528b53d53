"""Purchase sync end to end against the KSeF simulator over real HTTP: the gateway's own KSeF client and session
manager (XAdES login with a certificate credential), a real ServiceRuntime (database, outbox, relay, transport).

- 2 500 invoices for one client with the simulator's permanent-storage lag and exports capped at 400 invoices (so
  every window is truncated and the next starts from ``lastPermanentStorageDate``, overlapping the previous one):
  every invoice arrives exactly once as ``invoice.fetched`` on real Kafka, also across a gateway restart in the
  middle of the sync, and a rewound checkpoint (overlapping windows again) adds nothing;
- an export stuck at status 100 is abandoned by the watchdog and the sync completes once the fault is lifted;
- bytes that do not match KSeF's hash are reported and not stored, per invoice on both the download and the export
  path (the rest of the window is stored; the bad one is fetched again, then given up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretBytes
from sqlalchemy import select, update

import ksef_sim.domain.exports as sim_exports
from ksef_gateway.budget.service import Unlimited
from ksef_gateway.db import purchase_invoice, sync_state
from ksef_gateway.ksef.client import KsefClients
from ksef_gateway.ksef.credentials import CertificateCredential, Credential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.main import DEFINITION
from ksef_gateway.purchases import repository as purchases
from ksef_gateway.sessions.service import NoCredential, SessionManager
from ksef_gateway.settings import GatewaySettings, KsefSettings, SyncSettings
from ksef_gateway.sync import repository as sync_repository
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.sync.engine import SyncEngine
from ksef_gateway.sync.ksef import GatewayKsef
from ksef_gateway.sync.scheduler import SyncScheduler, SyncTarget
from ksef_sim.domain.seed import random_nip
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.contracts.invoices import InvoiceFetched
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings
from platform_common.testing import wait_until

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
EXPORT_CAP = 400


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    # The simulator caps a package at KSeF's 10 000; a small cap makes 2 500 invoices truncate five times.
    real_build = sim_exports.build_archive

    def capped(*args: Any, **kwargs: Any) -> sim_exports.BuiltArchive:
        kwargs["max_invoices"] = min(kwargs.get("max_invoices", EXPORT_CAP), EXPORT_CAP)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(sim_exports, "build_archive", capped)

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            rate_limits=RateLimitMode.OFF,
            # The permanent-storage lag: an invoice becomes final 1-3 s after acquisition, the HWM trails by 2 s.
            permanent_storage_delay_s=1.0,
            permanent_storage_jitter_s=2.0,
            export_processing_delay_s=0,
            random_seed=5,
        )

    with serve(settings) as running:
        yield running


def self_signed_owner(nip: str) -> CertificateCredential:
    """An authentication certificate naming the context's owner (``TINPL-<nip>``), as TEST accepts them."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.GIVEN_NAME, "Anna"),
            x509.NameAttribute(NameOID.SURNAME, "Zakupowa"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Anna Zakupowa"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"TINPL-{nip}"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertificateCredential(certificate.public_bytes(serialization.Encoding.PEM), SecretBytes(key_pem))


class OneClient:
    """Credential source and sync targets for the one client of a test (the vault's part, kept out of the way)."""

    def __init__(self, nip: str) -> None:
        self.nip = nip
        self.credential = self_signed_owner(nip)

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        if context_nip != self.nip:
            raise NoCredential(context_nip)
        return Environment.SIM, self.credential

    async def targets(self) -> list[SyncTarget]:
        return [SyncTarget(self.nip, (SubjectType.SUBJECT2,))]


class SyncComponent:
    """What wiring.Gateway builds for the sync, assembled here from the same parts (KsefClients, SessionManager,
    SyncEngine, SyncScheduler) so the test does not depend on the vault being set up."""

    def __init__(self, runtime: ServiceRuntime, client: OneClient, sync: SyncSettings, *, schedule: bool) -> None:
        settings = runtime.settings
        assert isinstance(settings, GatewaySettings)
        self.http = httpx.AsyncClient(timeout=30)
        self.sessions = SessionManager(KsefClients(self.http, settings=settings.ksef, budget=Unlimited()), client, None)
        self.engine = SyncEngine(runtime.db.sessionmaker, runtime.outbox, GatewayKsef(self.sessions), sync)
        self.scheduler = SyncScheduler(self.engine, client, sync)
        self._schedule = schedule

    async def start(self) -> None:
        if self._schedule:
            await self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.sessions.close()
        await self.http.aclose()


def sync_settings(**overrides: Any) -> SyncSettings:
    values: dict[str, Any] = {
        "min_poll_interval_s": 0.3,
        "tick_interval_s": 0.1,
        "export_poll_interval_s": 0.05,
        "export_poll_max_interval_s": 0.1,
        "retry_base_s": 0.2,
        "retry_max_s": 0.5,
        "backfill_months": 2,
    }
    values.update(overrides)
    return SyncSettings(**values)


@dataclasses.dataclass
class Gateway:
    runtime: ServiceRuntime
    component: SyncComponent

    @property
    def engine(self) -> SyncEngine:
        return self.component.engine


@pytest.fixture
def nip() -> str:
    return random_nip(Random(uuid.uuid4().int))


async def start_gateway(
    sim: RunningSim, url: str, client: OneClient, sync: SyncSettings, *, kafka: str | None, schedule: bool
) -> Gateway:
    settings = GatewaySettings(
        db=DatabaseSettings(url=url),
        kafka=KafkaSettings(bootstrap_servers=kafka or "127.0.0.1:1", topic_partitions=1),
        messaging=MessagingSettings(transport="kafka" if kafka else "inprocess", relay_poll_interval_s=0.05),
        ksef=KsefSettings(sim_base_url=sim.api_url, replica_id=f"test-{uuid.uuid4().hex[:6]}"),
        sync=sync,
    )
    holder: list[SyncComponent] = []

    def components(runtime: ServiceRuntime) -> tuple[SyncComponent]:
        holder.append(SyncComponent(runtime, client, sync, schedule=schedule))
        return (holder[-1],)

    runtime = ServiceRuntime(dataclasses.replace(DEFINITION, components=components), settings, migrate_on_start=True)
    await runtime.start()
    return Gateway(runtime, holder[0])


@pytest.fixture
async def gateways() -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        if gateway.runtime.started:
            await gateway.runtime.stop()


async def seed(sim: RunningSim, nip: str, count: int, **options: Any) -> dict[str, Any]:
    # Seeding 2 500 invoices is one synchronous request that signs and stores them all: on a loaded machine it
    # takes longer than httpx's default 5 s read timeout. It is set-up, not the behaviour under test.
    async with httpx.AsyncClient(base_url=sim.root_url, timeout=httpx.Timeout(10.0, read=120.0)) as http:
        body = {"buyerNip": nip, "count": count, "sellers": 40, "spreadDays": 30, **options}
        response = await http.post("/_sim/seed", json=body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


async def sim_faults(sim: RunningSim, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=sim.root_url) as http:
        response = await (http.put("/_sim/faults", json=faults) if faults else http.delete("/_sim/faults"))
        assert response.status_code == 200, response.text


def visible_numbers(sim: RunningSim, nip: str) -> set[str]:
    """What KSeF holds for the buyer, straight from the simulator's store."""
    from ksef_sim.records import StoredInvoice

    return {i.ksef_number for i in sim.sim.store.all(StoredInvoice) if i.buyer_identifier.value == nip}


async def stored_count(gateway: Gateway, nip: str) -> int:
    async with gateway.runtime.db.sessionmaker() as session:
        return await purchases.count_invoices(session, nip)


async def state_of(gateway: Gateway, nip: str) -> sync_repository.SyncState:
    async with gateway.runtime.db.sessionmaker() as session:
        state = await sync_repository.load_state(session, nip, SubjectType.SUBJECT2)
    assert state is not None
    return state


async def outbox_numbers(gateway: Gateway, nip: str) -> list[str]:
    outbox = gateway.runtime.definition.tables.outbox
    async with gateway.runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(outbox.c.payload).where(outbox.c.key == nip))).scalars().all()
    return [Envelope.model_validate_json(p).parse(InvoiceFetched).ksef_number for p in rows]


# --- 2 500 invoices, restart in the middle, overlaps, exactly once on Kafka ------------------------------------------


@pytest.mark.postgres
@pytest.mark.kafka
async def test_2500_invoices_arrive_exactly_once_on_kafka_across_a_restart_and_overlapping_windows(
    sim: RunningSim, pg_url: str, kafka_bootstrap: str, nip: str, gateways: list[Gateway]
) -> None:
    seeded = await seed(sim, nip, 2500)
    assert seeded["created"] == 2500
    expected = visible_numbers(sim, nip)
    # The topic is shared by every run against this broker: read only what was published after this point.
    since = await topic_end_offsets(kafka_bootstrap)
    client = OneClient(nip)
    sync = sync_settings()

    first = await start_gateway(sim, pg_url, client, sync, kafka=kafka_bootstrap, schedule=True)
    gateways.append(first)
    # Stop it mid-sync: a few windows are in, the rest not.
    await wait_until(lambda: _at_least(first, nip, EXPORT_CAP), timeout=30, what="the first windows")
    await first.runtime.stop()

    second = await start_gateway(sim, pg_url, client, sync, kafka=kafka_bootstrap, schedule=True)
    gateways.append(second)
    before_restart = await stored_count(second, nip)
    assert EXPORT_CAP <= before_restart < 2500, before_restart
    await wait_while_progressing(lambda: stored_count(second, nip), 2500, what="all 2 500 invoices")

    # Each window's invoices commit as they come; the run's end (backfilled) commits after the last of them.
    async def backfilled() -> bool:
        return (await state_of(second, nip)).backfilled

    await wait_until(backfilled, timeout=30, what="the run that stored the last window to end")
    state = await state_of(second, nip)
    assert state.backfilled and state.last_error is None and state.export_reference is None

    # Overlapping windows once more: rewind the checkpoint by 20 days and let the scheduler run it again.
    async with second.runtime.db.sessionmaker() as session, session.begin():
        await session.execute(
            update(sync_state)
            .where(sync_state.c.client_nip == nip)
            .values(checkpoint=datetime.now(UTC) - timedelta(days=20), next_run_at=datetime.now(UTC))
        )
    await wait_until(lambda: _ran_since(second, nip, state.last_run_at), timeout=30, what="the overlapping run")
    assert await stored_count(second, nip) == 2500

    async with second.runtime.db.sessionmaker() as session:
        numbers = set(
            (
                await session.execute(
                    select(purchase_invoice.c.ksef_number).where(purchase_invoice.c.client_nip == nip)
                )
            ).scalars()
        )
    assert numbers == expected
    in_outbox = await outbox_numbers(second, nip)
    assert len(in_outbox) == 2500 and set(in_outbox) == expected

    # Exactly once on the real broker: one event per KSeF number, none missing, no second event for an invoice.
    # (The relay publishes at least once: a stop between Kafka's ack and marking the row may resend the SAME event,
    # which every consumer's inbox absorbs by its id; what must never happen is a second, different event.)
    received = await consume_invoice_fetched(kafka_bootstrap, nip, want=2500, since=since)
    events_per_invoice: dict[str, set[uuid.UUID]] = {}
    for event_id, number in received:
        events_per_invoice.setdefault(number, set()).add(event_id)
    assert set(events_per_invoice) == expected
    assert all(len(ids) == 1 for ids in events_per_invoice.values())


async def _at_least(gateway: Gateway, nip: str, count: int) -> bool:
    return await stored_count(gateway, nip) >= count


async def _ran_since(gateway: Gateway, nip: str, since: datetime | None) -> bool:
    state = await state_of(gateway, nip)
    finished = state.last_success_at is not None and since is not None and state.last_success_at > since
    return finished and not gateway.component.scheduler.is_running(nip, SubjectType.SUBJECT2)


async def wait_while_progressing(
    probe: Callable[[], Awaitable[int]], want: int, *, what: str, stall_s: float = 20.0
) -> None:
    """Wait until ``probe()`` reaches ``want``; fail only when it stops growing for ``stall_s``. A fixed total
    deadline fails a healthy sync that a loaded machine merely slows down; a stall is the real failure."""
    loop = asyncio.get_running_loop()
    last, last_change = -1, loop.time()
    while True:
        value = await probe()
        if value >= want:
            return
        if value != last:
            last, last_change = value, loop.time()
        elif loop.time() - last_change > stall_s:
            raise AssertionError(f"{what}: stuck at {value} of {want} for {stall_s:.0f} s")
        await asyncio.sleep(0.1)


async def topic_partitions(bootstrap: str) -> list[TopicPartition]:
    """The partitions of the invoice.fetched topic (none when it does not exist yet)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([InvoiceFetched.topic])
    finally:
        await admin.close()
    if described.get("error_code"):
        return []
    return sorted(TopicPartition(InvoiceFetched.topic, p["partition"]) for p in described.get("partitions") or [])


async def topic_end_offsets(bootstrap: str) -> dict[int, int]:
    """The current end of every partition of the invoice.fetched topic (empty when the topic does not exist yet)."""
    partitions = await topic_partitions(bootstrap)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def consume_invoice_fetched(
    bootstrap: str, nip: str, *, want: int, since: dict[int, int]
) -> list[tuple[uuid.UUID, str]]:
    """Every invoice.fetched of this client on the broker as (event id, KSeF number), read from the offsets
    ``since`` (taken before the test published anything), so earlier runs' events on the shared topic do not have
    to be read through; the NIP is this test's own."""
    partitions = await topic_partitions(bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    received: list[tuple[uuid.UUID, str]] = []
    distinct: set[uuid.UUID] = set()
    try:
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, since.get(tp.partition, 0))
        loop = asyncio.get_running_loop()
        # Fail on a stall (nothing new for 20 s), not on a total deadline a loaded machine may overrun.
        stalled_at = loop.time() + 20
        quiet_polls = 0
        while loop.time() < stalled_at and quiet_polls < 2:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            records = [r for rs in batch.values() for r in rs]
            if records:
                stalled_at = loop.time() + 20
            for record in records:
                if record.key != nip.encode():
                    continue
                envelope = Envelope.from_bytes(record.value)
                received.append((envelope.id, envelope.parse(InvoiceFetched).ksef_number))
                distinct.add(envelope.id)
            # Once everything is in, read on until the topic is quiet: a late second event must show up too.
            quiet_polls = quiet_polls + 1 if len(distinct) >= want and not records else 0
    finally:
        await consumer.stop()
    return received


# --- watchdog -------------------------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_a_stuck_export_is_abandoned_by_the_watchdog_and_the_sync_completes_after_the_fault(
    sim: RunningSim, db_url: str, nip: str, gateways: list[Gateway]
) -> None:
    await seed(sim, nip, 30)
    expected = visible_numbers(sim, nip)
    gateway = await start_gateway(
        sim, db_url, OneClient(nip), sync_settings(export_stuck_after_s=0.5), kafka=None, schedule=False
    )
    gateways.append(gateway)

    await sim_faults(sim, stuckExports=True)
    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)
    assert report.stored == 0
    assert report.error is not None and "stuck at status 100" in report.error
    state = await state_of(gateway, nip)
    assert state.export_reference is None  # abandoned, not resumed forever
    assert state.last_error is not None and "watchdog" in state.last_error
    assert state.consecutive_failures == 1
    assert await stored_count(gateway, nip) == 0

    await sim_faults(sim)
    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)
    assert report.error is None, report.error
    assert report.stored == 30
    state = await state_of(gateway, nip)
    assert state.last_error is None and state.consecutive_failures == 0 and state.backfilled
    async with gateway.runtime.db.sessionmaker() as session:
        numbers = set(
            (
                await session.execute(
                    select(purchase_invoice.c.ksef_number).where(purchase_invoice.c.client_nip == nip)
                )
            ).scalars()
        )
    assert numbers == expected


@pytest.mark.postgres
async def test_a_restart_resumes_the_export_in_flight_instead_of_starting_another(
    sim: RunningSim, db_url: str, nip: str, gateways: list[Gateway]
) -> None:
    await seed(sim, nip, 12)
    gateway = await start_gateway(
        sim, db_url, OneClient(nip), sync_settings(export_stuck_after_s=60), kafka=None, schedule=False
    )
    gateways.append(gateway)
    await sim_faults(sim, stuckExports=True)
    run = asyncio.create_task(gateway.engine.run(nip, SubjectType.SUBJECT2))
    state = await wait_until(lambda: _export_in_flight(gateway, nip), what="an export in flight")
    run.cancel()  # the process dies while polling
    with pytest.raises(asyncio.CancelledError):
        await run
    reference = state.export_reference
    await sim_faults(sim)

    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)
    assert report.error is None and report.stored == 12
    exports = [e for e in sim.sim.store.all(sim_exports.InvoiceExport) if e.context_value == nip]
    assert [e.reference_number for e in exports] == [reference]  # the same export, not a second one


async def _export_in_flight(gateway: Gateway, nip: str) -> sync_repository.SyncState | None:
    async with gateway.runtime.db.sessionmaker() as session:
        state = await sync_repository.load_state(session, nip, SubjectType.SUBJECT2)
    return state if state is not None and state.export_reference else None


# --- hash verification ----------------------------------------------------------------------------------------------


def tamper(sim: RunningSim, ksef_number: str) -> None:
    """KSeF's copy of one invoice changes after its hash was recorded: what a download returns no longer matches."""
    from ksef_sim.records import StoredInvoice

    record = sim.sim.store.get(StoredInvoice, ksef_number)
    assert record is not None
    store = sim.sim.store
    real_get_blob = store.get_blob

    def get_blob(name: str) -> bytes | None:
        data = real_get_blob(name)
        if name == record.blob_name and data is not None:
            return data.replace(b"</P_2>", b"-X</P_2>", 1)
        return data

    store.get_blob = get_blob  # type: ignore[method-assign]


@pytest.mark.postgres
async def test_a_download_whose_bytes_do_not_match_the_hash_is_reported_and_not_stored(
    sim: RunningSim, db_url: str, nip: str, gateways: list[Gateway]
) -> None:
    await seed(sim, nip, 4)
    gateway = await start_gateway(
        sim, db_url, OneClient(nip), sync_settings(hash_mismatch_retries=2), kafka=None, schedule=False
    )
    gateways.append(gateway)
    assert (await gateway.engine.run(nip, SubjectType.SUBJECT2)).stored == 4

    # A small delta after a small one: the metadata query + per-invoice download path.
    before = visible_numbers(sim, nip)
    # Seeded at the simulator's "now": KSeF never adds anything below an HWM it has already reported.
    await seed(sim, nip, 3, start=sim.sim.clock.now().isoformat(), spreadDays=0.0001)
    await wait_until(lambda: _final_in_ksef(sim, nip), what="the new invoices to become final in KSeF")
    fresh = sorted(visible_numbers(sim, nip) - before)
    bad = fresh[1]
    tamper(sim, bad)
    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)
    assert report.rejected == [bad], (report, fresh, await state_of(gateway, nip))
    assert report.stored == 2
    async with gateway.runtime.db.sessionmaker() as session:
        assert await purchases.load_invoice(session, nip, bad) is None
        (rejection,) = await sync_repository.list_rejections(session, nip)
        via = set(
            (
                await session.execute(
                    select(purchase_invoice.c.fetched_via).where(purchase_invoice.c.ksef_number.in_(fresh))
                )
            ).scalars()
        )
    assert via == {"download"}
    assert (rejection.ksef_number, rejection.reason, rejection.given_up) == (bad, "hash_mismatch", False)
    assert "invoiceHash" in rejection.detail
    state = await state_of(gateway, nip)
    assert state.last_error is not None and bad in state.last_error
    assert bad not in await outbox_numbers(gateway, nip)
    # The checkpoint waits before the rejected invoice, so the next run fetches it again...
    record = _sim_invoice(sim, bad)
    assert state.checkpoint is not None and state.checkpoint <= record.permanent_storage_date

    # ...and gives up after hash_mismatch_retries runs, keeping it listed, so the client's sync is not blocked.
    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)
    assert report.rejected == [bad]
    async with gateway.runtime.db.sessionmaker() as session:
        (rejection,) = await sync_repository.list_rejections(session, nip)
    assert rejection.given_up and rejection.attempts == 2
    assert (await state_of(gateway, nip)).checkpoint > record.permanent_storage_date


@pytest.mark.postgres
async def test_an_export_package_with_one_tampered_invoice_rejects_only_that_invoice(
    sim: RunningSim, db_url: str, nip: str, gateways: list[Gateway]
) -> None:
    await seed(sim, nip, 15)
    numbers = sorted(visible_numbers(sim, nip), key=lambda n: _sim_invoice(sim, n).permanent_storage_date)
    bad = numbers[3]
    tamper(sim, bad)
    gateway = await start_gateway(
        sim, db_url, OneClient(nip), sync_settings(hash_mismatch_retries=2), kafka=None, schedule=False
    )
    gateways.append(gateway)

    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)

    # The one bad invoice is rejected; the other 14 of the window are stored with their events.
    assert report.error is None, report
    assert report.rejected == [bad]
    assert report.stored == 14
    assert await stored_count(gateway, nip) == 14
    assert sorted(await outbox_numbers(gateway, nip)) == sorted(set(numbers) - {bad})
    async with gateway.runtime.db.sessionmaker() as session:
        assert await purchases.load_invoice(session, nip, bad) is None
        (rejection,) = await sync_repository.list_rejections(session, nip)
        via = set((await session.execute(select(purchase_invoice.c.fetched_via))).scalars())
    assert via == {"export"}
    assert (rejection.ksef_number, rejection.reason, rejection.given_up) == (bad, "hash_mismatch", False)
    state = await state_of(gateway, nip)
    assert state.last_error is not None and bad in state.last_error
    # Same policy as the download path: the checkpoint waits at the rejected invoice, so the next run fetches it...
    record = _sim_invoice(sim, bad)
    assert state.checkpoint is not None and state.checkpoint <= record.permanent_storage_date

    # ...and after hash_mismatch_retries runs it is given up, still listed, and the checkpoint moves past it.
    report = await gateway.engine.run(nip, SubjectType.SUBJECT2)
    assert report.rejected == [bad] and report.stored == 0
    async with gateway.runtime.db.sessionmaker() as session:
        (rejection,) = await sync_repository.list_rejections(session, nip)
    assert rejection.given_up and rejection.attempts == 2
    assert (await state_of(gateway, nip)).checkpoint > record.permanent_storage_date
    assert await stored_count(gateway, nip) == 14


def _sim_invoice(sim: RunningSim, number: str) -> Any:
    from ksef_sim.records import StoredInvoice

    record = sim.sim.store.get(StoredInvoice, number)
    assert record is not None
    return record


async def _final_in_ksef(sim: RunningSim, nip: str) -> bool:
    from ksef_sim.domain.query import permanent_storage_hwm
    from ksef_sim.records import StoredInvoice

    now = sim.sim.clock.now()
    hwm = permanent_storage_hwm(now, sim.sim.settings.permanent_storage_jitter_s)
    return all(
        i.permanent_storage_date <= hwm for i in sim.sim.store.all(StoredInvoice) if i.buyer_identifier.value == nip
    )


async def test_a_correction_event_names_the_invoice_it_corrects(
    sim: RunningSim, sqlite_url: str, nip: str, gateways: list[Gateway]
) -> None:
    await seed(sim, nip, 12, corrections=0.5)
    gateway = await start_gateway(sim, sqlite_url, OneClient(nip), sync_settings(), kafka=None, schedule=False)
    gateways.append(gateway)
    assert (await gateway.engine.run(nip, SubjectType.SUBJECT2)).stored == 12

    outbox = gateway.runtime.definition.tables.outbox
    async with gateway.runtime.db.sessionmaker() as session:
        payloads = (await session.execute(select(outbox.c.payload).where(outbox.c.key == nip))).scalars().all()
    events = {e.ksef_number: e for e in (Envelope.model_validate_json(p).parse(InvoiceFetched) for p in payloads)}
    corrections = [e for e in events.values() if e.invoice_type == "KOR"]
    assert corrections, "the seed made corrections"
    for correction in corrections:
        # DaneFaKorygowanej of the XML, carried to buffer-svc: the corrected invoice is one KSeF holds for the buyer.
        original = events[str(correction.corrected_ksef_number)]
        assert correction.corrected_invoice_number == original.p_2
    assert all(e.corrected_ksef_number is None for e in events.values() if e.invoice_type == "VAT")
