from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from notify_svc.mail.repository import MailRecord
from notify_svc.mail.service import MailService
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.messaging.dispatch import PermanentFailure
from platform_common.sealing import generate_keypair

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
TOKEN = "Zq3vN0s-very-secret-token"
INVITE_LINK = f"https://hub.example/auth/invitations/accept?token={TOKEN}"


class FakeStore:
    def __init__(self) -> None:
        self.records: list[MailRecord] = []

    async def add(self, record: MailRecord) -> None:
        self.records.append(record)


def _invited(public_key: str, link: str = INVITE_LINK) -> UserInvited:
    return UserInvited(
        invitation_id=uuid.uuid4(),
        organisation_id=uuid.uuid4(),
        organisation_name="Biuro Rachunkowe Sp. z o.o.",
        email="anna@example.com",
        role="office_staff",
        sealed_link=UserInvited.seal_link(public_key, link),
        expires_at=NOW + timedelta(days=7),
    )


@pytest.fixture
def keys() -> tuple[str, str]:
    return generate_keypair()


class TestQueueing:
    async def test_an_invitation_is_queued_pending_with_its_link_still_sealed(self, keys: tuple[str, str]) -> None:
        private, public = keys
        store, event_id, event = FakeStore(), uuid.uuid4(), _invited(public)

        await MailService(SecretStr(private), clock=lambda: NOW).invitation_requested(store, event_id, event)

        (record,) = store.records
        assert (record.id, record.kind, record.status) == (event_id, "invitation", "pending")
        assert (record.recipient, record.subject_id) == ("anna@example.com", event.invitation_id)
        assert record.sealed_link == event.sealed_link
        assert (record.expires_at, record.created_at) == (event.expires_at, NOW)
        assert TOKEN not in repr(record)

    async def test_a_password_reset_is_queued_for_the_user(self, keys: tuple[str, str]) -> None:
        private, public = keys
        link = f"https://hub.example/auth/password-reset/confirm?token={TOKEN}"
        event = PasswordResetRequested(
            user_id=uuid.uuid4(),
            email="jan@example.com",
            sealed_link=PasswordResetRequested.seal_link(public, link),
            expires_at=NOW + timedelta(hours=1),
        )
        store = FakeStore()

        await MailService(SecretStr(private), clock=lambda: NOW).password_reset_requested(store, uuid.uuid4(), event)

        (record,) = store.records
        assert (record.kind, record.recipient, record.subject_id) == (
            "password_reset",
            "jan@example.com",
            event.user_id,
        )
        assert TOKEN not in repr(record)


class TestRefusals:
    async def test_a_link_sealed_to_another_key_is_a_permanent_failure(self, keys: tuple[str, str]) -> None:
        _, public = keys
        other_private, _ = generate_keypair()
        store = FakeStore()

        with pytest.raises(PermanentFailure, match="not sealed to notify-svc's key"):
            await MailService(SecretStr(other_private)).invitation_requested(store, uuid.uuid4(), _invited(public))
        assert store.records == []

    async def test_without_a_key_the_event_is_a_permanent_failure_naming_the_setting(
        self, keys: tuple[str, str]
    ) -> None:
        store = FakeStore()

        with pytest.raises(PermanentFailure, match="NOTIFY_SEAL_PRIVATE_KEY"):
            await MailService(None).invitation_requested(store, uuid.uuid4(), _invited(keys[1]))
        assert store.records == []

    @pytest.mark.parametrize("link", ["javascript:alert(1)", "not a link", "https://"])
    async def test_a_sealed_text_that_is_no_http_link_is_a_permanent_failure(
        self, keys: tuple[str, str], link: str
    ) -> None:
        private, public = keys

        with pytest.raises(PermanentFailure, match="not an http"):
            await MailService(SecretStr(private)).invitation_requested(
                FakeStore(), uuid.uuid4(), _invited(public, link)
            )

    async def test_the_failure_reason_never_contains_the_link(self, keys: tuple[str, str]) -> None:
        private, public = keys
        event = _invited(public, f"ftp://hub.example/?token={TOKEN}")

        with pytest.raises(PermanentFailure) as failure:
            await MailService(SecretStr(private)).invitation_requested(FakeStore(), uuid.uuid4(), event)
        assert TOKEN not in str(failure.value)
