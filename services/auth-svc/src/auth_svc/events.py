"""Events auth-svc publishes through its outbox, for notify-svc to turn into e-mails.

They carry the single-use link (the e-mail has to), so they are the one place besides the e-mail where the
link token exists in the clear; auth-svc itself stores only its SHA-256. The link expires
(``AUTH_INVITATION_TTL_S``, ``AUTH_PASSWORD_RESET_TTL_S``) and dies when used. To move into
``platform_common.contracts`` once notify-svc consumes them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from platform_common.messaging.envelope import EventContract


class UserInvited(EventContract):
    event_type: ClassVar[str] = "user.invited"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "user.invited"

    invitation_id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_name: str
    email: str
    role: str
    link: str
    expires_at: datetime


class PasswordResetRequested(EventContract):
    event_type: ClassVar[str] = "user.password_reset_requested"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "user.password_reset_requested"

    user_id: uuid.UUID
    email: str
    link: str
    expires_at: datetime


AUTH_TOPICS: tuple[str, ...] = (UserInvited.topic, PasswordResetRequested.topic)
