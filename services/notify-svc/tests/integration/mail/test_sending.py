"""notify-svc sends its mail to a real SMTP listener on loopback (aiosmtpd), over SQLite and PostgreSQL: the link
arrives opened, in the recipient's language; a refused consent reaches the office; a redelivered event sends nothing
twice; 4xx and an outage delay mail
and lose none; 5xx fails it for good with the server's reply in the delivery log."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from pydantic import SecretStr

from notify_svc.mail.repository import MailRepository
from notify_svc.main import DEFINITION
from notify_svc.settings import MailDeliverySettings, NotifySettings, SmtpSettings
from notify_svc.wiring import mail_sender
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.contracts.integrations import INTEGRATION_TOPIC, IntegrationRefused
from platform_common.contracts.months import MONTH_TOPIC, MonthApproved, MonthLateArrival, MonthUnlocked, Recipient
from platform_common.messaging.dispatch import Outcome
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.smtp import SmtpCatcher

TOKEN = "Zq3vN0s-very-secret-token"
PRIVATE, PUBLIC = generate_keypair()
LINK = f"https://hub.example/auth/invitations/accept?token={TOKEN}"


def _settings(db_url: str, port: int, **mail: Any) -> NotifySettings:
    return NotifySettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        seal_private_key=SecretStr(PRIVATE),
        smtp=SmtpSettings(host="127.0.0.1", port=port, sender="KSeF Hub <no-reply@hub.example>", timeout_s=5),
        # Retries a few milliseconds apart: the tests wait for what arrives, never for a fixed time.
        mail=MailDeliverySettings(**{"retry_base_s": 0.02, "retry_max_s": 0.1, "poll_interval_s": 0.5, **mail}),
    )


@pytest.fixture
def catcher() -> Iterator[SmtpCatcher]:
    with SmtpCatcher() as running:
        yield running


@pytest.fixture
async def runtime(db_url: str, catcher: SmtpCatcher) -> AsyncIterator[ServiceRuntime]:
    rt = ServiceRuntime(DEFINITION, _settings(db_url, catcher.port), migrate_on_start=True)
    await rt.start()
    yield rt
    await rt.stop()


def _invitation(*, language: Literal["pl", "en"] | None = None) -> Envelope:
    event = UserInvited(
        invitation_id=uuid.uuid4(),
        organisation_id=uuid.uuid4(),
        organisation_name="Biuro Rachunkowe <Kowalski> & Syn",
        email="anna@example.com",
        role="office_accountant",
        sealed_link=UserInvited.seal_link(PUBLIC, LINK),
        expires_at=datetime.now(UTC) + timedelta(days=7),
        language=language,
    )
    return Envelope.wrap(event, producer="auth-svc", tenant=str(event.organisation_id))


async def _deliver(rt: ServiceRuntime, envelope: Envelope, topic: str = UserInvited.topic) -> list[Outcome]:
    """One outcome per consumer of the topic (mail, and for public events the webhook fan-out too)."""
    return await rt.dispatcher.deliver(topic, envelope.key, envelope.to_bytes(), source="test")


async def _mail(rt: ServiceRuntime, mail_id: uuid.UUID) -> Any:
    async with rt.db.sessionmaker() as session:
        repository = MailRepository(session)
        return await repository.get(mail_id), await repository.attempts_of(mail_id)


async def test_an_invitation_arrives_with_its_link_opened_in_the_recipients_language(
    runtime: ServiceRuntime, catcher: SmtpCatcher
) -> None:
    envelope = _invitation(language="en")

    assert set(await _deliver(runtime, envelope)) == {Outcome.APPLIED}
    (mail,) = await catcher.wait_for_mails(1)

    assert mail.recipients == ("anna@example.com",)
    assert mail.message["Message-ID"] == f"<{envelope.id}@hub.example>"
    assert mail.message["Subject"] == "Your invitation to Biuro Rachunkowe <Kowalski> & Syn in KSeF Hub"
    assert LINK in mail.body("plain") and "role: accountant" in mail.body("plain")
    assert "Biuro Rachunkowe &lt;Kowalski&gt; &amp; Syn" in mail.body("html")
    # The server's 250 comes before the sender records it.
    record, attempts = await _wait_for_status(runtime, envelope.id, "sent")
    assert (record.status, record.attempts, record.sent_at is not None, record.last_error) == ("sent", 1, True, None)
    assert [(a.attempt, a.outcome, a.smtp_code) for a in attempts] == [(1, "sent", 250)]
    # What is stored stays sealed: the token is in the mail only.
    assert TOKEN not in str(record) and all(TOKEN not in str(a) for a in attempts)


async def test_polish_is_the_default_and_a_password_reset_is_sent_too(
    runtime: ServiceRuntime, catcher: SmtpCatcher
) -> None:
    invitation = _invitation()
    reset = PasswordResetRequested(
        user_id=uuid.uuid4(),
        email="jan@example.com",
        sealed_link=PasswordResetRequested.seal_link(PUBLIC, f"https://hub.example/r?token={TOKEN}"),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    await _deliver(runtime, invitation)
    await _deliver(runtime, Envelope.wrap(reset, producer="auth-svc"), PasswordResetRequested.topic)

    mails = {m.recipients[0]: m for m in await catcher.wait_for_mails(2)}

    assert mails["anna@example.com"].message["Subject"].startswith("Zaproszenie do Biuro Rachunkowe")
    assert "rola: księgowy" in mails["anna@example.com"].body("plain")
    assert mails["jan@example.com"].message["Subject"] == "Ustawienie nowego hasła w KSeF Hub"
    assert f"https://hub.example/r?token={TOKEN}" in mails["jan@example.com"].body("plain")


async def test_a_redelivered_event_sends_no_second_mail(runtime: ServiceRuntime, catcher: SmtpCatcher) -> None:
    envelope = _invitation()
    await _deliver(runtime, envelope)
    await catcher.wait_for_mails(1)

    assert set(await _deliver(runtime, envelope)) == {Outcome.DUPLICATE}
    # A pass of the sender now finds nothing due: the one mail is sent and stays sent.
    assert await mail_sender(runtime).send_due() == 0
    assert len(catcher.mails) == 1


def _refusal(language: Literal["pl", "en"] | None) -> Envelope:
    office_id = uuid.uuid4()
    event = IntegrationRefused(
        integration_id=uuid.uuid4(),
        revision=2,
        state="refused",
        office_id=office_id,
        office_nip="5260250216",
        office_name="Biuro <Kowalski>",
        client_nip="7777777702",
        client_name="Piekarnia Kowalski",
        changed_at=datetime(2026, 12, 6, 9, 30, tzinfo=UTC),
        changed_by_side="client",
        changed_by="link:zarzad@piekarnia.example",
        return_email="biuro@kowalski.example",
        return_language=language,
    )
    return Envelope.wrap(event, producer="approval-svc", client_nip=event.client_nip, tenant=str(office_id))


async def test_a_refused_consent_is_reported_to_the_office_once_in_its_language(
    runtime: ServiceRuntime, catcher: SmtpCatcher
) -> None:
    english, polish = _refusal("en"), _refusal(None)

    assert set(await _deliver(runtime, english, INTEGRATION_TOPIC)) == {Outcome.APPLIED}
    assert set(await _deliver(runtime, polish, INTEGRATION_TOPIC)) == {Outcome.APPLIED}
    mails = {m.message["Message-ID"]: m for m in await catcher.wait_for_mails(2)}

    mail = mails[f"<{english.id}@hub.example>"]
    assert mail.recipients == ("biuro@kowalski.example",)
    assert mail.message["Subject"] == "Client NIP 7777777702 refused consent to the integration"
    # The moment in Warsaw time (UTC+1 in December), who refused, and what the office can do about it.
    text = mail.body("plain")
    assert "Piekarnia Kowalski (NIP 7777777702) refused consent" in text and "2026-12-06 10:30" in text
    assert f"integration {english.payload['integration_id']}" in text and "renew the request" in text
    assert "Biuro &lt;Kowalski&gt;" in mail.body("html")
    assert mails[f"<{polish.id}@hub.example>"].message["Subject"] == "Klient NIP 7777777702 odmówił zgody na integrację"
    record, _ = await _wait_for_status(runtime, english.id, "sent")
    assert (record.kind, record.sealed_link, record.expires_at) == ("consent_refused", None, None)

    assert set(await _deliver(runtime, english, INTEGRATION_TOPIC)) == {Outcome.DUPLICATE}
    assert await mail_sender(runtime).send_due() == 0
    assert len(catcher.mails) == 2


def _month_event(kind: str) -> Envelope:
    office = Recipient(email="biuro@kowalski.example", language="en", side="office", office_name="Biuro <Kowalski>")
    client = Recipient(email="zarzad@piekarnia.example", side="client", office_name="Biuro <Kowalski>")
    at = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    event: MonthApproved | MonthUnlocked | MonthLateArrival
    common = {"client_nip": "7777777702", "period": "2026-11", "client_name": "Piekarnia Kowalski"}
    if kind == "approved":
        event = MonthApproved(
            **common,
            approved_by="owner",
            approved_at=at,
            book_count=12,
            dont_book_count=3,
            revision=1,
            recipients=(office,),
        )
    elif kind == "unlocked":
        event = MonthUnlocked(**common, revision=2, unlocked_by="owner", unlocked_at=at, recipients=(office,))
    else:
        event = MonthLateArrival(
            **common,
            ksef_number="5213000001-20261128-00000000000A-0A",
            late_arrivals=2,
            arrived_at=at,
            recipients=(office, client),
        )
    return Envelope.wrap(event, producer="approval-svc", client_nip="7777777702")


async def test_a_months_changes_reach_the_people_each_event_names_once(
    runtime: ServiceRuntime, catcher: SmtpCatcher
) -> None:
    approved, unlocked, late = (_month_event(k) for k in ("approved", "unlocked", "late"))
    for envelope in (approved, unlocked, late):
        assert set(await _deliver(runtime, envelope, MONTH_TOPIC)) == {Outcome.APPLIED}
    mails = await catcher.wait_for_mails(4)
    by_subject = {m.message["Subject"]: m for m in mails}
    assert set(by_subject) == {
        "Piekarnia Kowalski approved 2026-11: invoices ready for booking",
        "Piekarnia Kowalski unlocked 2026-11",
        "A new invoice in the approved month 2026-11 (Piekarnia Kowalski)",
        "Nowa faktura w zatwierdzonym miesiącu 2026-11 (Piekarnia Kowalski)",
    }
    approval = by_subject["Piekarnia Kowalski approved 2026-11: invoices ready for booking"]
    assert approval.recipients == ("biuro@kowalski.example",)
    text = approval.body("plain")
    assert "To book: 12 invoice(s). Not to book: 3." in text and "2026-12-06 10:30" in text
    to_client = by_subject["Nowa faktura w zatwierdzonym miesiącu 2026-11 (Piekarnia Kowalski)"]
    assert to_client.recipients == ("zarzad@piekarnia.example",)
    assert "5213000001-20261128-00000000000A-0A" in to_client.body("plain") and "„Księguj”" in to_client.body("plain")
    to_office = by_subject["A new invoice in the approved month 2026-11 (Piekarnia Kowalski)"]
    assert "override the decision" in to_office.body("plain")
    # One event, two people: two mails with ids of their own, never the event's twice.
    assert to_client.message["Message-ID"] != to_office.message["Message-ID"]

    assert set(await _deliver(runtime, late, MONTH_TOPIC)) == {Outcome.DUPLICATE}
    assert await mail_sender(runtime).send_due() == 0
    assert len(catcher.mails) == 4


async def test_a_temporary_refusal_is_retried_until_the_server_accepts(
    runtime: ServiceRuntime, catcher: SmtpCatcher
) -> None:
    catcher.fail_next("451 4.3.0 Try again later", "421 4.7.0 Too busy")
    envelope = _invitation()

    await _deliver(runtime, envelope)
    (mail,) = await catcher.wait_for_mails(1)

    assert LINK in mail.body("plain")
    _, attempts = await _wait_for_status(runtime, envelope.id, "sent")
    assert [(a.outcome, a.smtp_code) for a in attempts] == [("retry", 451), ("retry", 421), ("sent", 250)]
    assert "Try again later" in (attempts[0].detail or "")


async def test_a_permanent_refusal_fails_the_mail_with_the_servers_reply(
    runtime: ServiceRuntime, catcher: SmtpCatcher
) -> None:
    catcher.fail_next("550 5.1.1 No such user here")
    envelope = _invitation()

    await _deliver(runtime, envelope)
    await catcher.wait_for_refusals(1)
    record, attempts = await _wait_for_status(runtime, envelope.id, "failed")

    assert [(a.outcome, a.smtp_code) for a in attempts] == [("failed", 550)]
    assert "No such user here" in (record.last_error or "")
    assert await mail_sender(runtime).send_due() == 0  # never tried again
    assert catcher.mails == []


async def test_an_smtp_outage_delays_mail_and_loses_none(db_url: str) -> None:
    # The port is bound but not listening, so every connection is refused; then the very socket starts serving.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    rt = ServiceRuntime(DEFINITION, _settings(db_url, sock.getsockname()[1]), migrate_on_start=True)
    await rt.start()
    try:
        envelopes = [_invitation() for _ in range(3)]
        for envelope in envelopes:
            await _deliver(rt, envelope)
        for envelope in envelopes:
            record, attempts = await _wait_for_attempts(rt, envelope.id, 2)
            assert record.status == "pending"
            assert {(a.outcome, a.smtp_code) for a in attempts} == {("retry", None)}
        with SmtpCatcher(sock=sock) as catcher:
            mails = await catcher.wait_for_mails(3)
            assert sorted(m.message["Message-ID"] for m in mails) == sorted(f"<{e.id}@hub.example>" for e in envelopes)
            for envelope in envelopes:
                await _wait_for_status(rt, envelope.id, "sent")
    finally:
        await rt.stop()


async def _wait_for_status(rt: ServiceRuntime, mail_id: uuid.UUID, status: str) -> Any:
    return await _wait_until(rt, mail_id, lambda record, _attempts: record.status == status)


async def _wait_for_attempts(rt: ServiceRuntime, mail_id: uuid.UUID, count: int) -> Any:
    return await _wait_until(rt, mail_id, lambda _record, attempts: len(attempts) >= count)


async def _wait_until(rt: ServiceRuntime, mail_id: uuid.UUID, condition: Any) -> Any:
    """Reads the mail after each attempt the sender ends (the count is taken before the read, so an attempt ending
    in between is not missed)."""
    sender = mail_sender(rt)
    while True:
        ended = sender.attempts_ended
        record, attempts = await _mail(rt, mail_id)
        if record is not None and condition(record, attempts):
            return record, attempts
        await sender.wait_for_attempt(ended, timeout=30)
