"""KSeF availability as the gateway sees it, and the legal deadlines of sales invoices issued offline.

``ksef.outage.started`` / ``ksef.outage.ended`` come from two sources (REFERENCE.md §1, §12): Latarnia, the
Ministry's status service, whose announcements decide the legal offline mode (MAINTENANCE → offline, FAILURE →
awaryjny, TOTAL_FAILURE → awaria całkowita), and the gateway's own probes (``source="probe"``, kind
``UNREACHABLE``): KSeF not answering while nothing is announced, in which only offline24 is open to a taxpayer.
They concern every client, so the envelope carries no client NIP.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from platform_common.messaging.envelope import EventContract

OUTAGE_TOPIC = "ksef.outage"  # started and ended share it: an outage's two events stay in order
SALES_DEADLINE_TOPIC = "sales.deadline.alerted"


class OutageKind(StrEnum):
    MAINTENANCE = "MAINTENANCE"
    FAILURE = "FAILURE"
    TOTAL_FAILURE = "TOTAL_FAILURE"
    UNREACHABLE = "UNREACHABLE"  # our probes fail, Latarnia announces nothing


class OutageSource(StrEnum):
    LATARNIA = "latarnia"
    PROBE = "probe"


class KsefOutageStarted(EventContract):
    event_type: ClassVar[str] = "ksef.outage.started"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = OUTAGE_TOPIC

    outage_id: str
    kind: OutageKind
    source: OutageSource
    started_at: datetime
    latarnia_event_id: int | None = None
    message: str | None = Field(default=None, max_length=2000)


class KsefOutageEnded(EventContract):
    event_type: ClassVar[str] = "ksef.outage.ended"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = OUTAGE_TOPIC

    outage_id: str
    kind: OutageKind
    source: OutageSource
    started_at: datetime
    ended_at: datetime
    latarnia_event_id: int | None = None


class DeadlineAlert(StrEnum):
    APPROACHING = "approaching"  # within the warning period before the last day ends
    MISSED = "missed"  # the last day has passed and KSeF has not accepted it


class SalesDeadlineAlerted(EventContract):
    """A sales invoice issued offline is close to (or past) its legal deadline for reaching KSeF (§12)."""

    event_type: ClassVar[str] = "sales.deadline.alerted"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = SALES_DEADLINE_TOPIC

    invoice_id: str
    invoice_number: str
    offline_mode: str
    deadline: date
    alert: DeadlineAlert
    status: str  # the invoice's sending status when the alert fired


OUTAGE_EVENTS: tuple[type[EventContract], ...] = (KsefOutageStarted, KsefOutageEnded, SalesDeadlineAlerted)

__all__ = [
    "OUTAGE_EVENTS",
    "OUTAGE_TOPIC",
    "SALES_DEADLINE_TOPIC",
    "DeadlineAlert",
    "KsefOutageEnded",
    "KsefOutageStarted",
    "OutageKind",
    "OutageSource",
    "SalesDeadlineAlerted",
]
