from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

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
