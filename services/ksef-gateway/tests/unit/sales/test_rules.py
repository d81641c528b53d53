"""Auto-send rules of sales invoices: the order of decisions, series globs, validation, the monthly backfill."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ksef_gateway.sales.rules import (
    MAX_SERIES_RULES,
    AutoSendDecision,
    AutoSendRules,
    SeriesAction,
    SeriesRule,
    backfill_due,
    backfill_window,
    decide,
)
from ksef_gateway.sales.validation import InvoiceFacts

SEND, HOLD = SeriesAction.SEND, SeriesAction.HOLD


def facts(number: str = "FV/1/2026", *, consumer: bool = False, invoice_type: str = "VAT") -> InvoiceFacts:
    return InvoiceFacts(
        seller_nip="5260250274",
        buyer_nip=None if consumer else "7010002137",
        buyer_is_consumer=consumer,
        invoice_number=number,
        issue_date=date(2026, 3, 14),
        currency="PLN",
        gross=Decimal("123.00"),
        invoice_type=invoice_type,
        corrected_ksef_numbers=("5260250274-20260301-0100A0B0C0D0-7F",) if invoice_type == "KOR" else (),
    )


def rules(*series: tuple[str, SeriesAction], **options: Any) -> AutoSendRules:
    return AutoSendRules(series=[SeriesRule(pattern=p, action=a) for p, a in series], **options)


# --- decide -------------------------------------------------------------------------------------------------------


def test_default_rules_send_everything() -> None:
    default = AutoSendRules.default_rules()
    assert default == AutoSendRules(series=[], default=SEND, hold_b2c=False, backfill_day=None)
    for invoice in (facts(), facts("PRO/7", consumer=True), facts("KOR/1", invoice_type="KOR")):
        decision = decide(default, invoice)
        assert decision.send
        assert decision.rule == "default"
    assert backfill_due(default, date(2026, 3, 28), None) is None


def test_first_matching_series_rule_wins() -> None:
    configured = rules(("FV/*/2025", HOLD), ("FV/*", SEND), ("*", HOLD))
    assert decide(configured, facts("FV/9/2025")) == AutoSendDecision(
        send=False,
        rule="series:FV/*/2025",
        reason_en="The invoice number matches the series 'FV/*/2025': the client's rule holds it",
        reason_pl="Numer faktury pasuje do serii „FV/*/2025” — reguła klienta: nie wysyłaj automatycznie",
    )
    sent = decide(configured, facts("FV/9/2026"))
    assert (sent.send, sent.rule) == (True, "series:FV/*")
    assert sent.reason_pl == "Numer faktury pasuje do serii „FV/*” — reguła klienta: wysyłaj automatycznie"
    caught_all = decide(configured, facts("PRO/9/2026"))
    assert (caught_all.send, caught_all.rule) == (False, "series:*")


def test_order_of_rules_is_significant() -> None:
    assert decide(rules(("FV/*", SEND), ("FV/*/2025", HOLD)), facts("FV/9/2025")).rule == "series:FV/*"
    assert decide(rules(("FV/*/2025", HOLD), ("FV/*", SEND)), facts("FV/9/2025")).rule == "series:FV/*/2025"


def test_default_hold_catches_numbers_matching_no_rule() -> None:
    configured = rules(("FV/*", SEND), default=HOLD)
    assert decide(configured, facts("FV/1")).send
    held = decide(configured, facts("PRO/1"))
    assert held == AutoSendDecision(
        send=False,
        rule="default",
        reason_en="The invoice number matches none of the client's series: the client's default holds it",
        reason_pl="Numer nie pasuje do żadnej serii — domyślna reguła klienta: nie wysyłaj automatycznie",
    )


def test_default_reason_without_series_does_not_mention_series() -> None:
    held = decide(rules(default=HOLD), facts())
    assert (held.send, held.rule) == (False, "default")
    assert held.reason_en == "The client's default holds it"
    assert held.reason_pl == "Domyślna reguła klienta: nie wysyłaj automatycznie"
    sent = decide(rules(), facts())
    assert sent.reason_en == "The client's default sends it automatically"


def test_b2c_hold_comes_before_any_series_rule() -> None:
    configured = rules(("FV/*", SEND), hold_b2c=True)
    assert decide(configured, facts("FV/1", consumer=True)) == AutoSendDecision(
        send=False,
        rule="b2c",
        reason_en="Invoice to a consumer (B2C): the client's rule holds it",
        reason_pl="Faktura dla konsumenta (B2C) — reguła klienta: nie wysyłaj automatycznie",
    )
    # A business buyer is decided by the series as usual.
    assert decide(configured, facts("FV/1")).rule == "series:FV/*"


def test_consumer_invoices_follow_the_series_when_b2c_hold_is_off() -> None:
    assert decide(rules(("FV/*", SEND)), facts("FV/1", consumer=True)).rule == "series:FV/*"
    assert decide(rules(("PAR/*", HOLD)), facts("PAR/1", consumer=True)).rule == "series:PAR/*"


def test_foreign_buyer_without_nip_is_not_a_consumer() -> None:
    foreign = InvoiceFacts(
        seller_nip="5260250274",
        buyer_nip=None,
        buyer_is_consumer=False,
        invoice_number="FV/1",
        issue_date=date(2026, 3, 14),
        currency="EUR",
        gross=Decimal("10"),
        invoice_type="VAT",
    )
    assert decide(rules(hold_b2c=True), foreign).send


def test_corrections_follow_the_rules_of_their_own_number_and_buyer() -> None:
    configured = rules(("KOR/*", HOLD), ("FV/*", SEND), hold_b2c=True)
    correction = facts("KOR/1/2026", invoice_type="KOR")
    assert correction.is_correction
    assert decide(configured, correction).rule == "series:KOR/*"
    # Numbered in the corrected invoice's series, a correction is sent with that series.
    assert decide(configured, facts("FV/1/2026/K", invoice_type="KOR")).rule == "series:FV/*"
    assert decide(configured, facts("FV/1/2026/K", consumer=True, invoice_type="KOR")).rule == "b2c"


# --- globs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "number", "matches"),
    [
        # ``*`` crosses slashes: the number is not a path.
        ("FV/*", "FV/2026/01/15", True),
        ("FV/*/2026", "FV/01/02/2026", True),
        ("FV/*/2026", "FV/01/2025", False),
        ("*-K", "FV/1/2026-K", True),
        ("*-K", "FV/1/2026-K2", False),
        # The whole number must match, not a prefix.
        ("FV/*", "XFV/1", False),
        ("FV", "FV/1", False),
        # Case-sensitive on every platform (``fnmatch.fnmatch`` would fold case on Windows).
        ("FV/*", "fv/1", False),
        ("fv/*", "FV/1", False),
        ("FV/?", "FV/7", True),
        ("FV/?", "FV/17", False),
        ("FV/[AB]/*", "FV/B/1", True),
        ("FV/[!AB]/*", "FV/B/1", False),
        # A literal ``[`` is written as a one-character class; an unclosed one is literal by itself.
        ("FV[[]1]/*", "FV[1]/5", True),
        ("FV[1]/*", "FV[1]/5", False),
        ("FV[1]/*", "FV1/5", True),
        ("FV[2026/*", "FV[2026/1", True),
        ("*", "", True),
        ("*", "ZAL/1/2026", True),
        ("Faktura nr *", "Faktura nr 12", True),
        ("FV/ż/*", "FV/ż/1", True),
    ],
)
def test_series_globs(pattern: str, number: str, matches: bool) -> None:
    assert SeriesRule(pattern=pattern, action=SEND).matches(number) is matches


# --- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["", "F" * 101, "FV/\n*", "FV/\t*", "FV/\x00", "FV/\x7f", "FV/\u0085*", " FV/*", "FV/* "],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValidationError):
        SeriesRule(pattern=pattern, action=SEND)


def test_refusal_does_not_quote_the_pattern() -> None:
    with pytest.raises(ValidationError) as refused:
        SeriesRule(pattern="SECRET\x01", action=SEND)
    assert all("SECRET" not in error["msg"] for error in refused.value.errors())


def test_longest_pattern_is_accepted() -> None:
    assert SeriesRule(pattern="F" * 100, action=HOLD).pattern == "F" * 100


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ValidationError):
        SeriesRule.model_validate({"pattern": "FV/*", "action": "skip"})


def test_at_most_fifty_series_rules() -> None:
    many = [(f"S{i}/*", SEND) for i in range(MAX_SERIES_RULES)]
    assert len(rules(*many).series) == MAX_SERIES_RULES
    with pytest.raises(ValidationError):
        rules(*many, ("ONE/MORE/*", HOLD))


def test_a_pattern_may_not_repeat() -> None:
    with pytest.raises(ValidationError, match="series rule 3 repeats the pattern of rule 1"):
        rules(("FV/*", SEND), ("PRO/*", HOLD), ("FV/*", HOLD))


@pytest.mark.parametrize("day", [0, 29, -1, 31])
def test_backfill_day_out_of_range_is_refused(day: int) -> None:
    with pytest.raises(ValidationError):
        AutoSendRules(backfill_day=day)


@pytest.mark.parametrize("day", [1, 28])
def test_backfill_day_bounds_are_accepted(day: int) -> None:
    assert AutoSendRules(backfill_day=day).backfill_day == day


@pytest.mark.parametrize("stored", [{"backfill_day": True}, {"backfill_day": "5"}, {"hold_b2c": "yes"}])
def test_stored_values_are_not_coerced(stored: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AutoSendRules.model_validate(stored)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        AutoSendRules.model_validate({"hold_b2b": True})
    with pytest.raises(ValidationError):
        AutoSendRules.model_validate({"series": [{"pattern": "FV/*", "action": "send", "regex": True}]})


def test_rules_round_trip_through_json() -> None:
    configured = rules(("FV/*", SEND), ("PRO/*", HOLD), default=HOLD, hold_b2c=True, backfill_day=5)
    stored = configured.model_dump_json()
    assert json.loads(stored) == {
        "series": [{"pattern": "FV/*", "action": "send"}, {"pattern": "PRO/*", "action": "hold"}],
        "default": "hold",
        "hold_b2c": True,
        "backfill_day": 5,
    }
    assert AutoSendRules.model_validate_json(stored) == configured
    assert AutoSendRules.model_validate(json.loads(stored)) == configured


# --- backfill -----------------------------------------------------------------------------------------------------


def test_no_backfill_without_a_backfill_day() -> None:
    assert backfill_due(rules(default=HOLD), date(2026, 3, 28), None) is None
    assert backfill_due(rules(default=HOLD), date(2026, 3, 28), (2025, 1)) is None


def test_backfill_is_due_on_its_day_for_the_previous_month() -> None:
    configured = rules(backfill_day=5)
    assert backfill_due(configured, date(2026, 3, 4), (2026, 1)) is None
    assert backfill_due(configured, date(2026, 3, 5), (2026, 1)) == (2026, 2)


def test_backfill_in_january_covers_december_of_the_previous_year() -> None:
    configured = rules(backfill_day=3)
    assert backfill_due(configured, date(2027, 1, 3), (2026, 11)) == (2026, 12)
    assert backfill_due(configured, date(2027, 1, 3), None) == (2026, 12)
    assert backfill_due(configured, date(2027, 1, 4), (2026, 12)) is None
    assert backfill_window(2026, 12) == (date(2026, 12, 1), date(2026, 12, 31))


def test_a_missed_day_is_caught_up_the_next_day() -> None:
    configured = rules(backfill_day=10)
    # The service was down on the 10th; the 11th still finds February not backfilled.
    assert backfill_due(configured, date(2026, 3, 11), (2026, 1)) == (2026, 2)
    assert backfill_due(configured, date(2026, 3, 31), (2026, 1)) == (2026, 2)


def test_a_missed_last_day_is_caught_up_across_the_month_boundary() -> None:
    configured = rules(backfill_day=28)
    # 28 February was missed: on 1 March the previous month is February, but January's backfill is the one owed.
    assert backfill_due(configured, date(2026, 3, 1), (2025, 12)) == (2026, 1)
    assert backfill_due(configured, date(2026, 3, 27), (2026, 1)) is None
    assert backfill_due(configured, date(2026, 3, 28), (2026, 1)) == (2026, 2)
    # Across the year boundary: 28 December missed, November owed on 2 January.
    assert backfill_due(configured, date(2027, 1, 2), (2026, 10)) == (2026, 11)


def test_a_longer_gap_catches_up_only_the_latest_month_due() -> None:
    configured = rules(backfill_day=5)
    assert backfill_due(configured, date(2026, 6, 5), (2025, 12)) == (2026, 5)
    assert backfill_due(configured, date(2026, 6, 4), (2025, 12)) == (2026, 4)


def test_never_backfilled_waits_for_the_day() -> None:
    configured = rules(backfill_day=28)
    assert backfill_due(configured, date(2026, 3, 1), None) is None
    assert backfill_due(configured, date(2026, 3, 28), None) == (2026, 2)


def test_backfill_runs_once_a_month() -> None:
    configured = rules(backfill_day=1)
    assert backfill_due(configured, date(2026, 3, 1), (2026, 1)) == (2026, 2)
    # Recorded as done: not again this month, whatever the day.
    for day in (1, 2, 15, 31):
        assert backfill_due(configured, date(2026, 3, day), (2026, 2)) is None
    assert backfill_due(configured, date(2026, 4, 1), (2026, 2)) == (2026, 3)


def test_the_current_month_is_never_due() -> None:
    configured = rules(backfill_day=1)
    for today in (date(2026, 3, 1), date(2026, 3, 31), date(2026, 12, 31), date(2027, 1, 1)):
        due = backfill_due(configured, today, None)
        assert due is not None
        assert due < (today.year, today.month)
        # A record from the future (a clock set back) never makes the current or a later month due.
        assert backfill_due(configured, today, (today.year, today.month)) is None


@pytest.mark.parametrize(
    ("year", "month", "last"),
    [(2026, 1, 31), (2026, 2, 28), (2028, 2, 29), (2026, 4, 30), (2026, 12, 31)],
)
def test_backfill_window_is_the_whole_month(year: int, month: int, last: int) -> None:
    assert backfill_window(year, month) == (date(year, month, 1), date(year, month, last))


def test_backfill_window_refuses_a_month_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="month"):
        backfill_window(2026, 13)
