from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from platform_common.contracts.invoices import KSEF_NUMBER_PATTERN, NIP_PATTERN
from platform_common.messaging.envelope import EventContract


class ApprovedDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ksef_number: str = Field(pattern=KSEF_NUMBER_PATTERN)
    decision: Literal["book", "dont_book"]
    description: str | None = None


class MonthApproved(EventContract):
    """A client approved a month: the documents listed are ready for the office to book."""

    event_type: ClassVar[str] = "month.approved"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "month.approved"

    client_nip: str = Field(pattern=NIP_PATTERN)
    period: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    approved_by: str
    approved_at: datetime
    book_count: int = Field(ge=0)
    dont_book_count: int = Field(ge=0)
    documents: tuple[ApprovedDocument, ...] = ()
