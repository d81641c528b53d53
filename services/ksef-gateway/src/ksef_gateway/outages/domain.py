"""Rules of KSeF availability, without I/O (REFERENCE.md §1, §12).

Two sources decide whether KSeF is down. Latarnia's announcement is authoritative for the legal offline mode
(MAINTENANCE, FAILURE, TOTAL_FAILURE). Our probes see what Latarnia may not have announced yet: a run of failed calls
(5xx, 503, no answer) opens the circuit and records an UNREACHABLE outage, in which only offline24 is open to a
taxpayer; the first call that succeeds again closes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from platform_common.contracts.outages import OutageKind, OutageSource

LATARNIA_KINDS = {
    "MAINTENANCE": OutageKind.MAINTENANCE,
    "FAILURE": OutageKind.FAILURE,
    "TOTAL_FAILURE": OutageKind.TOTAL_FAILURE,
}


@dataclass(frozen=True)
class OpenOutage:
    id: str
    kind: OutageKind
    source: OutageSource
    started_at: datetime
    latarnia_event_id: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class LatarniaReading:
    """Latarnia's ``GET /status``: the status and, when an event is running, its id, start and text."""

    status: str
    event_id: int | None = None
    started_at: datetime | None = None
    message: str | None = None

    @property
    def kind(self) -> OutageKind | None:
        return LATARNIA_KINDS.get(self.status)


@dataclass(frozen=True)
class Change:
    """What to do about the Latarnia outage: end the open one, start a new one, or both (a new event replaced it)."""

    end: OpenOutage | None = None
    start: LatarniaReading | None = None


def follow_latarnia(current: OpenOutage | None, reading: LatarniaReading) -> Change:
    """Reconcile the recorded Latarnia outage with what Latarnia says now.

    An unknown status changes nothing (a new category must not end a running outage by accident). A running event
    of another id or kind is a new announcement: the old outage ends and the new one starts, which is what §12's
    "a new announcement restarts the count" needs to see.
    """
    if reading.status == "AVAILABLE":
        return Change(end=current)
    kind = reading.kind
    if kind is None:
        return Change()
    if current is None:
        return Change(start=reading)
    same_event = reading.event_id is None or current.latarnia_event_id == reading.event_id
    if same_event and current.kind is kind:
        return Change()
    return Change(end=current, start=reading)


class Circuit:
    """Consecutive failed KSeF calls open it; one success closes it. In memory, per replica: each replica opens
    the shared UNREACHABLE outage from what it sees, and any replica whose probe succeeds ends it."""

    def __init__(self, threshold: int = 3) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self._failures = 0

    @property
    def open(self) -> bool:
        return self._failures >= self.threshold

    def failure(self) -> bool:
        """Count a failure; True when this one opened the circuit."""
        self._failures += 1
        return self._failures == self.threshold

    def success(self) -> bool:
        """Count a success; True when the circuit was open."""
        was_open = self.open
        self._failures = 0
        return was_open
