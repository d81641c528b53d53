from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from platform_common.contracts.invoices import KSEF_NUMBER_PATTERN
from platform_common.messaging.envelope import EventContract


class DocumentKind(StrEnum):
    SALES = "sales"
    PURCHASE = "purchase"


class StatusChanged(EventContract):
    """A document's status moved.

    Sales: queued -> sent -> accepted / rejected / duplicate. Purchase: unverified -> book / dont_book,
    archived, imported.
    """

    event_type: ClassVar[str] = "status.changed"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "status.changed"

    document_kind: DocumentKind
    document_id: str
    ksef_number: str | None = Field(default=None, pattern=KSEF_NUMBER_PATTERN)
    previous_status: str | None = None
    status: str
    reason: str | None = None
    changed_at: datetime
    # Purchase entries (buffer-svc), additive within version 1: the entry's state *after* the change, so that a
    # projection (approval-svc's month counts) needs no other event. ``revision`` grows with every change of the
    # entry: apply an event only when it is newer than what is held (redelivery, replays).
    period: str | None = Field(default=None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    revision: int | None = Field(default=None, ge=1)
    decision: Literal["unverified", "book", "dont_book"] | None = None
    imported: bool | None = None
    archived: bool | None = None
    # Who changed it: client | office | platform (ingest).
    changed_by_side: Literal["client", "office", "platform"] | None = None
