"""The consent handshake across separate services over real PostgreSQL, real Kafka and a real SMTP listener:

approval-svc (its own app) asks auth-svc (served on loopback: approval-svc verifies JWTs against its JWKS and
reads the office there) for the office, publishes ``integration.changed`` through its outbox to Kafka; notify-svc
consumes it and mails the consent link over SMTP; the client consents on the page; the code mail arrives; a wrong
code is refused, the right one activates; auth-svc consumes the lifecycle and the relation turns active; the
gateway (its own database, its client-access projection fed from Kafka) accepts the client's KSeF token from the
office, syncs the client from the simulator and serves its invoices to the token the office held all along, until
the revocation closes them again. A redelivered event sends no second mail.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import make_url

import approval_svc.main
import auth_svc.demo
import auth_svc.main
import ksef_gateway.main
import notify_svc.main
from approval_svc.settings import ApprovalSettings
from auth_svc.demo import CLIENT_PENDING, DEMO_PASSWORD, OFFICE_ADMIN
from auth_svc.settings import AuthSettings
from ksef_gateway.settings import GatewaySettings, KsefSettings, SyncSettings, VaultSettings
from ksef_gateway.testing import owner_certificate
from ksef_gateway.wiring import Gateway
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import RunningSim, serve
from notify_svc.settings import MailDeliverySettings, NotifySettings, SmtpSettings
from platform_common.app import create_service_app
from platform_common.auth.settings import AuthClientSettings
from platform_common.contracts.integrations import INTEGRATION_TOPIC
from platform_common.messaging.dispatch import Outcome
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.transport import KafkaTransport
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings
from platform_common.testing import wait_until
from platform_common.testing.auth import loopback_socket, serve_on_loopback
from platform_common.testing.pg import temporary_database
from platform_common.testing.smtp import SmtpCatcher

CLIENT_NAME, CLIENT_NIP = CLIENT_PENDING
CLIENT_EMAIL = "zarzad@hurtownia.example.com"
RETURN_EMAIL = "kody@biuro.example.com"
APPROVAL_URL = "http://approval.test"
CODE = re.compile(r"\b([A-HJ-NP-Z2-9]{5}-[A-HJ-NP-Z2-9]{5})\b")
INVOICES = 6
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def catcher() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as running:
        yield running


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)

    def settings(_port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            rate_limits=RateLimitMode.OFF,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=13,
        )

    with serve(settings) as running:
        yield running


@pytest.fixture
def gateway_db(pg_url: str) -> Iterator[str]:
    # Its own database, as in a deployment.
    with temporary_database(make_url(pg_url), "gateway") as url:
        yield url


def _isolated(definition: object, run: str) -> object:
    # A consumer group of this run's own: services of another run on the same broker must not take its events.
    return dataclasses.replace(definition, name=f"{definition.name}-{run}")  # type: ignore[attr-defined,type-var]


@pytest.mark.postgres
@pytest.mark.kafka
async def test_handshake_over_kafka_postgres_and_smtp(
    pg_url: str, kafka_bootstrap: str, catcher: SmtpCatcher, sim: RunningSim, gateway_db: str, tmp_path: Path
) -> None:
    private_key, public_key = generate_keypair()
    run = uuid.uuid4().hex[:8]
    # New consumer groups start at the end of the topics, and the test acts only once they are there: what other
    # tests left on the shared broker (month events, integrations of other clients) is neither read nor mailed.
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_partitions=1, auto_offset_reset="latest")
    messaging = MessagingSettings(transport="kafka", relay_poll_interval_s=0.05)
    db = DatabaseSettings(url=SecretStr(pg_url))
    auth_settings = AuthSettings.model_validate(
        {"db": db, "kafka": kafka, "messaging": messaging, "notify_public_key": public_key}
    )
    auth_app = create_service_app(_isolated(auth_svc.main.DEFINITION, run), auth_settings, migrate_on_start=True)  # type: ignore[arg-type]
    sock = loopback_socket()
    auth_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    approval_settings = ApprovalSettings(
        db=db,
        kafka=kafka,
        messaging=messaging,
        notify_public_key=public_key,
        public_url=APPROVAL_URL,
        auth_api_url=auth_url,
        auth=AuthClientSettings(jwks_url=f"{auth_url}/.well-known/jwks.json"),
    )
    approval_app = create_service_app(
        _isolated(approval_svc.main.DEFINITION, run),  # type: ignore[arg-type]
        approval_settings,
        migrate_on_start=True,
    )
    notify_settings = NotifySettings(
        db=db,
        kafka=kafka,
        messaging=messaging,
        seal_private_key=SecretStr(private_key),
        smtp=SmtpSettings(host="127.0.0.1", port=catcher.port, timeout_s=5),
        mail=MailDeliverySettings(poll_interval_s=0.2, retry_base_s=0.05, retry_max_s=0.2),
    )
    notify_app = create_service_app(_isolated(notify_svc.main.DEFINITION, run), notify_settings, migrate_on_start=True)  # type: ignore[arg-type]
    gateway_settings = GatewaySettings(
        db=DatabaseSettings(url=SecretStr(gateway_db)),
        kafka=kafka,
        messaging=messaging,
        auth=AuthClientSettings(jwks_url=f"{auth_url}/.well-known/jwks.json"),
        ksef=KsefSettings(sim_base_url=sim.api_url, auth_poll_interval_s=0.02, replica_id=f"e2e-{run}"),
        vault=VaultSettings(master_keys={"k1": SecretStr(base64.b64encode(os.urandom(32)).decode())}),
        sync=SyncSettings(
            tick_interval_s=0.1, export_poll_interval_s=0.05, export_poll_max_interval_s=0.1, backfill_months=2
        ),
        data_dir=tmp_path,
    )
    gateway_app = create_service_app(
        _isolated(ksef_gateway.main.DEFINITION, run),  # type: ignore[arg-type]
        gateway_settings,
        migrate_on_start=True,
    )
    async with httpx.AsyncClient(base_url=sim.root_url, timeout=30) as operator:
        seeded = await operator.post(
            "/_sim/seed", json={"buyerNip": CLIENT_NIP, "count": INVOICES, "sellers": 2, "spreadDays": 10}
        )
        assert seeded.status_code == 201, seeded.text

    async with (
        LifespanManager(auth_app, startup_timeout=60),
        serve_on_loopback(auth_app, sock),
        LifespanManager(approval_app, startup_timeout=60),
        LifespanManager(notify_app, startup_timeout=60),
        LifespanManager(gateway_app, startup_timeout=60),
        httpx.AsyncClient(base_url=auth_url, timeout=30) as auth,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=approval_app), base_url=APPROVAL_URL) as approval,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gateway") as gateway,
    ):
        for app in (auth_app, approval_app, notify_app, gateway_app):
            transport = app.state.runtime.transport
            assert isinstance(transport, KafkaTransport)
            await wait_until(transport.positioned, timeout=60, what="the consumers to join at the topics' end")
        # Without the pending client's demo owner: nobody of the client company is on the platform yet.
        await auth_svc.demo.ensure_demo_data(auth_app.state.runtime, pending_client_owner=False)
        login = await auth.post("/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        office_id = (await auth.get("/me", headers=admin)).json()["context"]["org"]

        # An SMTP outage at first: the consent mail is delayed, not lost.
        catcher.fail_next("421 4.3.2 Service not available, closing channel")
        asked = await approval.post(
            f"/offices/{office_id}/integrations",
            json={
                "client_nip": CLIENT_NIP,
                "client_name": CLIENT_NAME,
                "client_email": CLIENT_EMAIL,
                "return_email": RETURN_EMAIL,
                "client_language": "en",
            },
            headers=admin,
        )
        assert asked.status_code == 201, asked.text
        integration = asked.json()
        assert integration["office_nip"] == auth_svc.demo.OFFICE[1], "the office's NIP as auth-svc knows it"

        (request_mail,) = await catcher.wait_for_mails(1, timeout=60)
        assert catcher.refused == 1 and request_mail.recipients == (CLIENT_EMAIL,)
        assert request_mail.message["Content-Language"] == "en"
        link = re.search(rf"{APPROVAL_URL}/consent\?token=\S+", request_mail.body("plain"))
        assert link, request_mail.body("plain")
        page = await approval.get(link.group(0))
        assert page.status_code == 200 and "Request for consent" in page.text
        fields = dict(re.findall(r'name="(token|csrf)" value="([^"]+)"', page.text))
        decided = await approval.post(
            "/consent", data=fields | {"decision": "agree", "access_mode": "token", "lang": "en"}
        )
        assert decided.status_code == 200 and "generate a KSeF token" in decided.text, decided.text

        # The code to the office; and, since nobody of the client company is on the platform yet, an invitation to
        # the person who consented to become its owner (in the language the office chose for the client).
        mails = await catcher.wait_for_mails(3, timeout=60)
        (code_mail,) = [m for m in mails if m.recipients == (RETURN_EMAIL,)]
        (invitation,) = [m for m in mails[1:] if m.recipients == (CLIENT_EMAIL,)]
        assert "/invitations/accept?token=" in invitation.body("plain")
        assert invitation.message["Content-Language"] == "en" and CLIENT_NAME in invitation.message["Subject"]
        found = CODE.search(code_mail.body("plain"))
        assert found
        url = f"/integrations/{integration['id']}/activation"
        wrong = await approval.post(url, json={"code": "AAAAA-AAAA2"}, headers=admin)
        assert wrong.status_code == 422, wrong.text
        activated = await approval.post(url, json={"code": found.group(1)}, headers=admin)
        assert activated.status_code == 200 and activated.json()["state"] == "active", activated.text

        async def relation(state: str) -> bool:
            clients = (await auth.get(f"/organisations/{office_id}/clients", headers=admin)).json()
            return any(c["nip"] == CLIENT_NIP and c["state"] == state for c in clients)

        await wait_until(lambda: relation("active"), timeout=60, what="auth-svc to follow integration.activated")

        # The gateway opens the client once it has consumed integration.activated; the office hands it the KSeF
        # token the client generated (in its own context), with the token it logged in with before the consent.
        async def gateway_open() -> bool:
            return (await gateway.get(f"/clients/{CLIENT_NIP}/communication-log", headers=admin)).status_code == 200

        await wait_until(gateway_open, timeout=60, what="the gateway to follow integration.activated")
        ksef_sim = Gateway.of(gateway_app.state.runtime).ksef.for_environment("sim")
        owner = await ksef_sim.authenticate(CLIENT_NIP, owner_certificate(CLIENT_NIP))
        async with httpx.AsyncClient(base_url=sim.api_url) as ksef:
            generated = await ksef.post(
                "/tokens",
                json={"permissions": ["InvoiceRead"], "description": "KSeF Hub"},
                headers={"Authorization": f"Bearer {owner.access_token}"},
            )
        assert generated.status_code == 202, generated.text
        registered = await gateway.put(
            f"/clients/{CLIENT_NIP}/credential",
            json={"kind": "ksef_token", "token": generated.json()["token"]},
            headers=admin,
        )
        assert registered.status_code == 201, registered.text

        async def invoices() -> list[object] | None:
            page = await gateway.get(f"/clients/{CLIENT_NIP}/invoices", headers=admin)
            items = page.json()["items"] if page.status_code == 200 else []
            return items if len(items) == INVOICES else None

        await wait_until(invoices, timeout=60, interval=0.1, what="the gateway to sync the client's invoices")

        revoked = await approval.post(f"/integrations/{integration['id']}/revocation", headers=admin)
        assert revoked.status_code == 200

        async def gateway_closed() -> bool:
            return (await gateway.get(f"/clients/{CLIENT_NIP}/invoices", headers=admin)).status_code == 404

        await wait_until(gateway_closed, timeout=60, what="the gateway to follow integration.revoked")
        await wait_until(lambda: relation("inactive"), timeout=60, what="auth-svc to follow integration.revoked")

        # Redelivering the consent event to notify-svc sends nothing twice.
        approval_rt: ServiceRuntime = approval_app.state.runtime
        outbox = approval_rt.definition.tables.outbox
        async with approval_rt.db.sessionmaker() as session:
            first = (await session.execute(select(outbox.c.payload).order_by(outbox.c.seq).limit(1))).scalar_one()
        notify_rt: ServiceRuntime = notify_app.state.runtime
        envelope = Envelope.model_validate_json(first)
        outcomes = await notify_rt.dispatcher.deliver(INTEGRATION_TOPIC, envelope.key, first.encode(), source="test")
        # One outcome per notify-svc consumer of the topic (mail, client access, webhook fan-out).
        assert outcomes and set(outcomes) == {Outcome.DUPLICATE}
        assert len(catcher.mails) == 3
