"""Latarnia ("lighthouse"), the Ministry's public status service (REFERENCE.md §1), driven by the operator's outage.

Each outage is one event (``eventId``). Starting it publishes a ``FAILURE_START`` message (category FAILURE or
TOTAL_FAILURE) or, for planned work, a ``MAINTENANCE_ANNOUNCEMENT`` (category MAINTENANCE). Ending it publishes a
``FAILURE_END`` message carrying both start and end; a maintenance announcement is instead republished with its
``end`` filled in and ``version`` + 1. Messages are records, so the history survives restarts.

Faults themselves live in memory: a restart heals the service, so an event still open from an earlier process is
closed the next time anyone looks (``reconcile``), keeping Latarnia honest about what the API does.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from ksef_sim.clock import iso
from ksef_sim.store import Record, Store

_OPEN_EVENT = "latarnia:open"  # meta: id of the message that opened the running event


class Status(StrEnum):
    AVAILABLE = "AVAILABLE"
    MAINTENANCE = "MAINTENANCE"
    FAILURE = "FAILURE"
    TOTAL_FAILURE = "TOTAL_FAILURE"


class Category(StrEnum):
    FAILURE = "FAILURE"
    TOTAL_FAILURE = "TOTAL_FAILURE"
    MAINTENANCE = "MAINTENANCE"


class MessageType(StrEnum):
    FAILURE_START = "FAILURE_START"
    FAILURE_END = "FAILURE_END"
    MAINTENANCE_ANNOUNCEMENT = "MAINTENANCE_ANNOUNCEMENT"


class LatarniaMessage(Record):
    KIND = "latarnia_message"

    id: str
    event_id: int
    category: Category
    type: MessageType
    title: str
    text: str
    start: datetime
    end: datetime | None = None
    version: int = 1
    published: datetime

    def key(self) -> str:
        return self.id


_TITLES = {
    Category.FAILURE: ("Awaria KSeF", "Zakończenie awarii KSeF"),
    Category.TOTAL_FAILURE: ("Awaria całkowita KSeF", "Zakończenie awarii całkowitej KSeF"),
    Category.MAINTENANCE: ("Prace serwisowe KSeF", "Zakończenie prac serwisowych KSeF"),
}


def open_event_message(store: Store) -> LatarniaMessage | None:
    message_id = store.get_meta(_OPEN_EVENT)
    return store.get(LatarniaMessage, message_id) if message_id else None


def start_event(store: Store, category: Category, at: datetime, note: str | None) -> LatarniaMessage:
    title, _ = _TITLES[category]
    if category is Category.MAINTENANCE:
        text = f"Od {iso(at)} trwają prace serwisowe; system KSeF jest niedostępny."
        kind = MessageType.MAINTENANCE_ANNOUNCEMENT
    else:
        text = f"Od {iso(at)} występuje awaria systemu KSeF; API odpowiada błędem 503."
        kind = MessageType.FAILURE_START
    if note:
        text = f"{text} {note}"
    message = LatarniaMessage(
        id=str(uuid.uuid4()),
        event_id=store.next_sequence("latarnia-event"),
        category=category,
        type=kind,
        title=title,
        text=text,
        start=at,
        published=at,
    )
    store.put(message)
    store.set_meta(_OPEN_EVENT, message.id)
    return message


def end_event(store: Store, at: datetime, reason: str | None = None) -> LatarniaMessage | None:
    """Close the running event (if any) at ``at``; returns the message that records the end."""
    opened = open_event_message(store)
    store.set_meta(_OPEN_EVENT, None)
    if opened is None:
        return None
    _, title = _TITLES[opened.category]
    suffix = f" {reason}" if reason else ""
    if opened.type is MessageType.MAINTENANCE_ANNOUNCEMENT:
        # No MAINTENANCE_END type exists: the announcement is republished with its end.
        ended = opened.model_copy(
            update={
                "end": at,
                "version": opened.version + 1,
                "published": at,
                "text": f"Prace serwisowe trwały od {iso(opened.start)} do {iso(at)}.{suffix}",
            }
        )
    else:
        ended = LatarniaMessage(
            id=str(uuid.uuid4()),
            event_id=opened.event_id,
            category=opened.category,
            type=MessageType.FAILURE_END,
            title=title,
            text=f"Awaria systemu KSeF trwająca od {iso(opened.start)} zakończyła się {iso(at)}.{suffix}",
            start=opened.start,
            end=at,
            published=at,
        )
    store.put(ended)
    return ended


def reconcile(store: Store, outage: bool, at: datetime) -> None:
    """Close an event left open by a previous process whose outage did not survive the restart."""
    if not outage and store.get_meta(_OPEN_EVENT):
        end_event(store, at, "Symulator został uruchomiony ponownie.")


def current_status(store: Store, outage: bool, kind: str) -> tuple[Status, list[LatarniaMessage]]:
    """The status with the messages of the running event; ``kind`` covers an outage set without the operator API."""
    if not outage:
        return Status.AVAILABLE, []
    opened = open_event_message(store)
    if opened is None:
        return Status(kind), []
    return Status(opened.category.value), [opened]


def messages(store: Store) -> list[LatarniaMessage]:
    return store.all(LatarniaMessage)
