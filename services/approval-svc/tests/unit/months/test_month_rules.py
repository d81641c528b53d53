"""The month's state machine without I/O: approve only with every invoice decided, unlock only before an import."""

from __future__ import annotations

import pytest

from approval_svc.months.domain import MonthCounts, MonthError, MonthState, check_approve, check_unlock


def _refusal(call: object, *args: object) -> str:
    with pytest.raises(MonthError) as refused:
        call(*args)  # type: ignore[operator]
    return refused.value.code


def test_approve_needs_an_open_month_with_nothing_unverified() -> None:
    check_approve(MonthState.OPEN, MonthCounts(book=3, dont_book=1))
    check_approve(MonthState.OPEN, MonthCounts())  # a month without purchases can be approved too
    assert _refusal(check_approve, MonthState.OPEN, MonthCounts(book=3, unverified=1)) == "unverified-invoices"
    assert _refusal(check_approve, MonthState.APPROVED, MonthCounts(book=3)) == "already-approved"


def test_archived_entries_do_not_count_as_entries() -> None:
    assert MonthCounts(book=1, dont_book=2, unverified=3, archived=4, imported=1).entries == 6


def test_unlock_needs_an_approved_month_the_office_has_not_imported_from() -> None:
    check_unlock(MonthState.APPROVED, MonthCounts(book=2))
    assert _refusal(check_unlock, MonthState.APPROVED, MonthCounts(book=2, imported=1)) == "already-imported"
    assert _refusal(check_unlock, MonthState.OPEN, MonthCounts()) == "not-approved"
