"""Revocation takes effect at once, across separate services over real PostgreSQL and real Kafka.

auth-svc (served on loopback: the others verify its JWTs against its JWKS), approval-svc, ksef-gateway and
buffer-svc, each on its own database. The office's token is issued once, before anything changes, and names no
clients: every service decides from its own projection of the integrations (``platform_common.client_access``),
fed by ``integration.changed`` from Kafka. A suspension closes the client, a resumption opens it again and a
revocation closes it for good, each for the very token already issued; the delay from the answer of approval-svc
to the first refusal by each service is printed.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy.engine import make_url

import approval_svc.demo
import approval_svc.main
import auth_svc.demo
import auth_svc.main
import buffer_svc.main
import ksef_gateway.main
from approval_svc.integrations.service import Office
from approval_svc.settings import ApprovalSettings
from auth_svc.demo import CLIENT_ACTIVE, DEMO_PASSWORD, OFFICE, OFFICE_ADMIN
from auth_svc.settings import AuthSettings
from buffer_svc.settings import BufferSettings
from ksef_gateway.settings import GatewaySettings, SyncSettings
from platform_common.app import create_service_app
from platform_common.auth.settings import AuthClientSettings
from platform_common.messaging.transport import KafkaTransport
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings
from platform_common.testing import time_until_refused, wait_until
from platform_common.testing.auth import loopback_socket, serve_on_loopback
from platform_common.testing.pg import temporary_database

CLIENT_NAME, CLIENT_NIP = CLIENT_ACTIVE
APPROVAL_URL = "http://approval.test"


def _isolated(definition: object, run: str) -> object:
    # A consumer group of this run's own: services of another run on the same broker must not take its events.
    return dataclasses.replace(definition, name=f"{definition.name}-{run}")  # type: ignore[attr-defined,type-var]


@pytest.fixture
def databases(pg_url: str) -> Iterator[dict[str, DatabaseSettings]]:
    """One database per service, as in a deployment (gateway and buffer-svc each hold a ``client_access``)."""
    admin = make_url(pg_url)
    with temporary_database(admin, "gateway") as gateway, temporary_database(admin, "buffer") as buffer:
        yield {
            "shared": DatabaseSettings(url=SecretStr(pg_url)),
            "gateway": DatabaseSettings(url=SecretStr(gateway)),
            "buffer": DatabaseSettings(url=SecretStr(buffer)),
        }


@pytest.mark.postgres
@pytest.mark.kafka
async def test_suspend_and_revoke_refuse_an_issued_token_in_every_service(
    databases: dict[str, DatabaseSettings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    _private_key, public_key = generate_keypair()
    run = uuid.uuid4().hex[:8]
    # New consumer groups start at the topics' end, and the test acts once they are there: the shared broker's
    # history (other tests' integrations) is not read first, which under load outlasted the waits below.
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_partitions=1, auto_offset_reset="latest")
    messaging = MessagingSettings(transport="kafka", relay_poll_interval_s=0.05)
    shared = databases["shared"]
    auth_settings = AuthSettings.model_validate(
        {"db": shared, "kafka": kafka, "messaging": messaging, "notify_public_key": public_key}
    )
    auth_app = create_service_app(_isolated(auth_svc.main.DEFINITION, run), auth_settings, migrate_on_start=True)  # type: ignore[arg-type]
    sock = loopback_socket()
    auth_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    verify = AuthClientSettings(jwks_url=f"{auth_url}/.well-known/jwks.json")
    approval_app = create_service_app(
        _isolated(approval_svc.main.DEFINITION, run),  # type: ignore[arg-type]
        ApprovalSettings(
            db=shared,
            kafka=kafka,
            messaging=messaging,
            notify_public_key=public_key,
            public_url=APPROVAL_URL,
            auth_api_url=auth_url,
            auth=verify,
        ),
        migrate_on_start=True,
    )
    gateway_app = create_service_app(
        _isolated(ksef_gateway.main.DEFINITION, run),  # type: ignore[arg-type]
        GatewaySettings(
            db=databases["gateway"],
            kafka=kafka,
            messaging=messaging,
            auth=verify,
            sync=SyncSettings(enabled=False),
            data_dir=tmp_path,
        ),
        migrate_on_start=True,
    )
    buffer_app = create_service_app(
        _isolated(buffer_svc.main.DEFINITION, run),  # type: ignore[arg-type]
        BufferSettings(db=databases["buffer"], kafka=kafka, messaging=messaging, auth=verify),
        migrate_on_start=True,
    )

    async with (
        LifespanManager(auth_app, startup_timeout=60),
        serve_on_loopback(auth_app, sock),
        LifespanManager(approval_app, startup_timeout=60),
        LifespanManager(gateway_app, startup_timeout=60),
        LifespanManager(buffer_app, startup_timeout=60),
        httpx.AsyncClient(base_url=auth_url, timeout=30) as auth,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=approval_app), base_url=APPROVAL_URL) as approval,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gateway") as gateway,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=buffer_app), base_url="http://buffer") as buffer,
    ):
        for app in (auth_app, approval_app, gateway_app, buffer_app):
            transport = app.state.runtime.transport
            assert isinstance(transport, KafkaTransport)
            await wait_until(transport.positioned, timeout=60, what="the consumers to join at the topics' end")
        demo = await auth_svc.demo.ensure_demo_data(auth_app.state.runtime)
        login = await auth.post("/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
        assert login.status_code == 200, login.text
        token = {"Authorization": f"Bearer {login.json()['access_token']}"}
        clients = (await auth.get(f"/organisations/{demo.office_id}/clients", headers=token)).json()
        client_org = next(c["client_id"] for c in clients if c["nip"] == CLIENT_NIP)
        services = {
            "ksef-gateway": (gateway, f"/clients/{CLIENT_NIP}/communication-log"),
            "buffer-svc": (buffer, f"/clients/{CLIENT_NIP}/whoami"),
            "auth-svc": (auth, f"/organisations/{client_org}"),
        }

        async def status(name: str) -> int:
            http, path = services[name]
            return (await http.get(path, headers=token)).status_code

        async def readable_everywhere() -> bool:
            return all([await status(name) == 200 for name in services])

        # Nothing is announced yet: the token alone opens the client in no service that serves its data.
        assert await status("ksef-gateway") == 404 and await status("buffer-svc") == 404
        office = Office(demo.office_id, *OFFICE)
        admin_id = demo.users[OFFICE_ADMIN]
        assert await approval_svc.demo.ensure_demo_active(
            approval_app.state.runtime, office, admin_id, CLIENT_NIP, CLIENT_NAME
        )
        await wait_until(readable_everywhere, timeout=60, what="integration.activated to open the client")
        (integration,) = (await approval.get(f"/offices/{demo.office_id}/integrations", headers=token)).json()
        url = f"/integrations/{integration['id']}"

        for change, expected in (("suspension", "suspended"), ("revocation", "revoked")):
            answered = await approval.post(f"{url}/{change}", headers=token)
            assert answered.status_code == 200 and answered.json()["state"] == expected, answered.text
            for name, refusal in (await time_until_refused(status, {n: n for n in services})).items():
                print(
                    f"{change} answered -> {name} refuses the same token (Kafka, PostgreSQL): request sent after "
                    f"{refusal.after_s * 1000:.0f} ms, {refusal.served_before} served before"
                )
            if change == "suspension":
                resumed = await approval.post(f"{url}/resumption", headers=token)
                assert resumed.status_code == 200 and resumed.json()["state"] == "active", resumed.text
                await wait_until(readable_everywhere, timeout=60, what="integration.resumed to reopen the client")
        # A revoked integration stays closed: the token is refused again later, not only once.
        assert [await status(name) for name in services] == [404, 404, 404]
