"""Rules of the purchase buffer without I/O: decisions, who may change them when, the booking gate, suggestions.

The model is the Firmino purchase buffer (``../shared/context/000_*``): the client marks every purchase invoice
"Księguj" or "Nie księguj" with a description, the office takes ("realizacja") only what is marked to book, and
an approved month is closed to the client's edits.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

Side = Literal["client", "office"]
MAX_DESCRIPTION = 2000
MAX_BULK = 500


class Decision(StrEnum):
    UNVERIFIED = "unverified"
    BOOK = "book"
    DONT_BOOK = "dont_book"


# What a person reads in the buffer and in refusals (the seed's own words for Polish).
DECISION_LABELS: dict[Decision, dict[str, str]] = {
    Decision.UNVERIFIED: {"pl": "Niezweryfikowany", "en": "Unverified"},
    Decision.BOOK: {"pl": "Księguj", "en": "Book"},
    Decision.DONT_BOOK: {"pl": "Nie księguj", "en": "Don't book"},
}


class BufferError(Exception):
    """A refused step: ``code`` names it for problem documents, the message says what to do."""

    def __init__(self, code: str, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def period_of(issue_date: date) -> str:
    """The buffer month of an invoice: its issue date P_1 (the acquisition date is kept beside it)."""
    return f"{issue_date.year:04d}-{issue_date.month:02d}"


@dataclass(frozen=True)
class EntryState:
    """What the rules need to know about one entry."""

    decision: Decision
    imported: bool
    archived: bool
    month_locked: bool


def check_edit(entry: EntryState, side: Side) -> None:
    """May ``side`` change this entry's decision or description now?

    The client decides until the month is approved or the office has taken the entry; the office may override
    at any time before it took the entry (an override is logged as one). Nobody changes an imported entry: the
    ERP has booked what it was then."""
    if entry.imported:
        raise BufferError("entry-imported", "The office has already imported this invoice; it cannot change now.")
    if entry.archived:
        raise BufferError("entry-archived", "The invoice is in the archive; restore it first.")
    if side == "client" and entry.month_locked:
        raise BufferError(
            "month-approved",
            "The month is approved and closed for changes; unlock it first (Odblokuj miesiąc).",
        )


def gate_refusal(entry: EntryState) -> dict[str, str] | None:
    """The booking gate: why this entry may not be imported (``None`` when it may), in Polish and English."""
    if entry.archived:
        return {"code": "archived", "pl": "W archiwum", "en": "In the archive"}
    if entry.decision is not Decision.BOOK:
        label = DECISION_LABELS[entry.decision]
        return {
            "code": f"status-{entry.decision.value}",
            "pl": f"Status: {label['pl']}",
            "en": f"Status: {label['en']}",
        }
    return None


def check_archive(entry: EntryState) -> None:
    """Only what the client said not to book goes to the archive, and never what was imported."""
    if entry.imported:
        raise BufferError("entry-imported", "An imported invoice is not archived.")
    if entry.decision is not Decision.DONT_BOOK:
        raise BufferError(
            "not-dont-book", "Only invoices marked 'Nie księguj' (don't book) can be moved to the archive."
        )


def clean_description(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) > MAX_DESCRIPTION:
        raise BufferError(
            "description-too-long", f"A description has at most {MAX_DESCRIPTION} characters.", status=422
        )
    return text or None


# --- listing: sort orders and keyset cursors ------------------------------------------------------------------------

SORTS: dict[str, tuple[str, bool]] = {
    # name -> (column, descending)
    "issue_date": ("issue_date", False),
    "-issue_date": ("issue_date", True),
    "acquired": ("acquisition_date", False),
    "-acquired": ("acquisition_date", True),
    "gross": ("gross_amount", False),
    "-gross": ("gross_amount", True),
}
DEFAULT_SORT = "-issue_date"


def encode_cursor(sort: str, value: Any, entry_id: str) -> str:
    if isinstance(value, datetime | date):
        value = value.isoformat()
    elif isinstance(value, Decimal):
        value = str(value)
    raw = json.dumps([sort, value, entry_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    """The sort value and entry id a page ended at; ``BufferError`` for a cursor this API did not make for
    ``sort``."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        made_for, value, entry_id = raw
        column, _desc = SORTS[made_for]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise BufferError("invalid-cursor", "The cursor is not one this API returned.", status=422) from None
    if made_for != sort:
        raise BufferError("invalid-cursor", "The cursor belongs to another sort order.", status=422)
    try:
        if column == "issue_date":
            value = date.fromisoformat(value)
        elif column == "acquisition_date":
            value = datetime.fromisoformat(value)
        else:
            value = Decimal(value)
    except (ValueError, TypeError, ArithmeticError):
        raise BufferError("invalid-cursor", "The cursor is not one this API returned.", status=422) from None
    return value, str(entry_id)


@dataclass(frozen=True)
class Suggestion:
    """What the same client decided last time for the same seller: offered, never applied by itself."""

    decision: Decision
    description: str | None
    # The basis shown beside it: the entry the suggestion comes from.
    based_on_ksef_number: str
    based_on_invoice_number: str
    decided_at: datetime
