"""An export round trip against the simulator (seeded invoices → encrypted package → decrypted, unzipped, hashes
matching), with every call written to the communication log, which keeps no secret."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from ksef_gateway.budget.service import Unlimited
from ksef_gateway.communication.service import CommunicationLog
from ksef_gateway.db import communication_log
from ksef_gateway.ksef import Environment, KsefClients, KsefTokenCredential, KsefUnavailable
from ksef_gateway.testing import KsefHarness, RecordingObserver, ksef_settings_for, owner_certificate, valid_nips
from ksef_sim.domain.auth import Challenge
from ksef_sim.testing import RunningSim
from platform_common.db import Database
from platform_common.settings import DatabaseSettings

MigratedDb = Callable[[str], Awaitable[Database]]

BUYER, OTHER = valid_nips(2, start=913_000_000)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


async def test_export_round_trip_is_logged_without_secrets(
    ksef: KsefHarness, running: RunningSim, migrated_db: MigratedDb, db_url: str
) -> None:
    db = await migrated_db(db_url)
    log = CommunicationLog(db, "replica-log")
    clients = KsefClients(ksef.http, settings=ksef_settings_for(running.api_url), budget=Unlimited(), observer=log)
    client = clients.for_environment(Environment.SIM)
    seeded = (await ksef.operator("POST", "/seed", {"buyerNip": BUYER, "count": 25, "spreadDays": 20})).json()
    token = await ksef.create_ksef_token(BUYER)
    session = await client.authenticate(BUYER, KsefTokenCredential(SecretStr(token)))
    filters = {
        "subjectType": "Subject2",
        "dateRange": {
            "dateType": "PermanentStorage",
            "from": (running.sim.clock.now() - timedelta(days=30)).isoformat(),
            "restrictToPermanentStorageHwmDate": True,
        },
    }
    # The Ministry rotates the symmetric key after the client cached it: 21470, refetch, retry.
    await client.public_keys()
    await ksef.operator("POST", "/keys/rotate", {"usage": "SymmetricKeyEncryption"})

    handle = await client.start_export(session.access_token, filters)
    status = await client.export_status(session.access_token, handle.reference_number)
    assert status.done, status
    assert status.package is not None and status.package.invoice_count == 25
    assert status.package.permanent_storage_hwm_date and not status.package.is_truncated
    package = await client.download_export_package(handle, status)

    assert len(package.invoices) == 25
    assert {n for n, _ in package.invoices} == set(seeded["ksefNumbers"])
    hashes = {m["ksefNumber"]: m["invoiceHash"] for m in package.metadata}
    assert all(hashes[n] == sha256_b64(xml) for n, xml in package.invoices)
    assert package.mismatched == ()
    number, xml = package.invoices[0]
    downloaded, header = await client.download_invoice(session.access_token, number)
    assert downloaded == xml and header == sha256_b64(xml)

    entries = await log.entries(BUYER, limit=100)
    by_operation = [(e.operation, e.outcome) for e in reversed(entries)]
    assert ("auth.ksef_token", "ok") in by_operation and ("auth.redeem", "ok") in by_operation
    exports = [e for e in entries if e.operation == "invoices.export"]
    assert sorted((e.outcome, tuple(e.error_codes)) for e in exports) == [("failed", (21470,)), ("ok", ())]
    assert handle.reference_number in next(e for e in exports if e.outcome == "ok").reference_numbers
    assert [e.operation for e in entries].count("invoices.export_part") == len(status.package.parts)
    assert number in next(e for e in entries if e.operation == "invoices.download").reference_numbers
    assert all(e.replica_id == "replica-log" and e.environment == "sim" for e in entries)
    assert await log.entries(OTHER) == []
    newest_first = [e.id for e in entries]
    assert newest_first == sorted(newest_first, reverse=True)
    older = await log.entries(BUYER, limit=5, before_id=entries[4].id)
    assert [e.id for e in older] == newest_first[5:10]

    async with db.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(select(communication_log))).mappings().all()]
    dump = json.dumps(rows, default=str)
    secrets = [token, token.split("|")[2], session.access_token, session.refresh_token]
    secrets += [c.challenge for c in running.sim.store.all(Challenge)]
    secrets += [
        handle.key.key.hex(),
        base64.b64encode(handle.key.key).decode(),
        base64.b64encode(handle.key.iv).decode(),
    ]
    assert secrets and not [s for s in secrets if s in dump]
    assert "<Faktura" not in dump and "?sig=" not in dump and "sig=" not in dump

    # Retention: everything older than the cutoff goes, nothing newer.
    assert await log.purge(timedelta(days=1)) == 0
    assert await log.purge(timedelta(seconds=-60)) == len(rows)
    await db.dispose()


async def test_a_failing_log_write_does_not_fail_the_call(
    ksef: KsefHarness, running: RunningSim, tmp_path: Path
) -> None:
    # A database without the gateway's tables: every insert fails.
    broken = Database(DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")), "gateway")
    clients = KsefClients(
        ksef.http,
        settings=ksef_settings_for(running.api_url),
        budget=Unlimited(),
        observer=CommunicationLog(broken, "r"),
    )

    session = await clients.for_environment(Environment.SIM).authenticate(BUYER, owner_certificate(BUYER))

    assert session.access_token
    await broken.dispose()


async def test_unreachable_ksef_is_retried_then_unavailable(running: RunningSim) -> None:
    recorder = RecordingObserver()
    async with httpx.AsyncClient(timeout=5) as http:
        clients = KsefClients(
            http,
            settings=ksef_settings_for(running.api_url, max_retries=2),
            budget=Unlimited(),
            observer=recorder,
        )
        await http.put(f"{running.root_url}/_sim/faults", json={"outage": True})
        try:
            with pytest.raises(KsefUnavailable) as failure:
                await clients.for_environment(Environment.SIM).challenge(BUYER)
        finally:
            await http.delete(f"{running.root_url}/_sim/faults")
    assert failure.value.http_status == 503 and failure.value.retry_after_s == 60
    [call] = recorder.calls
    assert (call.operation, call.outcome, call.attempts, call.http_status) == ("auth.challenge", "unavailable", 3, 503)
