"""Sales invoices' rules without I/O: the sending state machine, the status poll's back-off, idempotency.

The state machine is persisted before every KSeF call, which is what makes a crash safe (issue 15):

    queued ──► sending ──► submitted ──► accepted | duplicate | rejected
       ▲          │
       └──────────┘  (reconciled after a crash: not in the session's list by its hash → queued again)
    held ──► queued  (the client's auto-send rules held it; sent by hand or by the monthly backfill)

- ``sending`` is written, with the session chosen, *before* the invoice is posted. A replica that finds a
  ``sending`` row it is not posting right now cannot know whether KSeF received it, so it looks for the invoice's
  hash among the session's invoices (``GET /sessions/{ref}/invoices``): found → ``submitted`` with KSeF's
  reference, absent → ``queued`` again. Nothing is posted twice that KSeF already holds, nothing is forgotten.
- ``submitted`` holds KSeF's reference of the send; its status is polled until final (REFERENCE.md §7).
- ``duplicate`` is KSeF's 440 resolved: the original's KSeF number, confirmed by hash to be this very invoice, and
  the original's UPO. A 440 for a *different* document with the same number is a rejection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

FINAL_STATES = frozenset({"accepted", "duplicate", "rejected"})


class SalesStatus(StrEnum):
    HELD = "held"
    QUEUED = "queued"
    SENDING = "sending"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self.value in FINAL_STATES

    @property
    def label(self) -> dict[str, str]:
        return STATUS_LABELS[self]


STATUS_LABELS: dict[SalesStatus, dict[str, str]] = {
    SalesStatus.HELD: {"pl": "Wstrzymana (reguły wysyłki)", "en": "Held (auto-send rules)"},
    SalesStatus.QUEUED: {"pl": "W kolejce", "en": "Queued"},
    SalesStatus.SENDING: {"pl": "Wysyłanie", "en": "Sending"},
    SalesStatus.SUBMITTED: {"pl": "Przetwarzanie w KSeF", "en": "Processing in KSeF"},
    SalesStatus.ACCEPTED: {"pl": "Przyjęta", "en": "Accepted"},
    SalesStatus.DUPLICATE: {"pl": "Przyjęta (duplikat)", "en": "Accepted (duplicate)"},
    SalesStatus.REJECTED: {"pl": "Odrzucona", "en": "Rejected"},
}

# KSeF's status code of a duplicate (REFERENCE.md §7); its extensions name the original.
DUPLICATE_CODE = 440
# 400 codes of a send that say the session, not the invoice, is unusable (REFERENCE.md §4): the invoice goes back
# to the queue and the next attempt opens a new session.
SESSION_UNUSABLE_CODES = frozenset({21155, 21173, 21180})


class SubmissionError(Exception):
    """A submission refused before anything is queued: ``status`` and ``code`` for the problem document."""

    def __init__(self, code: str, message: str, *, status: int, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.extensions = extensions


def request_fingerprint(content_type: str, body: bytes) -> str:
    """What an ``Idempotency-Key`` is bound to: the same key with another body is a client error (409), not a
    second invoice. The media type is part of it: the same bytes as XML and as JSON are different requests."""
    digest = hashlib.sha256()
    digest.update(content_type.split(";")[0].strip().lower().encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True)
class PollSchedule:
    """Back-off of the status poll: KSeF usually decides within a second or two, so the first looks come quickly,
    and an invoice KSeF keeps longer costs fewer and fewer of the invoiceStatus budget (REFERENCE.md §13)."""

    first_s: float = 0.2
    factor: float = 1.6
    max_s: float = 10.0

    def after(self, waited_s: float) -> float:
        """The next look after ``waited_s`` since the last change: a fraction of the wait so far, so that the number
        of looks grows with the logarithm of the time KSeF takes, never sooner than ``first_s`` nor later than
        ``max_s``."""
        return float(min(self.max_s, max(self.first_s, waited_s * (self.factor - 1))))


def send_retry_delay(attempts: int, *, base_s: float = 1.0, max_s: float = 300.0) -> float:
    """How long a send that failed for a passing reason (429, 5xx, a lost answer reconciled) waits."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))


def duplicate_original(extensions: dict[str, object]) -> tuple[str | None, str | None]:
    """``(originalKsefNumber, originalSessionReferenceNumber)`` from a 440's extensions."""
    number = extensions.get("originalKsefNumber")
    session = extensions.get("originalSessionReferenceNumber")
    return (str(number) if number else None, str(session) if session else None)
