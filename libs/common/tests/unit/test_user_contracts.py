from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pydantic
import pytest

from platform_common.contracts import CONTRACTS, PasswordResetRequested, UserInvited
from platform_common.messaging.envelope import Envelope, UnsupportedEvent
from platform_common.sealing import SealingError, generate_keypair

LINK = "https://hub.example/invitations/accept?token=Zq3vN0s-very-secret-token"


def _invited(public_key: str, link: str = LINK) -> UserInvited:
    return UserInvited(
        invitation_id=uuid.uuid4(),
        organisation_id=uuid.uuid4(),
        organisation_name="Biuro Rachunkowe Sp. z o.o.",
        email="anna@example.com",
        role="office_staff",
        sealed_link=UserInvited.seal_link(public_key, link),
        expires_at=datetime.now(UTC),
    )


def _reset(public_key: str, link: str = LINK) -> PasswordResetRequested:
    return PasswordResetRequested(
        user_id=uuid.uuid4(),
        email="anna@example.com",
        sealed_link=PasswordResetRequested.seal_link(public_key, link),
        expires_at=datetime.now(UTC),
    )


class TestUserContracts:
    def test_both_are_registered_as_version_2_on_their_topics(self) -> None:
        assert CONTRACTS[("user.invited", 2)] is UserInvited
        assert CONTRACTS[("user.password_reset_requested", 2)] is PasswordResetRequested
        assert ("user.invited", 1) not in CONTRACTS
        assert UserInvited.topic == "user.invited"
        assert PasswordResetRequested.topic == "user.password_reset_requested"

    def test_the_link_survives_the_envelope_only_for_the_private_key(self) -> None:
        private, public = generate_keypair()
        envelope = Envelope.wrap(_invited(public), producer="auth-svc")

        raw = envelope.to_bytes()
        event = Envelope.from_bytes(raw).parse(UserInvited)

        assert b"Zq3vN0s-very-secret-token" not in raw
        assert "link" not in envelope.payload
        assert event.open_link(private) == LINK
        with pytest.raises(SealingError):
            event.open_link(generate_keypair()[0])

    def test_a_link_sealed_for_one_event_type_does_not_open_as_the_other(self) -> None:
        private, public = generate_keypair()
        reset = _reset(public)
        assert reset.open_link(private) == LINK

        # A password-reset link replayed inside an invitation must not be accepted as one.
        forged = _invited(public).model_copy(update={"sealed_link": reset.sealed_link})

        with pytest.raises(SealingError):
            forged.open_link(private)

    def test_a_plaintext_link_is_not_a_valid_event(self) -> None:
        _, public = generate_keypair()
        payload = _invited(public).model_dump(mode="json")

        with pytest.raises(pydantic.ValidationError):
            UserInvited.model_validate({**payload, "sealed_link": LINK})
        with pytest.raises(pydantic.ValidationError):
            UserInvited.model_validate({**{k: v for k, v in payload.items() if k != "sealed_link"}, "link": LINK})

    def test_a_version_1_event_is_refused_by_version(self) -> None:
        _, public = generate_keypair()
        v1 = Envelope.wrap(_invited(public), producer="auth-svc").model_copy(update={"version": 1})

        with pytest.raises(UnsupportedEvent):
            v1.parse(UserInvited)
