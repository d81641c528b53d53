"""The credential vault end to end: the gateway's API (real auth rules, TokenFactory tokens), its database (SQLite
and real PostgreSQL) and the KSeF simulator over real HTTP. KSeF state is set up the way a user would: tokens are
generated through ``POST /tokens`` after an XAdES login, grants through the TEST-only ``/testdata/permissions``."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretBytes, SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import create_async_engine

from ksef_gateway.db import credential
from ksef_gateway.ksef import CertificateCredential, KsefAuthFailed, KsefTokenCredential
from ksef_gateway.main import create_app
from ksef_gateway.sessions.service import NoCredential
from ksef_gateway.settings import GatewaySettings, KsefSettings, SyncSettings, VaultSettings
from ksef_gateway.testing import owner_key_and_certificate
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.auth import AuthOperation
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

CLIENT = "7777777702"  # the client company: the KSeF context
OFFICE = "5260250216"  # the accounting office (delegated model)
STRANGER = "1112223303"  # someone with no rights in the client's context
PASSWORD = "correct horse battery staple 2026"


@pytest.fixture
def running_sim(tmp_path: Path) -> Iterator[RunningSim]:
    def settings(port: int) -> SimSettings:
        return SimSettings(database_path=tmp_path / "sim.sqlite3", rate_limits=RateLimitMode.OFF, random_seed=5)

    with serve(settings) as running:
        yield running


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> str:
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


@dataclass
class World:
    api: httpx.AsyncClient
    gateway: Gateway
    sim: RunningSim
    tokens: TokenFactory
    db_url: str
    invalidated: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def headers(
        self, nips: list[str] | None = None, perms: tuple[str, ...] = ("ksef.credentials.manage",)
    ) -> dict[str, str]:
        token = self.tokens.mint(sub="user-1", perms=list(perms), nips=nips if nips is not None else [CLIENT])
        return {"Authorization": f"Bearer {token}"}

    async def put(self, body: dict[str, Any], nip: str = CLIENT) -> httpx.Response:
        return await self.api.put(f"/clients/{nip}/credential", json=body, headers=self.headers([nip]))

    async def get(self, nip: str = CLIENT) -> httpx.Response:
        return await self.api.get(f"/clients/{nip}/credential", headers=self.headers([nip]))

    # -- KSeF state, set up through the simulator's HTTP API -------------------------------------------------------

    async def owner_access_token(self, nip: str, subject_nip: str | None = None) -> str:
        """An XAdES-authenticated access token in the context of ``nip``: of its owner, or of ``subject_nip``
        (someone the context granted permissions, e.g. the office)."""
        key, cert = owner_key_and_certificate(subject_nip or nip, days=60)
        credential_ = CertificateCredential(pem(cert).encode(), SecretBytes(key_pem(key).encode()))
        session = await self.gateway.ksef.for_environment("sim").authenticate(nip, credential_)
        return session.access_token

    async def ksef_token(self, nip: str, permissions: list[str], *, subject_nip: str | None = None) -> tuple[str, str]:
        """A new KSeF token in the context of ``nip`` (of its owner, or of ``subject_nip``): (token, reference)."""
        access = await self.owner_access_token(nip, subject_nip)
        async with httpx.AsyncClient(base_url=self.sim.api_url) as http:
            r = await http.post(
                "/tokens",
                json={"permissions": permissions, "description": "ksef-hub vault test"},
                headers={"Authorization": f"Bearer {access}"},
            )
        assert r.status_code == 202, r.text
        body = r.json()
        self.secrets += [body["token"], body["token"].rsplit("|", 1)[1]]
        return body["token"], body["referenceNumber"]

    async def ksef_certificate(self, nip: str, key: ec.EllipticCurvePrivateKey) -> tuple[x509.Certificate, str, str]:
        """A KSeF authentication certificate (REFERENCE.md §17) enrolled by the owner of ``nip`` for ``key``:
        (certificate, serial number, the owner's access token, which may revoke it)."""
        access = await self.owner_access_token(nip)
        bearer = {"Authorization": f"Bearer {access}"}
        oids = {
            "commonName": NameOID.COMMON_NAME,
            "countryName": NameOID.COUNTRY_NAME,
            "organizationName": NameOID.ORGANIZATION_NAME,
            "serialNumber": NameOID.SERIAL_NUMBER,
            "givenName": NameOID.GIVEN_NAME,
            "surname": NameOID.SURNAME,
            "uniqueIdentifier": NameOID.X500_UNIQUE_IDENTIFIER,
            "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
        }
        async with httpx.AsyncClient(base_url=self.sim.api_url) as http:
            data = (await http.get("/certificates/enrollments/data", headers=bearer)).json()
            name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in data.items() if k in oids])
            csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
            enrolled = await http.post(
                "/certificates/enrollments",
                json={
                    "certificateName": "vault test",
                    "certificateType": "Authentication",
                    "csr": base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode(),
                },
                headers=bearer,
            )
            assert enrolled.status_code == 202, enrolled.text
            status = await http.get(f"/certificates/enrollments/{enrolled.json()['referenceNumber']}", headers=bearer)
            serial = status.json()["certificateSerialNumber"]
            retrieved = await http.post(
                "/certificates/retrieve", json={"certificateSerialNumbers": [serial]}, headers=bearer
            )
        der = base64.b64decode(retrieved.json()["certificates"][0]["certificate"])
        return x509.load_der_x509_certificate(der), serial, access

    async def revoke_ksef_token(self, nip: str, reference: str) -> None:
        access = await self.owner_access_token(nip)
        async with httpx.AsyncClient(base_url=self.sim.api_url) as http:
            r = await http.delete(f"/tokens/{reference}", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 204, r.text

    async def testdata(self, path: str, body: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.sim.api_url) as http:
            r = await http.post(path, json=body)
        assert r.status_code == 200, r.text

    async def grant(self, context: str, to_nip: str, permissions: list[str]) -> None:
        await self.testdata(
            "/testdata/permissions",
            {
                "contextIdentifier": {"type": "Nip", "value": context},
                "authorizedIdentifier": {"type": "Nip", "value": to_nip},
                "permissions": [{"permissionType": p, "description": "office access"} for p in permissions],
            },
        )

    async def revoke_grants(self, context: str, to_nip: str) -> None:
        await self.testdata(
            "/testdata/permissions/revoke",
            {
                "contextIdentifier": {"type": "Nip", "value": context},
                "authorizedIdentifier": {"type": "Nip", "value": to_nip},
            },
        )

    def certificate_body(
        self, nip: str, *, model: str = "client", scope: str = "read", password: str | None = None
    ) -> dict[str, Any]:
        key, cert = owner_key_and_certificate(nip, days=60)
        private = key_pem(key, password)
        self.secrets.append(key_pem(key))  # the unencrypted key must never show up either
        self.secrets.append(private)
        body: dict[str, Any] = {
            "kind": "certificate",
            "certificate": pem(cert),
            "private_key": private,
            "model": model,
            "scope": scope,
        }
        if password:
            body["private_key_password"] = password
            self.secrets.append(password)
        return body

    async def rows(self) -> list[dict[str, Any]]:
        engine = create_async_engine(self.db_url)
        try:
            async with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    conn = await conn.execution_options(schema_translate_map={"gateway": None})
                return [dict(r) for r in (await conn.execute(select(credential))).mappings().all()]
        finally:
            await engine.dispose()

    async def execute(self, statement: Any) -> None:
        engine = create_async_engine(self.db_url)
        try:
            async with engine.begin() as conn:
                if conn.dialect.name == "sqlite":
                    conn = await conn.execution_options(schema_translate_map={"gateway": None})
                await conn.execute(statement)
        finally:
            await engine.dispose()


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@asynccontextmanager
async def gateway_app(
    db_url: str, sim: RunningSim, tokens: TokenFactory, tmp_path: Path, vault: VaultSettings
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    settings = GatewaySettings(
        db=DatabaseSettings(url=SecretStr(db_url)),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
        ksef=KsefSettings(sim_base_url=sim.api_url, auth_poll_interval_s=0.02, max_retries=0),
        vault=vault,
        # The scheduler would authenticate on its own for registered contexts; these tests drive KSeF themselves.
        sync=SyncSettings(enabled=False),
        data_dir=tmp_path,
    )
    app = create_app(settings, migrate_on_start=True)
    authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = tokens.clock, tokens.transport()
    async with LifespanManager(app) as manager:
        await open_clients(app, CLIENT, OFFICE, STRANGER)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as api:
            yield api, Gateway.of(app.state.runtime)


@pytest.fixture
async def world(db_url: str, running_sim: RunningSim, tmp_path: Path) -> AsyncIterator[World]:
    tokens = TokenFactory(clock=FakeClock(datetime.now(UTC)))
    vault = VaultSettings(master_keys={"k1": SecretStr(master_key())})
    async with gateway_app(db_url, running_sim, tokens, tmp_path, vault) as (api, gateway):
        world = World(api=api, gateway=gateway, sim=running_sim, tokens=tokens, db_url=db_url)

        async def record(nip: str) -> None:
            world.invalidated.append(nip)

        gateway.vault.on_credential_changed(record)
        yield world


def assert_no_secret_in(world: World, *texts: str) -> None:
    assert world.secrets, "no secret was collected: the check would be vacuous"
    leaked = [s[:16] + "..." for s in world.secrets for text in texts if s and s in text]
    assert not leaked, leaked


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    assert caplog.records, "nothing was logged at all: the capture is not working"
    return "\n".join(
        [caplog.text]
        + [repr(r.args) for r in caplog.records]
        + [repr(r.msg) for r in caplog.records]
        + [repr(r.exc_info) for r in caplog.records if r.exc_info]
    )


async def test_a_ksef_token_registers_serves_sessions_and_is_never_shown(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, reference = await world.ksef_token(CLIENT, ["InvoiceRead", "InvoiceWrite"])

    r = await world.put({"kind": "ksef_token", "token": token, "scope": "read_send"})
    assert r.status_code == 201, r.text
    status = (await world.get()).json()
    assert status["status"] == "valid"
    assert status["kind"] == "ksef_token" and status["model"] == "client" and status["environment"] == "sim"
    assert {"InvoiceRead", "InvoiceWrite"} <= set(status["permissions_seen"])
    assert status["token_reference"] == reference
    assert status["last_successful_auth"] is not None and status["valid_until"] is None
    assert status["created_by"] == "user:user-1"

    # At rest: only ciphertext, bound to this row.
    (row,) = await world.rows()
    assert row["master_key_id"] == "k1"
    stored = bytes(row["secret_ciphertext"]) + bytes(row["wrapped_data_key"])
    assert token.encode() not in stored and token.rsplit("|", 1)[1].encode() not in stored
    assert_no_secret_in(world, repr(row))

    # The session manager authenticates with it.
    environment, served = await world.gateway.vault.credential_for(CLIENT)
    assert environment == "sim" and isinstance(served, KsefTokenCredential)
    assert served.token.get_secret_value() == token
    assert await world.gateway.sessions.access_token(CLIENT)
    assert [c.nip for c in await world.gateway.vault.active_contexts()] == [CLIENT]

    # Replacing it answers 200 and tells the session manager to drop the old sessions.
    second, _ = await world.ksef_token(CLIENT, ["InvoiceRead"])
    r2 = await world.put({"kind": "ksef_token", "token": second, "scope": "read"})
    assert r2.status_code == 200, r2.text
    assert world.invalidated == [CLIENT, CLIENT]
    (replaced,) = await world.rows()
    assert replaced["id"] == row["id"] and replaced["secret_ciphertext"] != row["secret_ciphertext"]

    assert_no_secret_in(world, r.text, r2.text, (await world.get()).text, log_text(caplog))


async def test_a_certificate_with_an_encrypted_key_registers_and_the_password_is_used_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = world.certificate_body(CLIENT, scope="read_send", password=PASSWORD)

    r = await world.put(body)
    assert r.status_code == 201, r.text
    status = r.json()
    assert status["status"] == "valid" and status["kind"] == "certificate"
    assert status["certificate"]["identity"] == f"Nip {CLIENT}"
    assert status["valid_until"] == status["certificate"]["not_after"]

    (row,) = await world.rows()
    everything = repr(row)
    assert PASSWORD not in everything and PASSWORD.encode() not in bytes(row["secret_ciphertext"])
    assert b"PRIVATE KEY" not in bytes(row["secret_ciphertext"])
    assert row["certificate_pem"] == body["certificate"]

    _environment, served = await world.gateway.vault.credential_for(CLIENT)
    assert isinstance(served, CertificateCredential)
    # What is kept is the key itself, unencrypted inside the envelope: the password is never needed again.
    serialization.load_pem_private_key(served.private_key_pem.get_secret_value(), password=None)
    assert await world.gateway.sessions.access_token(CLIENT)

    assert_no_secret_in(world, r.text, (await world.get()).text, log_text(caplog), everything)


async def test_wrong_token_wrong_context_and_missing_permission_are_told_apart(world: World) -> None:
    token, _ = await world.ksef_token(CLIENT, ["InvoiceRead"])
    reference, context, _secret = token.split("|")
    forged = f"{reference}|{context}|{'0' * 64}"

    r = await world.put({"kind": "ksef_token", "token": forged})
    assert r.status_code == 422 and r.json()["type"].endswith("/ksef-token-rejected"), r.text
    assert r.json()["ksef_auth_status"] == 450

    r = await world.put({"kind": "ksef_token", "token": "definitely not a token"})
    assert r.status_code == 422 and r.json()["type"].endswith("/ksef-token-malformed"), r.text

    # The token of one context offered for another.
    r = await world.put({"kind": "ksef_token", "token": token}, nip=OFFICE)
    assert r.status_code == 422 and r.json()["type"].endswith("/ksef-token-wrong-context"), r.text
    assert CLIENT in r.json()["detail"]

    # A certificate of someone without any right in the client's context: KSeF's 415.
    r = await world.put(world.certificate_body(STRANGER))
    assert r.status_code == 422 and r.json()["type"].endswith("/no-access-to-context"), r.text
    assert r.json()["ksef_auth_status"] == 415

    # Read-only token offered for reading and sending.
    r = await world.put({"kind": "ksef_token", "token": token, "scope": "read_send"})
    assert r.status_code == 422 and r.json()["type"].endswith("/missing-permission"), r.text
    assert r.json()["missing_permissions"] == ["InvoiceWrite"]
    assert "InvoiceRead" in r.json()["permissions_seen"]

    assert (await world.get()).status_code == 404
    assert await world.rows() == []
    assert world.invalidated == []


async def test_a_revoked_token_is_refused_and_a_stored_one_stops_being_used(world: World) -> None:
    revoked, reference = await world.ksef_token(CLIENT, ["InvoiceRead"])
    await world.revoke_ksef_token(CLIENT, reference)
    r = await world.put({"kind": "ksef_token", "token": revoked})
    assert r.status_code == 422 and r.json()["type"].endswith("/ksef-token-revoked"), r.text

    token, reference = await world.ksef_token(CLIENT, ["InvoiceRead"])
    assert (await world.put({"kind": "ksef_token", "token": token})).status_code == 201
    await world.revoke_ksef_token(CLIENT, reference)
    await world.gateway.sessions.invalidate(CLIENT)  # as if the cached session had run out
    with pytest.raises(KsefAuthFailed):
        await world.gateway.sessions.access_token(CLIENT)

    status = (await world.get()).json()
    assert status["status"] == "revoked"
    assert "450" in status["last_error"] and status["last_error_at"] is not None
    with pytest.raises(NoCredential, match="revoked"):
        await world.gateway.vault.credential_for(CLIENT)
    assert await world.gateway.vault.active_contexts() == []


async def test_delegated_office_certificate_works_after_a_grant_and_stops_after_the_revoke(world: World) -> None:
    body = world.certificate_body(OFFICE, model="delegated")
    r = await world.put(body)
    assert r.status_code == 422 and r.json()["type"].endswith("/no-access-to-context"), r.text
    assert "grant the office" in r.json()["detail"]

    await world.grant(CLIENT, OFFICE, ["InvoiceRead"])
    r = await world.put({**body, "scope": "read_send"})
    assert r.status_code == 422 and r.json()["missing_permissions"] == ["InvoiceWrite"], r.text
    r = await world.put(body)
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "delegated" and r.json()["permissions_seen"] == ["InvoiceRead"]
    assert await world.gateway.sessions.access_token(CLIENT)

    await world.revoke_grants(CLIENT, OFFICE)
    r = await world.put(body)
    assert r.status_code == 422 and r.json()["type"].endswith("/no-access-to-context"), r.text
    # The stored credential fails too once the session manager has to authenticate again.
    await world.gateway.sessions.invalidate(CLIENT)
    with pytest.raises(KsefAuthFailed):
        await world.gateway.sessions.access_token(CLIENT)
    status = (await world.get()).json()
    assert status["status"] == "invalid" and "415" in status["last_error"]
    assert await world.gateway.vault.active_contexts() == []


async def test_ksef_unreachable_is_a_503_with_a_retry_hint(
    db_url: str, running_sim: RunningSim, tmp_path: Path
) -> None:
    tokens = TokenFactory(clock=FakeClock(datetime.now(UTC)))
    with serve(lambda port: SimSettings(database_path=tmp_path / "gone.sqlite3")) as gone:
        pass  # started and stopped: its port now refuses connections
    async with gateway_app(db_url, gone, tokens, tmp_path, VaultSettings()) as (api, _gateway):
        world = World(api=api, gateway=_gateway, sim=running_sim, tokens=tokens, db_url=db_url)
        r = await world.put(world.certificate_body(CLIENT))
    assert r.status_code == 503, r.text
    assert r.json()["type"].endswith("/ksef-unavailable") and int(r.headers["retry-after"]) >= 1
    assert await world.rows() == []


async def test_rotation_rewraps_every_credential_and_the_old_key_can_retire(
    db_url: str, running_sim: RunningSim, tmp_path: Path
) -> None:
    tokens = TokenFactory(clock=FakeClock(datetime.now(UTC)))
    old, new = master_key(), master_key()
    async with gateway_app(
        db_url, running_sim, tokens, tmp_path, VaultSettings(master_keys={"old": SecretStr(old)})
    ) as (
        api,
        gateway,
    ):
        world = World(api=api, gateway=gateway, sim=running_sim, tokens=tokens, db_url=db_url)
        token, _ = await world.ksef_token(CLIENT, ["InvoiceRead"])
        assert (await world.put({"kind": "ksef_token", "token": token})).status_code == 201
        office_token, _ = await world.ksef_token(OFFICE, ["InvoiceRead"])
        assert (await world.put({"kind": "ksef_token", "token": office_token}, nip=OFFICE)).status_code == 201
        before = {r["context_nip"]: r for r in await world.rows()}

    both = VaultSettings(master_keys={"old": SecretStr(old), "new": SecretStr(new)}, active_key_id="new")
    async with gateway_app(db_url, running_sim, tokens, tmp_path, both) as (api, gateway):
        ops = {"Authorization": f"Bearer {tokens.mint(perms=['ops'], nips=[])}"}
        tenant = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.credentials.manage'], nips=['*'])}"}
        assert (await api.post("/ops/vault/rotate", headers=tenant)).status_code == 403
        state = (await api.get("/ops/vault", headers=ops)).json()
        assert state == {"active_key_id": "new", "configured_key_ids": ["new", "old"], "credentials_by_key": {"old": 2}}
        # Before the rotation reaches them, rows under the old key still decrypt.
        assert (await gateway.vault.credential_for(CLIENT))[1] == KsefTokenCredential(SecretStr(token))

        r = await api.post("/ops/vault/rotate", headers=ops)
        assert r.status_code == 200, r.text
        assert r.json()["rotated"] == 2 and r.json()["failed"] == [] and r.json()["credentials_by_key"] == {"new": 2}
        again = await api.post("/ops/vault/rotate", headers=ops)
        assert again.json()["rotated"] == 0

    after = {r["context_nip"]: r for r in await world.rows()}
    for nip, row in after.items():
        assert row["master_key_id"] == "new"
        assert row["secret_ciphertext"] == before[nip]["secret_ciphertext"]  # the secret was not re-encrypted
        assert row["wrapped_data_key"] != before[nip]["wrapped_data_key"]

    retired = VaultSettings(master_keys={"new": SecretStr(new)})
    async with gateway_app(db_url, running_sim, tokens, tmp_path, retired) as (_api, gateway):
        assert (await gateway.vault.credential_for(CLIENT))[1] == KsefTokenCredential(SecretStr(token))
        assert (await gateway.vault.credential_for(OFFICE))[1] == KsefTokenCredential(SecretStr(office_token))


async def test_a_ciphertext_copied_to_another_nip_does_not_decrypt(world: World) -> None:
    token, _ = await world.ksef_token(CLIENT, ["InvoiceRead"])
    office_token, _ = await world.ksef_token(OFFICE, ["InvoiceRead"])
    assert (await world.put({"kind": "ksef_token", "token": token})).status_code == 201
    assert (await world.put({"kind": "ksef_token", "token": office_token}, nip=OFFICE)).status_code == 201
    source = {r["context_nip"]: r for r in await world.rows()}[CLIENT]
    await world.execute(
        update(credential)
        .where(credential.c.context_nip == OFFICE)
        .values(
            secret_ciphertext=source["secret_ciphertext"],
            wrapped_data_key=source["wrapped_data_key"],
            master_key_id=source["master_key_id"],
        )
    )
    with pytest.raises(NoCredential, match="cannot be decrypted"):
        await world.gateway.vault.credential_for(OFFICE)
    assert (await world.gateway.vault.credential_for(CLIENT))[1] == KsefTokenCredential(SecretStr(token))


async def test_nip_checksum_body_shape_and_delete(world: World) -> None:
    bad = "7777777703"
    r = await world.api.get(f"/clients/{bad}/credential", headers=world.headers([bad]))
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-nip")

    secret = "leaky-" + uuid.uuid4().hex
    r = await world.put({"kind": "ksef_token", "token": secret, "unexpected": secret, "scope": "everything"})
    assert r.status_code == 422 and secret not in r.text

    token, _ = await world.ksef_token(CLIENT, ["InvoiceRead"])
    assert (await world.put({"kind": "ksef_token", "token": token})).status_code == 201
    r = await world.api.delete(f"/clients/{CLIENT}/credential", headers=world.headers())
    assert r.status_code == 204
    assert world.invalidated == [CLIENT, CLIENT]
    assert (await world.get()).status_code == 404
    assert (await world.api.delete(f"/clients/{CLIENT}/credential", headers=world.headers())).status_code == 404
    with pytest.raises(NoCredential):
        await world.gateway.vault.credential_for(CLIENT)


@pytest.mark.parametrize(
    ("perms", "nips", "status"),
    [((), [CLIENT], 403), (("ksef.credentials.manage",), [OFFICE], 404), (("ksef.read",), [CLIENT], 403)],
)
async def test_only_credential_managers_of_the_client(
    world: World, perms: tuple[str, ...], nips: list[str], status: int
) -> None:
    r = await world.api.get(f"/clients/{CLIENT}/credential", headers=world.headers(nips, perms))
    assert r.status_code == status


async def test_local_problems_are_answered_before_any_ksef_call(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = world.certificate_body(CLIENT, password=PASSWORD)
    wrong = "not the password"
    world.secrets.append(wrong)
    r = await world.put({**body, "private_key_password": wrong})
    assert r.status_code == 422 and r.json()["type"].endswith("/private-key-wrong-password"), r.text
    r2 = await world.put({k: v for k, v in body.items() if k != "private_key_password"})
    assert r2.status_code == 422 and r2.json()["type"].endswith("/private-key-password-required"), r2.text
    other = world.certificate_body(CLIENT)
    r3 = await world.put({**other, "certificate": body["certificate"]})
    assert r3.status_code == 422 and r3.json()["type"].endswith("/private-key-mismatch"), r3.text
    assert await world.rows() == []
    assert world.sim.sim.store.count(AuthOperation) == 0  # KSeF was never asked
    assert_no_secret_in(world, r.text, r2.text, r3.text, log_text(caplog))


# --- races, rate limits, delegated tokens and certificate errors (issue #5 follow-up) -----------------------------


async def test_two_registrations_of_one_nip_at_once_leave_one_credential_and_two_clear_answers(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first, first_reference = await world.ksef_token(CLIENT, ["InvoiceRead"])
    second, second_reference = await world.ksef_token(CLIENT, ["InvoiceRead"])
    vault = world.gateway.vault
    validate = vault._check_in_ksef
    # Both requests pass KSeF's check before either stores: the race is then decided in the database alone.
    validated = asyncio.Barrier(2)

    async def check_then_meet(*args: Any, **kwargs: Any) -> frozenset[str]:
        permissions = await validate(*args, **kwargs)
        await validated.wait()
        return permissions

    monkeypatch.setattr(vault, "_check_in_ksef", check_then_meet)

    caplog.set_level(logging.INFO, logger="ksef_gateway.vault.service")
    answers = await asyncio.gather(
        world.put({"kind": "ksef_token", "token": first}), world.put({"kind": "ksef_token", "token": second})
    )

    assert sorted(r.status_code for r in answers) in ([200, 201], [201, 409]), [a.text for a in answers]
    for answer, reference in zip(answers, (first_reference, second_reference), strict=True):
        if answer.status_code == 409:
            assert answer.json()["type"].endswith("/credential-conflict"), answer.text
        else:
            # Each answer describes the credential that request stored, not whatever the other one left.
            assert answer.json()["token_reference"] == reference, answer.text
    # Both really met in the database: one insert lost on the unique NIP and went on to replace the winner's row.
    assert "registered concurrently" in caplog.text
    (row,) = await world.rows()
    # The credential kept is the one whose answer came last in the database: the replacement (200), or the
    # registration (201) when the other request was refused (409).
    winner = next(a for a in answers if a.status_code == (200 if any(x.status_code == 200 for x in answers) else 201))
    kept = first if winner is answers[0] else second
    assert row["token_reference"] == kept.split("|", 1)[0]
    _environment, served = await vault.credential_for(CLIENT)
    assert served == KsefTokenCredential(SecretStr(kept))
    assert (await world.get()).json()["token_reference"] == row["token_reference"]
    assert_no_secret_in(world, *(a.text for a in answers))


async def test_a_429_from_ksef_during_validation_is_a_503_with_retry_after_and_stores_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token, _ = await world.ksef_token(CLIENT, ["InvoiceRead"])
    async with httpx.AsyncClient(base_url=world.sim.root_url) as http:
        forced = await http.post("/_sim/faults/force-429", json={"count": 1})
    assert forced.status_code == 200, forced.text
    before = world.sim.sim.limiter.forced_429s

    r = await world.put({"kind": "ksef_token", "token": token})

    assert world.sim.sim.limiter.forced_429s == before - 1  # KSeF really answered 429 to the validation
    assert r.status_code == 503, r.text
    problem = r.json()
    assert problem["type"].endswith("/ksef-unavailable") and "rate limiting" in problem["detail"]
    assert "nothing was stored" in problem["detail"]
    assert int(r.headers["retry-after"]) >= 1
    assert await world.rows() == [] and (await world.get()).status_code == 404
    assert world.invalidated == []
    assert_no_secret_in(world, r.text, log_text(caplog))

    # The 429 was about that moment, not the credential: the same token registers once KSeF lets us in again.
    again = await world.put({"kind": "ksef_token", "token": token})
    assert again.status_code == 201, again.text


async def test_the_offices_own_ksef_token_cannot_act_in_the_clients_context(world: World) -> None:
    """REFERENCE.md §3.2/§16: a KSeF token has its context built in, so the office's token (context = the office's
    NIP) never authenticates in the client's context, grant or not; the office must generate a token while
    authenticated (XAdES) in the client's context, or register its certificate, after the client's grant."""
    await world.grant(CLIENT, OFFICE, ["InvoiceRead"])
    office_token, _ = await world.ksef_token(OFFICE, ["InvoiceRead"])

    # What KSeF (as the simulator models it) says: the token is a bad token (450) in any other context.
    with pytest.raises(KsefAuthFailed) as refused:
        await world.gateway.ksef.for_environment("sim").authenticate(
            CLIENT, KsefTokenCredential(SecretStr(office_token))
        )
    assert refused.value.auth_status == 450

    r = await world.put({"kind": "ksef_token", "token": office_token, "model": "delegated"})
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith("/ksef-token-wrong-context") and problem["token_context_nip"] == OFFICE
    assert "generate" in problem["detail"] and f"context of NIP {CLIENT}" in problem["detail"]
    assert await world.rows() == []

    # The way that works: the office, authenticated in the client's context, generates a token there.
    delegated_token, _ = await world.ksef_token(CLIENT, ["InvoiceRead"], subject_nip=OFFICE)
    assert f"|nip-{CLIENT}|" in delegated_token
    r = await world.put({"kind": "ksef_token", "token": delegated_token, "model": "delegated"})
    assert r.status_code == 201, r.text
    assert r.json()["model"] == "delegated" and r.json()["permissions_seen"] == ["InvoiceRead"]
    assert await world.gateway.sessions.access_token(CLIENT)

    # Such a token carries no more than the office holds in the client's context right now (§16).
    await world.revoke_grants(CLIENT, OFFICE)
    r = await world.put({"kind": "ksef_token", "token": delegated_token, "model": "delegated"})
    assert r.status_code == 422 and r.json()["type"].endswith("/no-access-to-context"), r.text


async def test_a_revoked_ksef_certificate_is_a_specific_problem(world: World) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate, serial, owner = await world.ksef_certificate(CLIENT, key)
    body = {"kind": "certificate", "certificate": pem(certificate), "private_key": key_pem(key)}
    world.secrets.append(body["private_key"])
    assert (await world.put(body)).status_code == 201  # the KSeF certificate works while it is active

    async with httpx.AsyncClient(base_url=world.sim.api_url) as http:
        revoked = await http.post(
            f"/certificates/{serial}/revoke",
            json={"revocationReason": "KeyCompromise"},
            headers={"Authorization": f"Bearer {owner}"},
        )
    assert revoked.status_code == 204, revoked.text

    # Setup: KSeF's 460 "Certyfikat odwołany" becomes its own problem, and nothing replaces the stored row.
    r = await world.put(body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith("/certificate-revoked"), problem
    assert problem["ksef_auth_status"] == 460 and "odwołany" in problem["ksef_description"]
    assert "revoked" in problem["detail"] and "new certificate" in problem["detail"]
    assert_no_secret_in(world, r.text)

    # In use: the session manager's next authentication fails and the credential is marked revoked, not retried.
    await world.gateway.sessions.invalidate(CLIENT)
    with pytest.raises(KsefAuthFailed) as failed:
        await world.gateway.sessions.access_token(CLIENT)
    assert failed.value.auth_status == 460
    status = (await world.get()).json()
    assert status["status"] == "revoked" and "460" in status["last_error"]
    assert await world.gateway.vault.active_contexts() == []


async def test_a_certificate_ksef_considers_expired_is_a_460_problem(world: World) -> None:
    # Our clock says the certificate is valid; KSeF's (the simulator's, moved past notAfter) does not.
    body = world.certificate_body(CLIENT)
    async with httpx.AsyncClient(base_url=world.sim.root_url) as http:
        moved = await http.post("/_sim/clock/advance", json={"seconds": 61 * 24 * 3600})
    assert moved.status_code == 200, moved.text

    r = await world.put(body)

    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith("/certificate-rejected"), problem
    assert problem["ksef_auth_status"] == 460 and "Nieważny certyfikat" in problem["ksef_description"]
    assert await world.rows() == []
