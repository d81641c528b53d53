"""The incremental HWM rules of REFERENCE.md §9 as pure functions: windows, next `from`, 3-month split, cadence."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from ksef_gateway.sync.domain import (
    DueSubject,
    Method,
    NoProgress,
    SubjectType,
    SyncPolicy,
    Window,
    WindowResult,
    add_months,
    choose_method,
    dedupe,
    earliest_fetch_now,
    enabled_subjects,
    has_more,
    initial_checkpoint,
    month_close_deadline,
    next_checkpoint,
    next_run_after_failure,
    next_window,
    order_due,
    parse_instant,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
T = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def test_the_filters_follow_the_official_incremental_rules() -> None:
    window = Window(T, None)
    assert window.filters(SubjectType.SUBJECT2) == {
        "subjectType": "Subject2",
        "dateRange": {
            "dateType": "PermanentStorage",
            "from": "2026-03-10T09:00:00.000Z",
            "restrictToPermanentStorageHwmDate": True,
        },
    }
    bounded = Window(T, T + timedelta(days=1)).filters(SubjectType.SUBJECT3)["dateRange"]
    assert bounded["to"] == "2026-03-11T09:00:00.000Z"


def test_not_truncated_continues_from_the_hwm() -> None:
    hwm = T + timedelta(hours=2)
    result = WindowResult(is_truncated=False, permanent_storage_hwm=hwm, last_permanent_storage=None)
    assert next_checkpoint(Window(T, None), result) == hwm
    assert not has_more(Window(T, None), result)


def test_truncated_continues_from_the_last_permanent_storage_date_not_the_hwm() -> None:
    last = T + timedelta(minutes=30)
    result = WindowResult(is_truncated=True, permanent_storage_hwm=T + timedelta(hours=2), last_permanent_storage=last)
    assert next_checkpoint(Window(T, None), result) == last
    assert has_more(Window(T, None), result)


def test_truncated_without_progress_stops_instead_of_looping() -> None:
    stuck = WindowResult(is_truncated=True, permanent_storage_hwm=None, last_permanent_storage=T)
    with pytest.raises(NoProgress):
        next_checkpoint(Window(T, None), stuck)
    with pytest.raises(NoProgress):
        next_checkpoint(Window(T, None), WindowResult(True, None, None))


def test_the_checkpoint_never_moves_backwards() -> None:
    older_hwm = WindowResult(False, T - timedelta(seconds=5), None)
    assert next_checkpoint(Window(T, None), older_hwm) == T


def test_a_window_within_three_months_has_no_to() -> None:
    assert next_window(NOW - timedelta(days=80), NOW).end is None


def test_a_longer_backfill_is_split_into_three_month_windows_walked_by_the_same_rule() -> None:
    start = initial_checkpoint(NOW, 12)
    midnight = datetime(2025, 3, 9, 23, 0, tzinfo=UTC)  # midnight in Warsaw (CET) a year ago
    # Moved forward by the sliver that would cost a fifth export: four windows are the least 12 months allow.
    assert midnight < start <= midnight + timedelta(days=1, hours=8)
    windows = []
    checkpoint = start
    while True:
        window = next_window(checkpoint, NOW)
        windows.append(window)
        if window.end is not None:
            assert window.end <= add_months(window.start, 3)  # KSeF's limit (21405) is never passed
        # KSeF reports permanentStorageHwmDate = the window's end for a window fully below the HWM.
        hwm = window.end or NOW - timedelta(seconds=3)
        result = WindowResult(False, hwm, None)
        checkpoint = next_checkpoint(window, result)
        if not has_more(window, result):
            break
    assert len(windows) == 4
    assert [w.end is None for w in windows] == [False, False, False, True]
    # Contiguous: each window starts where the previous one ended, so nothing falls between them.
    for previous, following in itertools.pairwise(windows):
        assert following.start == previous.end


@pytest.mark.parametrize(
    "now",
    [NOW, datetime(2026, 12, 4, 21, 0, tzinfo=UTC), datetime(2026, 12, 4, 0, 30, tzinfo=UTC)],
    ids=["march-noon", "december-evening", "december-after-midnight-in-warsaw"],
)
def test_the_default_three_month_backfill_is_one_export_not_one_and_a_sliver(now: datetime) -> None:
    start = initial_checkpoint(now, 3)
    assert next_window(start, now).end is None  # one open-ended window: a first sync is a single export
    # ... that still reaches back three months but for the hours a window's margin and the day's start cost.
    assert add_months(now, -3) <= start <= add_months(now, -3) + timedelta(hours=3)


def test_a_month_end_backfill_keeps_its_days_and_pays_the_second_export() -> None:
    # 31 May - 3 months = 28 February: shifting by three days to save an export would lose three days of invoices.
    now = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)
    start = initial_checkpoint(now, 3)
    assert start == datetime(2026, 2, 27, 23, 0, tzinfo=UTC)
    assert next_window(start, now).end is not None


def test_overlapping_windows_dedupe_by_ksef_number() -> None:
    first_window = ["A", "B", "C"]
    second_window = ["C", "D", "D", "E"]  # the boundary invoice again, and a package listing one twice
    stored = set(dedupe(first_window, set()))
    assert dedupe(second_window, stored) == ["D", "E"]


def test_export_for_backfill_unknown_or_big_deltas_metadata_for_small_ones() -> None:
    policy = SyncPolicy(small_delta_max_invoices=10, small_delta_max_gap=timedelta(hours=2))
    recent = NOW - timedelta(minutes=20)

    def method(**kw: object) -> Method:
        args: dict[str, object] = {"checkpoint": recent, "now": NOW, "last_delta": 3, "backfilled": True}
        args.update(kw)
        return choose_method(policy, **args)  # type: ignore[arg-type]

    assert method() is Method.METADATA
    assert method(last_delta=10) is Method.METADATA
    assert method(last_delta=11) is Method.EXPORT
    assert method(last_delta=None) is Method.EXPORT
    assert method(backfilled=False) is Method.EXPORT
    assert method(checkpoint=NOW - timedelta(hours=3)) is Method.EXPORT


def test_fetch_now_respects_the_minimum_poll_interval_unless_overridden() -> None:
    policy = SyncPolicy(min_poll_interval=timedelta(minutes=15))
    last = NOW - timedelta(minutes=5)
    assert earliest_fetch_now(NOW, last, policy, override=False) == last + timedelta(minutes=15)
    assert earliest_fetch_now(NOW, last, policy, override=True) == NOW
    assert earliest_fetch_now(NOW, NOW - timedelta(hours=1), policy, override=False) == NOW
    assert earliest_fetch_now(NOW, None, policy, override=False) == NOW


def test_failures_back_off_exponentially_up_to_a_cap() -> None:
    base, cap = timedelta(seconds=60), timedelta(hours=1)
    delays = [next_run_after_failure(NOW, n, base=base, cap=cap) - NOW for n in (1, 2, 3, 10)]
    assert delays == [timedelta(seconds=60), timedelta(seconds=120), timedelta(seconds=240), cap]


def test_month_close_deadline_is_the_end_of_the_close_day_in_warsaw() -> None:
    assert month_close_deadline(NOW, 20) == datetime(2026, 3, 20, 23, 0, tzinfo=UTC)  # 21 March 00:00 CET
    assert month_close_deadline(NOW, 5) == datetime(2026, 4, 5, 22, 0, tzinfo=UTC)  # next month, CEST
    assert month_close_deadline(datetime(2026, 2, 10, tzinfo=UTC), 31) == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)


def test_nearest_deadline_first_then_longest_waiting() -> None:
    due = [
        DueSubject("1111111111", SubjectType.SUBJECT2, NOW - timedelta(hours=5), close_day=25),
        DueSubject("2222222222", SubjectType.SUBJECT2, NOW - timedelta(minutes=1), close_day=12),
        DueSubject("3333333333", SubjectType.SUBJECT2, NOW - timedelta(hours=1), close_day=25),
        DueSubject("4444444444", SubjectType.SUBJECT2, None, close_day=25),
    ]
    assert [d.client_nip for d in order_due(due, NOW)] == ["2222222222", "4444444444", "1111111111", "3333333333"]


def test_subject2_always_the_others_when_enabled() -> None:
    assert enabled_subjects({}) == [SubjectType.SUBJECT2]
    assert enabled_subjects({SubjectType.SUBJECT3: True, SubjectType.SUBJECT_AUTHORIZED: False}) == [
        SubjectType.SUBJECT2,
        SubjectType.SUBJECT3,
    ]


def test_ksef_instants_without_an_offset_are_warsaw_time() -> None:
    assert parse_instant("2026-03-10T10:00:00") == datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
    assert parse_instant("2026-03-10T10:00:00.123+00:00") == datetime(2026, 3, 10, 10, 0, 0, 123000, tzinfo=UTC)
    assert parse_instant(None) is None
