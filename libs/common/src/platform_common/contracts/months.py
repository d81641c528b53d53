"""A client's month in the purchase buffer, as approval-svc (its owner) announces it; buffer-svc enforces the lock
and notify-svc tells the people named in ``recipients``.

    open --approve--> approved --unlock (nothing imported yet)--> open --approve--> ...

Every change of one month carries its ``revision`` (1, 2, ...): a consumer applies a change only when it is newer
than the one it holds, so a redelivered approval never re-locks a month unlocked after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from platform_common.contracts.invoices import KSEF_NUMBER_PATTERN, NIP_PATTERN
from platform_common.messaging.envelope import EventContract

PERIOD_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


class ApprovedDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ksef_number: str = Field(pattern=KSEF_NUMBER_PATTERN)
    decision: Literal["book", "dont_book"]
    description: str | None = None


class Recipient(BaseModel):
    """Somebody to tell about the month: the office at its return address, the client at its contact address."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: str
    language: Literal["pl", "en"] = "pl"
    side: Literal["office", "client"]
    office_name: str | None = None


class MonthApproved(EventContract):
    """A client approved a month: the documents listed are ready for the office to book."""

    event_type: ClassVar[str] = "month.approved"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "month.approved"

    client_nip: str = Field(pattern=NIP_PATTERN)
    period: str = Field(pattern=PERIOD_PATTERN)
    approved_by: str
    approved_at: datetime
    book_count: int = Field(ge=0)
    dont_book_count: int = Field(ge=0)
    documents: tuple[ApprovedDocument, ...] = ()
    # Additive within version 1: the month's revision at approval-svc, and whom notify-svc mails.
    revision: int | None = Field(default=None, ge=1)
    client_name: str | None = None
    recipients: tuple[Recipient, ...] = ()


class MonthUnlocked(EventContract):
    """The client reopened an approved month ("Odblokuj miesiąc"); allowed until the office imported from it."""

    event_type: ClassVar[str] = "month.unlocked"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "month.approved"  # the same topic: one month's changes stay in order

    client_nip: str = Field(pattern=NIP_PATTERN)
    period: str = Field(pattern=PERIOD_PATTERN)
    revision: int = Field(ge=1)
    unlocked_by: str
    unlocked_at: datetime
    client_name: str | None = None
    recipients: tuple[Recipient, ...] = ()


class MonthLateArrival(EventContract):
    """A purchase invoice dated in an approved month arrived after the approval: the month is flagged and both
    sides are told (the office books it or asks the client to decide)."""

    event_type: ClassVar[str] = "month.late_arrival"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "month.approved"

    client_nip: str = Field(pattern=NIP_PATTERN)
    period: str = Field(pattern=PERIOD_PATTERN)
    ksef_number: str = Field(pattern=KSEF_NUMBER_PATTERN)
    late_arrivals: int = Field(ge=1, description="Late arrivals in this month so far, this one included")
    arrived_at: datetime
    client_name: str | None = None
    recipients: tuple[Recipient, ...] = ()


MONTH_TOPIC = "month.approved"
MONTH_EVENTS: tuple[type[EventContract], ...] = (MonthApproved, MonthUnlocked, MonthLateArrival)
