"""Rules of sending mail, without I/O: what a delivery outcome means and when to try again.

Delivery is at least once: a mail is marked sent only after the SMTP server accepted it, so a process killed
between the server's 250 and that mark sends it again on the next pass. Every copy carries the same
``Message-ID`` (from the mail's id, which is the event's), so a mail client or a receiving server can tell the
copies apart from a second, different mail.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class MailKind(StrEnum):
    INVITATION = "invitation"
    PASSWORD_RESET = "password_reset"  # noqa: S105  # a kind of e-mail, not a password
    CONSENT_REQUEST = "consent_request"  # to the client: the one-time link to the consent page
    ACTIVATION_CODE = "activation_code"  # to the office's return address, after the client consented
    CONSENT_REFUSED = "consent_refused"  # to the office's return address: a notice, with no link
    # Notices of a client's month (approval-svc's month events), one mail per person the event names.
    MONTH_APPROVED = "month_approved"  # to the offices: the month's decisions are final, what to book
    MONTH_UNLOCKED = "month_unlocked"  # to the offices: the client reopened the month
    MONTH_LATE_ARRIVAL = "month_late_arrival"  # to both sides: an invoice arrived in an approved month
    # To a webhook subscription's contact: it failed for the whole retry window and was disabled.
    WEBHOOK_DISABLED = "webhook_disabled"


class MailStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # the server refused it for good (5xx), or temporary failures lasted past the limit
    EXPIRED = "expired"  # its link expired before it could be sent: a dead link is not worth sending


class AttemptOutcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


LANGUAGES = ("pl", "en")


@dataclass(frozen=True)
class DeliveryResult:
    """How one SMTP attempt ended: accepted, or refused with the server's code (``None``: no answer at all)."""

    accepted: bool
    smtp_code: int | None = None
    detail: str | None = None

    @property
    def permanent(self) -> bool:
        # RFC 5321 §4.2.1: 5yz is a permanent negative reply; 4yz and no reply at all are worth another try.
        return not self.accepted and self.smtp_code is not None and 500 <= self.smtp_code < 600


@dataclass(frozen=True)
class RetryPolicy:
    base: timedelta
    cap: timedelta
    give_up_after: timedelta

    def next_attempt_at(self, now: datetime, attempts: int) -> datetime:
        """After ``attempts`` failed attempts: base, doubling, capped."""
        delay = min(self.cap, self.base * (1 << min(max(attempts - 1, 0), 20)))
        return now + delay

    def gives_up(self, now: datetime, queued_at: datetime) -> bool:
        return now - queued_at >= self.give_up_after


def outcome_of(result: DeliveryResult, policy: RetryPolicy, *, now: datetime, queued_at: datetime) -> AttemptOutcome:
    if result.accepted:
        return AttemptOutcome.SENT
    if result.permanent or policy.gives_up(now, queued_at):
        return AttemptOutcome.FAILED
    return AttemptOutcome.RETRY


def language_of(requested: str | None, default: str) -> str:
    return requested if requested in LANGUAGES else default


def message_id(mail_id: uuid.UUID, domain: str) -> str:
    """The same for every copy of one mail (RFC 5322 §3.6.4)."""
    return f"<{mail_id}@{domain}>"
