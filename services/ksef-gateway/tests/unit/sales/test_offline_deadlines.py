"""The offline-mode deadlines of REFERENCE.md §12 on real Polish calendars (holidays, "PL"), with plain dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import holidays
import pytest

from ksef_gateway.sales.deadlines import (
    WARSAW,
    Deadline,
    DeadlineStatus,
    NoMatchingOutage,
    OfflineMode,
    Outage,
    OutageKind,
    add_working_days,
    alert_due,
    deadline,
    deadline_instant,
    is_working_day,
    mode_for,
    next_working_day,
    overdue,
    resolve_deadline,
)


def warsaw(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=WARSAW)


def failure(start: datetime, end: datetime | None) -> Outage:
    return Outage(OutageKind.FAILURE, start, end)


def maintenance(start: datetime, end: datetime | None) -> Outage:
    return Outage(OutageKind.MAINTENANCE, start, end)


def test_the_calendar_the_expected_dates_rely_on() -> None:
    pl = holidays.country_holidays("PL", years=[2024, 2025, 2026, 2027])
    for day in [
        date(2026, 4, 6),  # Easter Monday
        date(2026, 5, 1),  # May Day, a Friday
        date(2026, 5, 3),  # Constitution Day, a Sunday
        date(2026, 11, 11),  # Independence Day, a Wednesday
        date(2025, 12, 24),  # Wigilia: a public holiday since 2025
        date(2026, 12, 24),
        date(2026, 12, 25),
        date(2026, 12, 26),
        date(2027, 1, 1),  # New Year, a Friday
        date(2027, 1, 6),  # Epiphany, a Wednesday
    ]:
        assert day in pl
    assert date(2024, 12, 24) not in pl


def test_working_days_are_weekdays_outside_public_holidays() -> None:
    assert is_working_day(date(2026, 3, 6))  # Friday
    assert not is_working_day(date(2026, 3, 7))  # Saturday
    assert not is_working_day(date(2026, 3, 8))  # Sunday
    assert not is_working_day(date(2026, 11, 11))  # Wednesday, Independence Day
    assert not is_working_day(date(2025, 12, 24))  # Wednesday, Wigilia (from 2025 on)
    assert is_working_day(date(2024, 12, 24))  # Tuesday: before 2025 Wigilia was a working day
    assert next_working_day(date(2026, 3, 9)) == date(2026, 3, 10)  # strictly after, even from a working day
    assert add_working_days(date(2026, 3, 9), 0) == date(2026, 3, 9)
    with pytest.raises(ValueError, match="negative"):
        add_working_days(date(2026, 3, 9), -1)


@pytest.mark.parametrize(
    ("issued", "due"),
    [
        (date(2026, 3, 6), date(2026, 3, 9)),  # Friday -> Monday
        (date(2026, 3, 9), date(2026, 3, 10)),  # Monday -> Tuesday
        (date(2026, 3, 7), date(2026, 3, 9)),  # issued on a Saturday -> Monday
        (date(2026, 4, 3), date(2026, 4, 7)),  # Friday; Mon 6 Apr is Easter Monday -> Tuesday
        (date(2026, 4, 30), date(2026, 5, 4)),  # Thursday; Fri 1 May holiday, Sat, Sun 3 May -> Monday
        (date(2026, 11, 10), date(2026, 11, 12)),  # Tuesday; Wed 11 Nov holiday -> Thursday
        (date(2026, 12, 23), date(2026, 12, 28)),  # Wednesday; Thu 24, Fri 25, Sat 26, Sun 27 -> Monday
        (date(2026, 12, 31), date(2027, 1, 4)),  # Thursday; Fri 1 Jan 2027 holiday, weekend -> Monday
        (date(2027, 1, 5), date(2027, 1, 7)),  # Tuesday; Wed 6 Jan Epiphany -> Thursday
        (date(2025, 12, 23), date(2025, 12, 29)),  # Tuesday; Wed 24 (Wigilia), Thu 25, Fri 26, weekend -> Monday
        (date(2024, 12, 23), date(2024, 12, 24)),  # Monday; in 2024 Wigilia was still a working day
    ],
)
def test_offline24_is_due_the_next_working_day_after_the_issue_date(issued: date, due: date) -> None:
    assert deadline(OfflineMode.OFFLINE24, issued, []) == due


def test_unavailability_ending_on_friday_evening_is_due_on_monday() -> None:
    friday = maintenance(warsaw(2026, 3, 13, 16), warsaw(2026, 3, 13, 20, 30))
    assert deadline(OfflineMode.UNAVAILABILITY, date(2026, 3, 13), [friday]) == date(2026, 3, 16)


def test_the_end_of_an_unavailability_is_read_as_a_warsaw_date() -> None:
    # Thursday 23:30 UTC is already Friday 00:30 in Warsaw: the next working day after Friday is Monday, not Friday.
    late = maintenance(datetime(2026, 3, 12, 20, 0, tzinfo=UTC), datetime(2026, 3, 12, 23, 30, tzinfo=UTC))
    assert deadline(OfflineMode.UNAVAILABILITY, date(2026, 3, 12), [late]) == date(2026, 3, 16)


def test_overlapping_maintenance_announcements_are_one_unavailability() -> None:
    first = maintenance(warsaw(2026, 3, 13, 16), warsaw(2026, 3, 13, 20))
    extended = maintenance(warsaw(2026, 3, 13, 19), warsaw(2026, 3, 16, 9))  # until Monday morning
    unrelated = maintenance(warsaw(2026, 3, 2, 16), warsaw(2026, 3, 2, 18))
    assert deadline(OfflineMode.UNAVAILABILITY, date(2026, 3, 13), [extended, unrelated, first]) == date(2026, 3, 17)


def test_an_unavailability_that_has_not_ended_leaves_the_deadline_open() -> None:
    ongoing = maintenance(warsaw(2026, 3, 13, 16), None)
    assert resolve_deadline(OfflineMode.UNAVAILABILITY, date(2026, 3, 13), [ongoing]) == Deadline(
        DeadlineStatus.AWAITING_END
    )


def test_the_unavailability_mode_needs_an_announced_maintenance_on_the_issue_date() -> None:
    elsewhere = maintenance(warsaw(2026, 3, 2, 16), warsaw(2026, 3, 2, 18))
    with pytest.raises(NoMatchingOutage):
        deadline(OfflineMode.UNAVAILABILITY, date(2026, 3, 13), [elsewhere])
    with pytest.raises(NoMatchingOutage):
        deadline(OfflineMode.FAILURE, date(2026, 3, 13), [elsewhere])


def test_a_failure_ending_on_the_wednesday_before_christmas_counts_7_working_days() -> None:
    # Ends Wed 23 Dec 2026. Not counted: Thu 24, Fri 25 (holidays), Sat 26 (holiday), Sun 27.
    # 1 Mon 28, 2 Tue 29, 3 Wed 30, 4 Thu 31; Fri 1 Jan 2027 holiday, Sat 2, Sun 3; 5 Mon 4, 6 Tue 5;
    # Wed 6 Jan Epiphany; 7 Thu 7 Jan 2027.
    christmas = failure(warsaw(2026, 12, 21, 9), warsaw(2026, 12, 23, 18))
    assert deadline(OfflineMode.FAILURE, date(2026, 12, 22), [christmas]) == date(2027, 1, 7)
    assert add_working_days(date(2026, 12, 23), 7) == date(2027, 1, 7)


def test_a_new_failure_announcement_restarts_the_count() -> None:
    first = failure(warsaw(2026, 3, 2, 9), warsaw(2026, 3, 3, 12))
    # Ends Tue 3 Mar: 4, 5, 6, 9, 10, 11, 12 -> Thu 12 Mar.
    assert deadline(OfflineMode.FAILURE, date(2026, 3, 2), [first]) == date(2026, 3, 12)
    # Announced Tue 10 Mar, before the 12th passed, ends the same day: 11, 12, 13, 16, 17, 18, 19 -> Thu 19 Mar.
    second = failure(warsaw(2026, 3, 10, 10), warsaw(2026, 3, 10, 15))
    # Announced Wed 18 Mar, inside the restarted count, ends Fri 20 Mar: 23, 24, 25, 26, 27, 30, 31 -> Tue 31 Mar.
    third = failure(warsaw(2026, 3, 18, 8), warsaw(2026, 3, 20, 8))
    assert deadline(OfflineMode.FAILURE, date(2026, 3, 2), [first, second]) == date(2026, 3, 19)
    assert deadline(OfflineMode.FAILURE, date(2026, 3, 2), [third, first, second]) == date(2026, 3, 31)


def test_a_failure_after_the_deadline_passed_does_not_move_it() -> None:
    first = failure(warsaw(2026, 3, 2, 9), warsaw(2026, 3, 3, 12))
    later = failure(warsaw(2026, 3, 13, 0), warsaw(2026, 3, 13, 12))  # starts just after Thu 12 Mar ended
    assert deadline(OfflineMode.FAILURE, date(2026, 3, 2), [first, later]) == date(2026, 3, 12)


def test_a_failure_during_the_offline24_window_moves_the_deadline() -> None:
    # Issued Fri 6 Mar, due Mon 9 Mar; a failure on that Monday ends the same day: 10, 11, 12, 13, 16, 17, 18.
    monday = failure(warsaw(2026, 3, 9, 8), warsaw(2026, 3, 9, 14))
    assert deadline(OfflineMode.OFFLINE24, date(2026, 3, 6), [monday]) == date(2026, 3, 18)


def test_failures_outside_the_offline24_window_do_not_move_it() -> None:
    before = failure(warsaw(2026, 3, 4, 8), warsaw(2026, 3, 5, 23, 59))  # ended before Fri 6 Mar began
    after = failure(warsaw(2026, 3, 10, 0), warsaw(2026, 3, 10, 6))  # began after Mon 9 Mar ended
    assert deadline(OfflineMode.OFFLINE24, date(2026, 3, 6), [before, after]) == date(2026, 3, 9)


def test_a_failure_during_the_unavailability_window_moves_the_deadline() -> None:
    # Maintenance Fri 13 Mar -> due Mon 16 Mar; a failure that Monday: 17, 18, 19, 20, 23, 24, 25 -> Wed 25 Mar.
    friday = maintenance(warsaw(2026, 3, 13, 16), warsaw(2026, 3, 13, 20))
    monday = failure(warsaw(2026, 3, 16, 10), warsaw(2026, 3, 16, 12))
    assert deadline(OfflineMode.UNAVAILABILITY, date(2026, 3, 13), [friday, monday]) == date(2026, 3, 25)


def test_a_failure_that_has_not_ended_leaves_the_deadline_open() -> None:
    ongoing = failure(warsaw(2026, 3, 9, 8), None)
    assert deadline(OfflineMode.FAILURE, date(2026, 3, 9), [ongoing]) is None
    assert resolve_deadline(OfflineMode.FAILURE, date(2026, 3, 9), [ongoing]).status is DeadlineStatus.AWAITING_END
    # The same open failure inside an offline24 window opens that deadline too.
    assert resolve_deadline(OfflineMode.OFFLINE24, date(2026, 3, 6), [ongoing]).status is DeadlineStatus.AWAITING_END
    # Once its end is announced the date is known: Mon 9 Mar + 7 working days.
    ended = failure(warsaw(2026, 3, 9, 8), warsaw(2026, 3, 9, 16))
    assert deadline(OfflineMode.FAILURE, date(2026, 3, 9), [ended]) == date(2026, 3, 18)


def test_a_total_failure_carries_no_obligation_and_no_qr_codes() -> None:
    total = Outage(OutageKind.TOTAL_FAILURE, warsaw(2026, 3, 9, 8), None)
    assert resolve_deadline(OfflineMode.TOTAL_FAILURE, date(2026, 3, 9), [total]) == Deadline(
        DeadlineStatus.NOT_REQUIRED
    )
    assert deadline(OfflineMode.TOTAL_FAILURE, date(2026, 3, 9), [total]) is None
    assert not OfflineMode.TOTAL_FAILURE.carries_qr_codes
    assert OfflineMode.FAILURE.carries_qr_codes and OfflineMode.OFFLINE24.carries_qr_codes


def test_outages_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Outage(OutageKind.FAILURE, datetime(2026, 3, 9, 8), None)  # naive on purpose
    with pytest.raises(ValueError, match="before it starts"):
        failure(warsaw(2026, 3, 9, 8), warsaw(2026, 3, 9, 7))
    with pytest.raises(ValueError, match="exactly when"):
        Deadline(DeadlineStatus.DUE)


def test_the_deadline_instant_is_the_end_of_the_day_in_warsaw_across_dst() -> None:
    # Summer time ends on Sun 25 Oct 2026: Friday before is +02:00, Monday after is +01:00.
    assert deadline_instant(date(2026, 10, 23)) == datetime(2026, 10, 23, 21, 59, 59, 999999, tzinfo=UTC)
    assert deadline_instant(date(2026, 10, 26)) == datetime(2026, 10, 26, 22, 59, 59, 999999, tzinfo=UTC)
    # Summer time starts on Sun 29 Mar 2026: offline24 issued Fri 27 Mar is due Mon 30 Mar, at +02:00.
    due = deadline(OfflineMode.OFFLINE24, date(2026, 3, 27), [])
    assert due == date(2026, 3, 30)
    assert deadline_instant(date(2026, 3, 27)).utcoffset() == timedelta(hours=1)
    assert deadline_instant(due) == datetime(2026, 3, 30, 21, 59, 59, 999999, tzinfo=UTC)
    assert deadline_instant(due).date() == due
    assert not overdue(due, datetime(2026, 3, 30, 21, 59, 59, tzinfo=UTC))
    assert overdue(due, datetime(2026, 3, 30, 22, 0, tzinfo=UTC))  # Tue 31 Mar 00:00 in Warsaw
    assert not overdue(None, datetime(2030, 1, 1, tzinfo=UTC))


def test_alerts_fire_within_warn_before_of_the_deadline_in_elapsed_time() -> None:
    due = date(2026, 10, 26)  # Monday after the October change; ends 22:59:59.999999 UTC
    warn = timedelta(hours=48)  # 48 real hours before: Sat 24 Oct 22:59:59.999999 UTC (Sun 00:59:59 CEST)
    # Wall-clock arithmetic would give Sat 23:59:59 CEST = 21:59:59 UTC, an hour early: 22:30 UTC is not yet due.
    assert not alert_due(due, datetime(2026, 10, 24, 22, 30, tzinfo=UTC), warn)
    assert alert_due(due, datetime(2026, 10, 24, 23, 0, tzinfo=UTC), warn)
    assert alert_due(due, deadline_instant(due), warn)
    after = deadline_instant(due) + timedelta(microseconds=1)
    assert not alert_due(due, after, warn)
    assert overdue(due, after)
    assert not alert_due(None, after, warn)
    with pytest.raises(ValueError, match="negative"):
        alert_due(due, after, -warn)
    with pytest.raises(ValueError, match="timezone-aware"):
        alert_due(due, datetime(2026, 10, 24, 23, 0), warn)  # naive on purpose


@pytest.mark.parametrize(
    ("status", "chosen", "mode"),
    [
        (None, True, OfflineMode.OFFLINE24),
        ("AVAILABLE", True, OfflineMode.OFFLINE24),
        ("AVAILABLE", False, None),
        (None, False, None),
        ("MAINTENANCE", False, OfflineMode.UNAVAILABILITY),
        ("MAINTENANCE", True, OfflineMode.UNAVAILABILITY),
        ("FAILURE", False, OfflineMode.FAILURE),
        ("TOTAL_FAILURE", True, OfflineMode.TOTAL_FAILURE),
    ],
)
def test_mode_for_maps_latarnia_statuses(status: str | None, chosen: bool, mode: OfflineMode | None) -> None:
    assert mode_for(status, chosen_offline24=chosen) is mode


def test_mode_for_rejects_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown Latarnia status"):
        mode_for("DEGRADED", chosen_offline24=False)
