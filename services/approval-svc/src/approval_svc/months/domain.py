"""Rules of month approval without I/O.

    open --approve (no unverified invoice left)--> approved --unlock (nothing imported yet)--> open

The counts come from buffer-svc's entries as approval-svc last heard of them (``status.changed``); archived entries
are out of the count, as they are out of the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class MonthState(StrEnum):
    OPEN = "open"
    APPROVED = "approved"


class MonthError(Exception):
    """A refused step: ``code`` names it for problem documents, the message says what to do."""

    def __init__(self, code: str, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class MonthCounts:
    unverified: int = 0
    book: int = 0
    dont_book: int = 0
    imported: int = 0
    archived: int = 0

    @property
    def entries(self) -> int:
        return self.unverified + self.book + self.dont_book


def check_approve(state: MonthState, counts: MonthCounts) -> None:
    if state is MonthState.APPROVED:
        raise MonthError("already-approved", "The month is approved already.")
    if counts.unverified:
        raise MonthError(
            "unverified-invoices",
            f"{counts.unverified} invoice(s) of this month are still unverified: decide 'Księguj' or "
            "'Nie księguj' for each first.",
        )


def check_unlock(state: MonthState, counts: MonthCounts) -> None:
    if state is not MonthState.APPROVED:
        raise MonthError("not-approved", "The month is not approved, so there is nothing to unlock.")
    if counts.imported:
        raise MonthError(
            "already-imported",
            f"The office has already imported {counts.imported} invoice(s) of this month; it cannot be unlocked.",
        )
