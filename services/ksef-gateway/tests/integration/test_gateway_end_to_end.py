"""The gateway through its real wiring, nothing bypassed: a gateway runtime (``create_app``) on PostgreSQL with the
Kafka transport, a KSeF token registered through ``PUT /clients/{nip}/credential`` (vault: validated against KSeF,
encrypted), and the scheduler syncing that client by itself (context lease → session manager → rate budget → sync
→ outbox → relay): every purchase invoice arrives exactly once as ``invoice.fetched`` on the real broker, and
``GET /clients/{nip}/sync`` shows the HWM and the budget left."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from random import Random

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from ksef_gateway.main import create_app
from ksef_gateway.purchases import repository as purchases
from ksef_gateway.settings import GatewaySettings, KsefSettings, SyncSettings, VaultSettings
from ksef_gateway.testing import owner_certificate
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.seed import random_nip
from ksef_sim.records import StoredInvoice
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.contracts.invoices import InvoiceFetched
from platform_common.messaging.envelope import Envelope
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings
from platform_common.testing import wait_until
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
INVOICES = 40


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            rate_limits=RateLimitMode.OFF,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=11,
        )

    with serve(settings) as running:
        yield running


async def partitions(bootstrap: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([InvoiceFetched.topic])
    finally:
        await admin.close()
    if described.get("error_code"):
        return []
    return sorted(TopicPartition(InvoiceFetched.topic, p["partition"]) for p in described.get("partitions") or [])


async def end_offsets(bootstrap: str) -> dict[int, int]:
    found = await partitions(bootstrap)
    if not found:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(found)).items()}
    finally:
        await consumer.stop()


async def consume(bootstrap: str, nip: str, since: dict[int, int], want: int) -> list[tuple[uuid.UUID, str]]:
    """(event id, KSeF number) of every invoice.fetched of ``nip`` published after ``since``; reads on until the
    topic is quiet once ``want`` distinct events are in (a late duplicate must show up too)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    received: list[tuple[uuid.UUID, str]] = []
    try:
        found = await partitions(bootstrap)
        consumer.assign(found)
        for tp in found:
            consumer.seek(tp, since.get(tp.partition, 0))
        loop = asyncio.get_running_loop()
        stalled_at, quiet = loop.time() + 20, 0
        while loop.time() < stalled_at and quiet < 2:
            records = [r for rs in (await consumer.getmany(timeout_ms=500)).values() for r in rs]
            if records:
                stalled_at = loop.time() + 20
            for record in records:
                if record.key == nip.encode():
                    envelope = Envelope.from_bytes(record.value)
                    received.append((envelope.id, envelope.parse(InvoiceFetched).ksef_number))
            quiet = quiet + 1 if len({r[0] for r in received}) >= want and not records else 0
    finally:
        await consumer.stop()
    return received


@pytest.mark.postgres
@pytest.mark.kafka
async def test_a_registered_ksef_token_syncs_every_invoice_exactly_once_onto_kafka(
    sim: RunningSim, pg_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    nip = random_nip(Random(uuid.uuid4().int))
    async with httpx.AsyncClient(base_url=sim.root_url, timeout=httpx.Timeout(10.0, read=60.0)) as http:
        r = await http.post("/_sim/seed", json={"buyerNip": nip, "count": INVOICES, "sellers": 5, "spreadDays": 20})
        assert r.status_code == 201, r.text
    expected = {i.ksef_number for i in sim.sim.store.all(StoredInvoice) if i.buyer_identifier.value == nip}
    assert len(expected) == INVOICES
    since = await end_offsets(kafka_bootstrap)

    tokens = TokenFactory(clock=FakeClock(datetime.now(UTC)))
    settings = GatewaySettings(
        db=DatabaseSettings(url=SecretStr(pg_url)),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_partitions=1),
        messaging=MessagingSettings(transport="kafka", relay_poll_interval_s=0.05),
        auth=tokens.settings(),
        ksef=KsefSettings(sim_base_url=sim.api_url, auth_poll_interval_s=0.02, replica_id="e2e"),
        vault=VaultSettings(master_keys={"k1": SecretStr(base64.b64encode(os.urandom(32)).decode())}),
        sync=SyncSettings(
            tick_interval_s=0.1, export_poll_interval_s=0.05, export_poll_max_interval_s=0.1, backfill_months=2
        ),
        data_dir=tmp_path,
    )
    app = create_app(settings, migrate_on_start=True)
    authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = tokens.clock, tokens.transport()
    async with LifespanManager(app) as manager:
        await open_clients(app, nip)
        gateway = Gateway.of(app.state.runtime)
        # A KSeF token of the client's owner, generated the way a user would (XAdES login, POST /tokens).
        owner = await gateway.ksef.for_environment("sim").authenticate(nip, owner_certificate(nip))
        async with httpx.AsyncClient(base_url=sim.api_url) as ksef:
            r = await ksef.post(
                "/tokens",
                json={"permissions": ["InvoiceRead"], "description": "ksef-hub e2e"},
                headers={"Authorization": f"Bearer {owner.access_token}"},
            )
        assert r.status_code == 202, r.text
        token = r.json()["token"]

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://gateway") as api:
            manage = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.credentials.manage'], nips=[nip])}"}
            r = await api.put(f"/clients/{nip}/credential", json={"kind": "ksef_token", "token": token}, headers=manage)
            assert r.status_code == 201, r.text
            assert token not in r.text

            async def all_stored() -> bool:
                async with gateway.runtime.db.sessionmaker() as session:
                    return await purchases.count_invoices(session, nip) == INVOICES

            await wait_until(all_stored, timeout=60, what="the scheduler to sync every invoice")

            received = await consume(kafka_bootstrap, nip, since, INVOICES)
            events: dict[str, set[uuid.UUID]] = {}
            for event_id, number in received:
                events.setdefault(number, set()).add(event_id)
            assert set(events) == expected  # none missing, nothing foreign
            assert all(len(ids) == 1 for ids in events.values())  # one event per invoice
            assert len({event_id for ids in events.values() for event_id in ids}) == INVOICES

            reader = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.read'], nips=[nip])}"}
            r = await api.get(f"/clients/{nip}/sync", headers=reader)
            assert r.status_code == 200, r.text
            view = r.json()
            assert view["credential_active"] and view["invoices_stored"] == INVOICES
            (subject2,) = [s for s in view["subjects"] if s["subject_type"] == "Subject2"]
            assert subject2["hwm"] is not None and subject2["backfilled"]
            assert subject2["last_error"] is None
            # The production budget (18 usable exports an hour), with this sync's export counted against it.
            hourly = {w["limit"]: w for w in view["budget"]["invoiceExport"]["windows"].values()}[18]
            assert hourly["used"] >= 1 and hourly["remaining"] == 18 - hourly["used"], view["budget"]
            assert token not in r.text
            # The sync ran under this replica's lease of the client's context.
            assert gateway.leases.holds(nip)
