"""Month approval across separate services over real PostgreSQL (a database each), real Kafka and a real SMTP
listener:

invoice.fetched (published to Kafka as the gateway does) → buffer-svc's entries → the client decides (buffer-svc's
``status.changed``) → approval-svc counts the month → the client approves → ``month.approved`` locks the month in
buffer-svc and notify-svc mails the office; the client unlocks and edits, approves again; an invoice of the month
arriving afterwards is kept, flagged and both sides are told; once the office imports, the month cannot be
unlocked. The client NIP is fresh for each run, so events other tests left on the shared broker count for nothing.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy.engine import make_url

import approval_svc.main
import buffer_svc.main
import notify_svc.main
from approval_svc.integrations.repository import IntegrationRepository
from approval_svc.integrations.service import Office
from approval_svc.settings import ApprovalSettings
from approval_svc.wiring import Approval
from buffer_svc.settings import BufferSettings
from notify_svc.settings import MailDeliverySettings, NotifySettings, SmtpSettings
from platform_common.app import create_service_app
from platform_common.contracts import InvoiceFetched
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.outbox import OutboundMessage
from platform_common.messaging.transport import KafkaTransport
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings
from platform_common.testing import wait_until
from platform_common.testing.auth import DEFAULT_OFFICE, TokenFactory
from platform_common.testing.events import invoice_fetched
from platform_common.testing.pg import temporary_database
from platform_common.testing.smtp import SmtpCatcher

OFFICE = Office(DEFAULT_OFFICE, "Biuro Rachunkowe E2E", "5260250216")
CLIENT_EMAIL, RETURN_EMAIL = "zarzad@klient.example.com", "ksiegowosc@biuro.example.com"
PERIOD = "2026-11"


def _fresh_nip() -> str:
    weights = (6, 5, 7, 2, 3, 4, 5, 6, 7)
    while True:
        digits = [random.randint(1, 9)] + [random.randint(0, 9) for _ in range(8)]
        check = sum(w * d for w, d in zip(weights, digits, strict=True)) % 11
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def _isolated(definition: object, run: str) -> object:
    return dataclasses.replace(definition, name=f"{definition.name}-{run}")  # type: ignore[attr-defined,type-var]


@pytest.fixture
def catcher() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as running:
        yield running


@pytest.fixture
def databases(pg_url: str) -> Iterator[dict[str, DatabaseSettings]]:
    admin = make_url(pg_url)
    with (
        temporary_database(admin, "approval") as approval,
        temporary_database(admin, "buffer") as buffer,
        temporary_database(admin, "notify") as notify,
    ):
        yield {
            name: DatabaseSettings(url=SecretStr(url))
            for name, url in (("approval", approval), ("buffer", buffer), ("notify", notify))
        }


@pytest.mark.postgres
@pytest.mark.kafka
async def test_a_month_approved_unlocked_late_and_imported_across_the_services(
    databases: dict[str, DatabaseSettings], kafka_bootstrap: str, catcher: SmtpCatcher
) -> None:
    run = uuid.uuid4().hex[:8]
    nip = _fresh_nip()
    # New consumer groups start at the end of the topics (and the test publishes only once they are there): what
    # other tests and earlier runs left on the broker is neither read nor waited for.
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_partitions=1, auto_offset_reset="latest")
    messaging = MessagingSettings(transport="kafka", relay_poll_interval_s=0.05)
    tokens = TokenFactory()
    _private, public = generate_keypair()
    approval_app = create_service_app(
        _isolated(approval_svc.main.DEFINITION, run),  # type: ignore[arg-type]
        ApprovalSettings(
            db=databases["approval"], kafka=kafka, messaging=messaging, auth=tokens.settings(), notify_public_key=public
        ),
        migrate_on_start=True,
    )
    buffer_app = create_service_app(
        _isolated(buffer_svc.main.DEFINITION, run),  # type: ignore[arg-type]
        BufferSettings(db=databases["buffer"], kafka=kafka, messaging=messaging, auth=tokens.settings()),
        migrate_on_start=True,
    )
    notify_app = create_service_app(
        _isolated(notify_svc.main.DEFINITION, run),  # type: ignore[arg-type]
        NotifySettings(
            db=databases["notify"],
            kafka=kafka,
            messaging=messaging,
            smtp=SmtpSettings(host="127.0.0.1", port=catcher.port, timeout_s=5),
            mail=MailDeliverySettings(poll_interval_s=0.2, retry_base_s=0.05, retry_max_s=0.2),
        ),
        migrate_on_start=True,
    )
    for app in (approval_app, buffer_app):
        app.state.authenticator.clock, app.state.authenticator.transport = tokens.clock, tokens.transport()
    client = {
        "Authorization": "Bearer "
        + tokens.mint(
            sub="owner-e2e",
            org=str(uuid.uuid4()),
            org_kind="client",
            perms=["buffer.read", "buffer.decide", "month.approve"],
            nips=[nip],
            ttl_s=3600,
        )
    }
    office = {
        "Authorization": "Bearer "
        + tokens.mint(sub="accountant-e2e", perms=["buffer.read", "buffer.import"], nips=["*"], ttl_s=3600)
    }
    gateway = KafkaTransport(kafka, client_id=f"e2e-gateway-{run}", topics=(InvoiceFetched.topic,))

    async def fetched(issued: date, gross: str) -> InvoiceFetched:
        """What the gateway publishes for one purchase invoice, keyed by the client's NIP."""
        event = invoice_fetched(nip, issued=issued, gross=gross)
        envelope = Envelope.wrap(event, producer="ksef-gateway", client_nip=nip)
        await gateway.publish([OutboundMessage(topic=event.topic, key=nip, value=envelope.to_bytes(), headers=())])
        return event

    async with (
        LifespanManager(approval_app, startup_timeout=60),
        LifespanManager(buffer_app, startup_timeout=60),
        LifespanManager(notify_app, startup_timeout=60),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=approval_app), base_url="http://approval") as approval,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=buffer_app), base_url="http://buffer") as buffer,
    ):
        await gateway.start()
        try:
            for app in (approval_app, buffer_app, notify_app):
                transport = app.state.runtime.transport
                assert isinstance(transport, KafkaTransport)
                await wait_until(transport.positioned, timeout=60, what="the consumers to join at the topics' end")
            runtime = approval_app.state.runtime
            assert await Approval.of(runtime).integrations.record_established(
                OFFICE, nip, "Klient E2E Sp. z o.o.", CLIENT_EMAIL, by="admin-e2e"
            )
            async with runtime.db.sessionmaker() as session, session.begin():
                repo = IntegrationRepository(session)
                row = await repo.of_pair(DEFAULT_OFFICE, nip)
                assert row is not None
                await repo.change(row.id, {"return_email": RETURN_EMAIL})

            invoices = [
                await fetched(date(2026, 11, day), gross) for day, gross in ((3, "123.00"), (9, "61.50"), (20, "12.30"))
            ]

            async def entries(count: int) -> list[dict[str, Any]] | None:
                page = await buffer.get(f"/clients/{nip}/purchases", headers=client)
                items = page.json()["items"] if page.status_code == 200 else []
                return items if len(items) == count else None

            listed = await wait_until(lambda: entries(3), timeout=60, what="buffer-svc to ingest invoice.fetched")
            ids = {e["ksef_number"]: e["id"] for e in listed}
            book, skip, undecided = (ids[i.ksef_number] for i in invoices)
            for entry_id, decision in ((book, "book"), (skip, "dont_book")):
                r = await buffer.patch(
                    f"/clients/{nip}/purchases/{entry_id}", json={"decision": decision}, headers=client
                )
                assert r.status_code == 200, r.text

            async def month(**expected: int) -> dict[str, Any] | None:
                r = await approval.get(f"/clients/{nip}/months/{PERIOD}", headers=client)
                body: dict[str, Any] = r.json()
                counts = body.get("counts", {})
                late = body.get("late_arrivals")
                if all((counts | {"late_arrivals": late}).get(k) == v for k, v in expected.items()):
                    return body
                return None

            await wait_until(lambda: month(entries=3, book=1, dont_book=1, unverified=1), timeout=60, what="counts")
            refused = await approval.post(f"/clients/{nip}/months/{PERIOD}/approve", headers=client)
            assert refused.status_code == 409 and refused.json()["type"].endswith("/unverified-invoices")

            r = await buffer.patch(f"/clients/{nip}/purchases/{undecided}", json={"decision": "book"}, headers=client)
            assert r.status_code == 200, r.text
            await wait_until(
                lambda: month(book=2, unverified=0), timeout=60, what="approval-svc to follow the decision"
            )
            approved = await approval.post(f"/clients/{nip}/months/{PERIOD}/approve", headers=client)
            assert approved.status_code == 200, approved.text

            async def client_edit_refused() -> bool:
                r = await buffer.patch(f"/clients/{nip}/purchases/{skip}", json={"description": "?"}, headers=client)
                return r.status_code == 409 and r.json()["type"].endswith("/month-approved")

            await wait_until(client_edit_refused, timeout=60, what="buffer-svc to lock the approved month")
            (approval_mail,) = await catcher.wait_for_mails(1, timeout=60)
            assert approval_mail.recipients == (RETURN_EMAIL,)
            assert "Klient E2E Sp. z o.o. zatwierdził miesiąc 2026-11" in approval_mail.message["Subject"]
            assert "Do zaksięgowania: 2 faktur(y). Nie księgować: 1." in approval_mail.body("plain")

            # Unlock: the buffer lets the client edit again; approve once more.
            unlocked = await approval.post(f"/clients/{nip}/months/{PERIOD}/unlock", headers=client)
            assert unlocked.status_code == 200, unlocked.text

            async def client_edit_allowed() -> bool:
                r = await buffer.patch(
                    f"/clients/{nip}/purchases/{skip}", json={"description": "Prywatne"}, headers=client
                )
                return r.status_code == 200

            await wait_until(client_edit_allowed, timeout=60, what="buffer-svc to follow month.unlocked")
            assert (await approval.post(f"/clients/{nip}/months/{PERIOD}/approve", headers=client)).status_code == 200
            await wait_until(client_edit_refused, timeout=60, what="buffer-svc to lock the month again")

            # A late invoice of the approved month: kept, flagged, both sides told.
            late = await fetched(date(2026, 11, 28), "246.00")
            listed = await wait_until(lambda: entries(4), timeout=60, what="the late invoice in the buffer")
            (late_entry,) = [e for e in listed if e["ksef_number"] == late.ksef_number]
            assert late_entry["late_arrival"] is True and late_entry["decision"] == "unverified"
            flagged = await wait_until(lambda: month(late_arrivals=1), timeout=60, what="the month flagged")
            assert flagged["state"] == "approved"
            mails = await catcher.wait_for_mails(5, timeout=60)  # approved, unlocked, approved, late x2
            late_mails = sorted(m.recipients[0] for m in mails if "Nowa faktura" in m.message["Subject"])
            assert late_mails == sorted([CLIENT_EMAIL, RETURN_EMAIL])

            # The office imports: from then on the month cannot be unlocked.
            imported = await buffer.post(
                f"/clients/{nip}/purchases/imports", json={"entry_ids": [book]}, headers=office
            )
            assert imported.status_code == 200, imported.text
            await wait_until(lambda: month(imported=1), timeout=60, what="approval-svc to follow the import")
            refused = await approval.post(f"/clients/{nip}/months/{PERIOD}/unlock", headers=client)
            assert refused.status_code == 409 and refused.json()["type"].endswith("/already-imported")
            assert len(catcher.mails) == 5
        finally:
            await gateway.stop()
