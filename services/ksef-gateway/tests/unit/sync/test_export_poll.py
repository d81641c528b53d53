"""Export status polling: short first waits that double up to the cap, KSeF's Retry-After obeyed, the watchdog never
overslept. The engine part drives ``SyncEngine._await_export`` with a fake KSeF, a fake clock and a fake sleep that
only records the delays (and moves the clock), so nothing here waits for real."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from ksef_gateway.ksef.errors import KsefRateLimited
from ksef_gateway.ksef.models import ExportPackage, ExportStatus
from ksef_gateway.settings import SyncSettings
from ksef_gateway.sync.domain import EXPORT_DONE, EXPORT_RUNNING, SubjectType, export_poll_delay
from ksef_gateway.sync.engine import SyncEngine
from ksef_gateway.sync.ksef import NO_HINTS, BudgetHints, SyncKsef
from platform_common.messaging.outbox import Outbox

START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
REFERENCE = "20260310-EX-0000000000-0000000000-00"


def test_the_first_waits_are_short_and_double_up_to_the_cap() -> None:
    delays = [export_poll_delay(n, first_s=0.05, max_s=1.0, left_s=1800.0) for n in range(1, 8)]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_retry_after_replaces_the_schedule_even_past_the_cap() -> None:
    assert export_poll_delay(1, first_s=0.05, max_s=15.0, left_s=1800.0, retry_after_s=3.0) == 3.0
    assert export_poll_delay(9, first_s=0.05, max_s=15.0, left_s=1800.0, retry_after_s=0.5) == 0.5
    assert export_poll_delay(1, first_s=0.05, max_s=15.0, left_s=1800.0, retry_after_s=40.0) == 40.0


def test_no_wait_reaches_past_the_watchdog() -> None:
    assert export_poll_delay(20, first_s=0.05, max_s=15.0, left_s=2.5) == 2.5
    assert export_poll_delay(1, first_s=0.05, max_s=15.0, left_s=2.5, retry_after_s=60.0) == 2.5
    assert export_poll_delay(1, first_s=0.05, max_s=15.0, left_s=-1.0) == 0.0
    # A huge poll count does not overflow the doubling.
    assert export_poll_delay(10_000, first_s=0.05, max_s=15.0, left_s=1800.0) == 15.0


def _status(code: int, *, retry_after_s: float | None = None) -> ExportStatus:
    package = ExportPackage(0, 0, [], False, "Zip", None, None, None, None) if code == EXPORT_DONE else None
    return ExportStatus(REFERENCE, code, "", [], package, retry_after_s=retry_after_s)


class ScriptedStatuses:
    """The status answers (or a 429) KSeF gives, in order."""

    def __init__(self, answers: list[ExportStatus | KsefRateLimited]) -> None:
        self._answers: Iterator[ExportStatus | KsefRateLimited] = iter(answers)
        self.asked = 0

    async def export_status(self, nip: str, reference_number: str, *, hints: BudgetHints = NO_HINTS) -> ExportStatus:
        self.asked += 1
        answer = next(self._answers)
        if isinstance(answer, KsefRateLimited):
            raise answer
        return answer


class FakeTime:
    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def _engine(ksef: ScriptedStatuses, time: FakeTime, **settings: Any) -> SyncEngine:
    # The happy paths below never touch the database or the outbox.
    return SyncEngine(
        cast(Any, None),
        cast(Outbox, None),
        cast(SyncKsef, ksef),
        SyncSettings(**settings),
        clock=time.clock,
        sleep=time.sleep,
    )


async def test_a_quick_export_is_seen_ready_within_the_first_short_waits() -> None:
    time = FakeTime()
    ksef = ScriptedStatuses([_status(EXPORT_RUNNING), _status(EXPORT_RUNNING), _status(EXPORT_DONE)])
    engine = _engine(ksef, time, export_poll_interval_s=0.05, export_poll_max_interval_s=15.0)

    status = await engine._await_export("5260250274", SubjectType.SUBJECT2, REFERENCE, START)

    assert status.code == EXPORT_DONE
    assert time.slept == [0.05, 0.1]
    assert ksef.asked == 3


async def test_retry_after_on_the_status_answer_and_on_a_429_is_obeyed() -> None:
    time = FakeTime()
    ksef = ScriptedStatuses(
        [
            _status(EXPORT_RUNNING),
            _status(EXPORT_RUNNING, retry_after_s=3.0),
            KsefRateLimited("too many requests", http_status=429, retry_after_s=7.0),
            KsefRateLimited("too many requests", http_status=429),  # no Retry-After: the schedule goes on
            _status(EXPORT_DONE),
        ]
    )
    engine = _engine(ksef, time, export_poll_interval_s=0.05, export_poll_max_interval_s=15.0)

    status = await engine._await_export("5260250274", SubjectType.SUBJECT2, REFERENCE, START)

    assert status.code == EXPORT_DONE
    assert time.slept == [0.05, 3.0, 7.0, 0.4]


@pytest.mark.parametrize("left_s", [1.0, 30.0])
async def test_the_last_wait_ends_when_the_watchdog_is_due(left_s: float) -> None:
    time = FakeTime()
    # Started long ago: only ``left_s`` remain before the watchdog would abandon it.
    started_at = START - timedelta(seconds=1800.0 - left_s)
    ksef = ScriptedStatuses([_status(EXPORT_RUNNING, retry_after_s=600.0), _status(EXPORT_DONE)])
    engine = _engine(ksef, time, export_stuck_after_s=1800.0)

    await engine._await_export("5260250274", SubjectType.SUBJECT2, REFERENCE, started_at)

    assert time.slept == [left_s]
