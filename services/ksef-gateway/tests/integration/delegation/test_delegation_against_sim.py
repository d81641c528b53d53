"""Delegated access end to end against the simulator: the client grants the office's NIP in KSeF, approval-svc's
integration.activated arrives, the gateway verifies the grant with the office's certificate in the client's
context and syncs the client's purchase invoices; the client revokes the grant, credential.access_lost follows
within a check interval and the client is no longer synced. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from ksef_gateway.db import messaging_tables, office_certificate, purchase_invoice
from ksef_gateway.delegation.domain import AccessState
from ksef_gateway.main import create_app
from ksef_gateway.sessions.service import NoCredential
from ksef_gateway.settings import DelegationSettings, GatewaySettings, KsefSettings, SyncSettings, VaultSettings
from ksef_gateway.testing import owner_certificate, owner_key_and_certificate
from ksef_gateway.wiring import Gateway
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.contracts.integrations import IntegrationActivated, IntegrationRevoked
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing import wait_until
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

CLIENT = "7777777702"
OFFICE = "5260250216"
STRANGER = "1112223303"
CHECK_INTERVAL_S = 0.5


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[RunningSim]:
    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "sim.sqlite3",
            rate_limits=RateLimitMode.OFF,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            # The revocation test revokes while scheduled checks authenticate; with KSeF's asynchronous status
            # (100 → 200 after a delay) the revoke lands inside a check's authentication in most runs, and which of
            # the two refusals the check then sees is timing. Authentication decided at once keeps it deterministic;
            # the asynchronous path is exercised by every other suite against the simulator.
            auth_processing_delay_s=0,
            random_seed=13,
        )

    with serve(settings) as running:
        yield running


def pem_pair(nip: str) -> tuple[str, str]:
    key, cert = owner_key_and_certificate(nip, days=60)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@dataclass
class World:
    api: httpx.AsyncClient
    gateway: Gateway
    sim: RunningSim
    tokens: TokenFactory
    db_url: str

    def headers(
        self, *, org_kind: str = "office", perms: tuple[str, ...] = ("ksef.credentials.manage",)
    ) -> dict[str, str]:
        token = self.tokens.mint(sub="user-1", perms=list(perms), nips=[CLIENT], org_kind=org_kind)
        return {"Authorization": f"Bearer {token}"}

    async def client_owner(self) -> httpx.AsyncClient:
        """The client's owner, authenticated in its own KSeF context (XAdES), on the simulator's API."""
        session = await self.gateway.ksef.for_environment("sim").authenticate(CLIENT, owner_certificate(CLIENT))
        return httpx.AsyncClient(
            base_url=self.sim.api_url, headers={"Authorization": f"Bearer {session.access_token}"}, timeout=10
        )

    async def grant_office(self) -> None:
        """``POST /permissions/entities/grants``: the client grants the office's NIP InvoiceRead (REFERENCE.md §15)."""
        async with await self.client_owner() as ksef:
            r = await ksef.post(
                "/permissions/entities/grants",
                json={
                    "subjectIdentifier": {"type": "Nip", "value": OFFICE},
                    "permissions": [{"type": "InvoiceRead", "canDelegate": False}],
                    "description": "biuro rachunkowe",
                    "subjectDetails": {"fullName": "Biuro Rachunkowe Demo"},
                },
            )
            assert r.status_code == 202, r.text
            status = await ksef.get(f"/permissions/operations/{r.json()['referenceNumber']}")
            assert status.json()["status"]["code"] == 200, status.text

    async def revoke_office(self) -> None:
        """The client lists what it granted and revokes the office's grant (``DELETE /permissions/common/grants``)."""
        async with await self.client_owner() as ksef:
            r = await ksef.post(
                "/permissions/query/persons/grants",
                json={"queryType": "PermissionsGrantedInCurrentContext"},
                params={"pageSize": 100},
            )
            assert r.status_code == 200, r.text
            ids = [p["id"] for p in r.json()["permissions"] if p["authorizedIdentifier"]["value"] == OFFICE]
            assert ids, r.text
            for permission_id in ids:
                revoked = await ksef.delete(f"/permissions/common/grants/{permission_id}")
                assert revoked.status_code == 202, revoked.text

    async def emit(self, contract: Any) -> None:
        """approval-svc's event, as the in-process transport hands it to the gateway's subscription."""
        runtime = self.gateway.runtime
        async with runtime.db.sessionmaker() as session, session.begin():
            await runtime.outbox.emit(session, contract, client_nip=contract.client_nip)

    async def scalar(self, statement: Any) -> Any:
        engine = create_async_engine(self.db_url)
        try:
            async with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    conn = await conn.execution_options(schema_translate_map={"gateway": None})
                return (await conn.execute(statement)).all()
        finally:
            await engine.dispose()

    async def access_events(self) -> list[tuple[str, dict[str, Any]]]:
        outbox = messaging_tables.outbox
        rows = await self.scalar(
            select(outbox.c.payload).where(outbox.c.topic == "credential.access").order_by(outbox.c.seq)
        )
        envelopes = [json.loads(row[0]) for row in rows]
        return [(e["type"], e["payload"]) for e in envelopes]

    async def stored_invoices(self) -> int:
        rows = await self.scalar(
            select(func.count()).select_from(purchase_invoice).where(purchase_invoice.c.client_nip == CLIENT)
        )
        return int(rows[0][0])


def integration_event(contract: type[Any], revision: int, state: str) -> Any:
    return contract(
        integration_id=uuid.UUID("00000000-0000-4000-8000-00000000beef"),
        revision=revision,
        state=state,
        office_id=uuid.UUID("00000000-0000-4000-8000-0000000000aa"),
        office_nip=OFFICE,
        office_name="Biuro Rachunkowe Demo",
        client_nip=CLIENT,
        access_mode="grant",
        changed_at=datetime.now(UTC),
        changed_by_side="client",
    )


@asynccontextmanager
async def gateway_app(db_url: str, sim: RunningSim, tokens: TokenFactory, tmp_path: Path) -> AsyncIterator[World]:
    settings = GatewaySettings(
        db=DatabaseSettings(url=SecretStr(db_url)),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
        ksef=KsefSettings(sim_base_url=sim.api_url, auth_poll_interval_s=0.02, max_retries=0),
        vault=VaultSettings(master_keys={"k1": SecretStr("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")}),
        sync=SyncSettings(
            min_poll_interval_s=0.3,
            tick_interval_s=0.1,
            export_poll_interval_s=0.05,
            export_poll_max_interval_s=0.1,
            retry_base_s=0.2,
            retry_max_s=0.5,
            backfill_months=1,
        ),
        delegation=DelegationSettings(check_interval_s=CHECK_INTERVAL_S, retry_after_s=0.2),
        data_dir=tmp_path,
    )
    app = create_app(settings, migrate_on_start=True)
    authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = tokens.clock, tokens.transport()
    async with LifespanManager(app) as manager:
        await open_clients(app, CLIENT, OFFICE, STRANGER)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as api:
            yield World(api, Gateway.of(app.state.runtime), sim, tokens, db_url)


@pytest.fixture
async def world(db_url: str, sim: RunningSim, tmp_path: Path) -> AsyncIterator[World]:
    async with gateway_app(db_url, sim, TokenFactory(clock=FakeClock(datetime.now(UTC))), tmp_path) as world:
        yield world


async def test_the_office_certificate_syncs_a_granting_client_until_the_grant_is_revoked(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=world.sim.root_url, timeout=60) as http:
        seeded = await http.post("/_sim/seed", json={"buyerNip": CLIENT, "count": 12, "sellers": 4, "spreadDays": 5})
        assert seeded.status_code == 201, seeded.text

    certificate, private_key = pem_pair(OFFICE)
    r = await world.api.put(
        f"/offices/{OFFICE}/certificate",
        json={"certificate": certificate, "private_key": private_key},
        headers=world.headers(),
    )
    assert r.status_code == 201, r.text
    assert r.json()["identity"] is not None and "private_key" not in r.json()

    await world.grant_office()
    await world.emit(integration_event(IntegrationActivated, 3, "active"))

    async def verified() -> bool:
        access = await world.gateway.delegation.access(CLIENT)
        return access is not None and access.state is AccessState.VERIFIED

    await wait_until(verified, timeout=30, what="the grant verified")
    access = await world.gateway.delegation.access(CLIENT)
    assert access is not None and "InvoiceRead" in access.permissions

    async def all_synced() -> bool:
        return await world.stored_invoices() == 12

    await wait_until(all_synced, timeout=60, what="the client's purchase invoices")
    events = await world.access_events()
    assert [t for t, _ in events] == ["credential.access_verified"]
    assert events[0][1]["office_nip"] == OFFICE and events[0][1]["access_mode"] == "grant"

    await world.revoke_office()

    async def lost() -> bool:
        return [t for t, _ in await world.access_events()] == ["credential.access_verified", "credential.access_lost"]

    # KSeF tells nobody: the re-check every CHECK_INTERVAL_S notices it, or sooner the sync's refreshed token
    # meeting 403 missing-permissions, which asks for a check at once.
    await wait_until(lost, timeout=30, what="credential.access_lost")
    _, payload = (await world.access_events())[-1]
    assert payload["ksef_code"] == 415 and payload["office_nip"] == OFFICE
    body = (await world.api.get(f"/clients/{CLIENT}/delegation", headers=world.headers())).json()
    assert body["state"] == "lost" and body["ksef_code"] == 415 and body["lost_at"] is not None

    # Syncing stops: the scheduler no longer lists the client, and no session can be built for it.
    assert CLIENT not in [c.nip for c in await world.gateway.delegation.active_contexts()]
    with pytest.raises(NoCredential):
        await world.gateway.sessions.access_token(CLIENT)

    # The same answer again publishes nothing more.
    checked = await world.api.post(f"/clients/{CLIENT}/delegation/check", headers=world.headers())
    assert checked.status_code == 200 and checked.json()["state"] == "lost"
    assert len(await world.access_events()) == 2

    # The certificate's key is stored only as ciphertext and never shows up in answers or logs.
    key_body = "".join(private_key.strip().splitlines()[1:-1])
    rows = await world.scalar(select(office_certificate.c.secret_ciphertext, office_certificate.c.certificate_pem))
    assert len(rows) == 1 and key_body.encode() not in rows[0][0] and private_key.encode() not in rows[0][0]
    got = await world.api.get(f"/offices/{OFFICE}/certificate", headers=world.headers())
    assert got.status_code == 200 and key_body[:40] not in got.text
    assert key_body[:40] not in caplog.text and "PRIVATE KEY" not in caplog.text


async def test_revocation_of_the_integration_stops_delegation_and_older_events_change_nothing(world: World) -> None:
    certificate, private_key = pem_pair(OFFICE)
    r = await world.api.put(
        f"/offices/{OFFICE}/certificate",
        json={"certificate": certificate, "private_key": private_key},
        headers=world.headers(),
    )
    assert r.status_code == 201, r.text
    await world.grant_office()
    await world.emit(integration_event(IntegrationActivated, 2, "active"))

    async def verified() -> bool:
        access = await world.gateway.delegation.access(CLIENT)
        return access is not None and access.state is AccessState.VERIFIED

    await wait_until(verified, timeout=30, what="the grant verified")
    await world.emit(integration_event(IntegrationRevoked, 4, "revoked"))

    async def stopped() -> bool:
        access = await world.gateway.delegation.access(CLIENT)
        return access is not None and not access.active

    await wait_until(stopped, timeout=30, what="the delegation stopped")
    # A late, older activation (redelivered or reordered) does not start it again.
    await world.emit(integration_event(IntegrationActivated, 3, "active"))
    await world.emit(integration_event(IntegrationRevoked, 5, "revoked"))

    async def revision_five() -> bool:
        access = await world.gateway.delegation.access(CLIENT)
        return access is not None and access.revision == 5

    await wait_until(revision_five, timeout=30, what="the later event applied")
    access = await world.gateway.delegation.access(CLIENT)
    assert access is not None and not access.active
    assert CLIENT not in [c.nip for c in await world.gateway.delegation.active_contexts()]
    with pytest.raises(NoCredential):
        await world.gateway.sessions.access_token(CLIENT)


async def test_refusals_are_problem_documents(world: World) -> None:
    certificate, private_key = pem_pair(STRANGER)
    # A certificate of another subject holds nothing in the office's context: KSeF answers 415.
    r = await world.api.put(
        f"/offices/{OFFICE}/certificate",
        json={"certificate": certificate, "private_key": private_key},
        headers=world.headers(),
    )
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].endswith("/no-access-to-context") and r.json()["ksef_auth_status"] == 415
    assert private_key.splitlines()[1] not in r.text

    _, other_key = pem_pair(OFFICE)
    mismatch = await world.api.put(
        f"/offices/{OFFICE}/certificate",
        json={"certificate": certificate, "private_key": other_key},
        headers=world.headers(),
    )
    assert mismatch.status_code == 422 and mismatch.json()["type"].endswith("/private-key-mismatch")

    as_client = await world.api.put(
        f"/offices/{OFFICE}/certificate",
        json={"certificate": certificate, "private_key": private_key},
        headers=world.headers(org_kind="client"),
    )
    assert as_client.status_code == 403 and as_client.headers["content-type"].startswith("application/problem+json")

    bad_nip = await world.api.get("/offices/1234/certificate", headers=world.headers())
    assert bad_nip.status_code == 422 and bad_nip.json()["type"].endswith("/invalid-nip")
    missing = await world.api.get(f"/offices/{OFFICE}/certificate", headers=world.headers())
    assert missing.status_code == 404 and missing.json()["type"].endswith("/no-credential")
    unknown = await world.api.post(f"/clients/{CLIENT}/delegation/check", headers=world.headers())
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/no-delegation")
    not_ops = await world.api.put(f"/clients/{CLIENT}/delegation", json={"office_nip": OFFICE}, headers=world.headers())
    assert not_ops.status_code == 403

    # Without the client's grant the office certificate is refused in the client's context: lost, code 415.
    fine_cert, fine_key = pem_pair(OFFICE)
    assert (
        await world.api.put(
            f"/offices/{OFFICE}/certificate",
            json={"certificate": fine_cert, "private_key": fine_key},
            headers=world.headers(),
        )
    ).status_code == 201
    set_by_hand = await world.api.put(
        f"/clients/{CLIENT}/delegation", json={"office_nip": OFFICE}, headers=world.headers(perms=("ops",))
    )
    assert set_by_hand.status_code == 200, set_by_hand.text

    async def lost() -> bool:
        access = await world.gateway.delegation.access(CLIENT)
        return access is not None and access.state is AccessState.LOST

    await wait_until(lost, timeout=30, what="the missing grant noticed")
    events = await world.access_events()
    assert [t for t, _ in events] == ["credential.access_lost"] and events[0][1]["ksef_code"] == 415
