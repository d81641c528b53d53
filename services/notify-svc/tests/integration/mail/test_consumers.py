"""notify-svc's mail consumers on the real runtime (inbox, dead letters, migrations) over SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from notify_svc.db import mail_message
from notify_svc.main import DEFINITION
from notify_svc.settings import MailDeliverySettings, NotifySettings
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.messaging.dispatch import Outcome
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, MessagingSettings

TOKEN = "Zq3vN0s-very-secret-token"
PRIVATE, PUBLIC = generate_keypair()


@pytest.fixture
async def runtime(db_url: str) -> AsyncIterator[ServiceRuntime]:
    settings = NotifySettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        seal_private_key=SecretStr(PRIVATE),
        # What is queued, not what is sent (test_sending.py): no sender, so no mail leaves for any port.
        mail=MailDeliverySettings(enabled=False),
    )
    rt = ServiceRuntime(DEFINITION, settings, migrate_on_start=True)
    await rt.start()
    yield rt
    await rt.stop()


def _invitation(public_key: str = PUBLIC) -> Envelope:
    event = UserInvited(
        invitation_id=uuid.uuid4(),
        organisation_id=uuid.uuid4(),
        organisation_name="Biuro Rachunkowe Sp. z o.o.",
        email="anna@example.com",
        role="office_staff",
        sealed_link=UserInvited.seal_link(public_key, f"https://hub.example/auth/invitations/accept?token={TOKEN}"),
        expires_at=datetime.now(UTC) + timedelta(days=7),
    )
    return Envelope.wrap(event, producer="auth-svc", tenant=str(event.organisation_id))


async def _deliver(rt: ServiceRuntime, envelope: Envelope, topic: str) -> list[Outcome]:
    return await rt.dispatcher.deliver(topic, envelope.key, envelope.to_bytes(), source="test")


async def _rows(rt: ServiceRuntime, table: Any) -> list[Any]:
    async with rt.db.sessionmaker() as session:
        return list((await session.execute(select(table))).all())


class TestMailConsumers:
    async def test_an_invitation_becomes_one_pending_mail_without_its_link_in_the_clear(
        self, runtime: ServiceRuntime
    ) -> None:
        envelope = _invitation()

        assert await _deliver(runtime, envelope, UserInvited.topic) == [Outcome.APPLIED]
        assert await _deliver(runtime, envelope, UserInvited.topic) == [Outcome.DUPLICATE]

        (row,) = await _rows(runtime, mail_message)
        assert (row.id, row.kind, row.status, row.recipient) == (
            envelope.id,
            "invitation",
            "pending",
            "anna@example.com",
        )
        assert row.sealed_link == envelope.payload["sealed_link"]
        assert all(TOKEN not in str(value) for value in row)

    async def test_a_password_reset_becomes_a_pending_mail(self, runtime: ServiceRuntime) -> None:
        user_id = uuid.uuid4()
        event = PasswordResetRequested(
            user_id=user_id,
            email="jan@example.com",
            sealed_link=PasswordResetRequested.seal_link(PUBLIC, f"https://hub.example/r?token={TOKEN}"),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )

        outcomes = await _deliver(runtime, Envelope.wrap(event, producer="auth-svc"), PasswordResetRequested.topic)

        assert outcomes == [Outcome.APPLIED]
        assert [(r.kind, r.subject_id) for r in await _rows(runtime, mail_message)] == [("password_reset", user_id)]

    async def test_an_event_notify_svc_cannot_open_is_dead_lettered_with_the_reason(
        self, runtime: ServiceRuntime
    ) -> None:
        _, stranger = generate_keypair()
        envelope = _invitation(public_key=stranger)

        assert await _deliver(runtime, envelope, UserInvited.topic) == [Outcome.DEAD_LETTERED]

        assert await _rows(runtime, mail_message) == []
        (letter,) = await _rows(runtime, DEFINITION.tables.dead_letter)
        assert (letter.consumer, letter.event_id) == ("notify-svc.mail.user-invited", envelope.id)
        assert "not sealed to notify-svc's key" in letter.reason

    async def test_a_version_1_event_with_a_plaintext_link_is_dead_lettered(self, runtime: ServiceRuntime) -> None:
        v1 = Envelope(
            type="user.invited",
            version=1,
            producer="auth-svc",
            payload={"email": "anna@example.com", "link": "https://hub.example/?token=x"},
        )

        assert await _deliver(runtime, v1, UserInvited.topic) == [Outcome.DEAD_LETTERED]
        (letter,) = await _rows(runtime, DEFINITION.tables.dead_letter)
        assert "expected user.invited v2, got user.invited v1" in letter.reason
