"""Events auth-svc publishes for notify-svc to turn into e-mails: an invitation, a password reset.

Each carries a single-use link whose token takes over an account, and events sit in the producer's outbox
(and its WAL and backups) and in a topic for the topic's whole retention. So the link travels sealed to
notify-svc's public key (``platform_common.sealing``, ``info`` = the event type): only notify-svc, which
has to put it into the e-mail, can open it. auth-svc stores only the token's SHA-256; the link expires and
dies when used.

Version 2 replaced v1's plaintext ``link`` by ``sealed_link``. The topics stay: no consumer of v1 ever
existed, and a consumer that meets a v1 event refuses it by version.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from platform_common.messaging.envelope import EventContract
from platform_common.sealing import SealingError, seal, unseal

__all__ = ["PasswordResetRequested", "SealedLinkEvent", "UserInvited"]


class SealedLinkEvent(EventContract):
    """An event whose link is readable only with notify-svc's private key."""

    sealed_link: str = Field(pattern=r"^hpke1\.[A-Za-z0-9_-]+$")
    # When the link stops working.
    expires_at: datetime
    # The recipient's language for the e-mail; optional and additive within the version (``None``: notify-svc's
    # default, Polish).
    language: Literal["pl", "en"] | None = None

    @classmethod
    def seal_link(cls, public_key: str, link: str) -> str:
        """The value of ``sealed_link`` for ``link``, sealed to ``public_key`` for this event type only."""
        return seal(public_key, link.encode(), info=cls.event_type.encode())

    def open_link(self, private_key: str) -> str:
        """The link in the clear; raises ``SealingError`` unless sealed to this key for this event type."""
        return self.open_sealed_link(private_key, self.sealed_link)

    @classmethod
    def open_sealed_link(cls, private_key: str, sealed_link: str) -> str:
        """``open_link`` for a sealed link kept apart from its event (notify-svc's queued mail)."""
        opened = unseal(private_key, sealed_link, info=cls.event_type.encode())
        try:
            return opened.decode()
        except UnicodeDecodeError as exc:
            # Anyone may seal to a public key: what opens is still not necessarily a link.
            raise SealingError("the sealed text is not a UTF-8 link") from exc


class UserInvited(SealedLinkEvent):
    event_type: ClassVar[str] = "user.invited"
    event_version: ClassVar[int] = 2
    topic: ClassVar[str] = "user.invited"

    invitation_id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    email: str
    role: str


class PasswordResetRequested(SealedLinkEvent):
    event_type: ClassVar[str] = "user.password_reset_requested"
    event_version: ClassVar[int] = 2
    topic: ClassVar[str] = "user.password_reset_requested"

    user_id: uuid.UUID
    email: str
