"""Auto-send rules of sales invoices (permission ``ksef.send.auto``): send to KSeF at once, or hold; pure rules.

An ERP pushes every sales invoice it issues to the gateway. Per client, ``AutoSendRules`` decides whether the invoice
goes to KSeF at once or is **held**: kept and visible, sent later by hand or by the monthly backfill. The shapes come
from what users already know: Comarch Betterfly's "B2C invoices are not sent", Base.com's monthly "send everything not
yet sent", and number series to send or skip (send ``FV/*``, skip ``PRO/*`` pro-formas or a series an older system
still sends itself).

``decide`` asks, in this order, and the first that applies decides:

1. ``hold_b2c`` and the buyer is a consumer (``BrakID``) → hold (rule ``"b2c"``);
2. the ``series`` rules in their stored order, first match wins → its action (rule ``"series:<pattern>"``);
3. ``default`` → its action (rule ``"default"``).

B2C comes first because it is a statement about the buyer, which no number series can know: a client who holds
consumer invoices holds them whatever series the ERP numbers them in.

Corrections are not special-cased: a correcting invoice is decided by its own number and buyer, like any other.
ERPs number corrections in a series of their own (``KOR/*``, ``FK/*``), so a client who wants them treated differently
writes a rule for that series; and a correction of a consumer invoice has the same consumer as buyer, so it is held
with the original when ``hold_b2c`` is on. Tying a correction to the decision taken for the corrected invoice would
need that invoice's state (I/O), and would send a correction on behalf of a client who asked its series to be held.

Series patterns are ``fnmatch`` globs matched case-sensitively (``fnmatch.fnmatchcase``), like shell globs but with
no notion of path separators: ``*`` matches any run of characters **including** ``/``, so ``FV/*`` matches
``FV/2026/01/15`` and ``FV/*/2026`` matches ``FV/01/02/2026``; ``?`` matches one character; ``[...]`` is a character
class (``[!...]`` its negation). A literal ``[`` is written ``[[]``; an unclosed ``[`` is taken literally.
"""

from __future__ import annotations

import calendar
import fnmatch
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ksef_gateway.sales.validation import InvoiceFacts

MAX_PATTERN_LENGTH: Final = 100
MAX_SERIES_RULES: Final = 50
# Every month has a 28th: a later day would need a rule for the months that lack it.
MAX_BACKFILL_DAY: Final = 28


class SeriesAction(StrEnum):
    SEND = "send"
    HOLD = "hold"


class SeriesRule(BaseModel):
    """Invoice numbers matching ``pattern`` (a case-sensitive glob, see the module docstring) get ``action``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(min_length=1, max_length=MAX_PATTERN_LENGTH)
    action: SeriesAction

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, pattern: str) -> str:
        # Error texts never quote the pattern: it is a request value, and may end up in a problem document or a log.
        if any(unicodedata.category(char) == "Cc" for char in pattern):
            raise ValueError("the pattern contains a control character")
        # P_2 is read stripped (validation.read_facts), so a pattern with whitespace at either end can only match
        # through a wildcard there; it is almost always a typo that would silently never match.
        if pattern != pattern.strip():
            raise ValueError("the pattern starts or ends with whitespace")
        return pattern

    def matches(self, invoice_number: str) -> bool:
        return fnmatch.fnmatchcase(invoice_number, self.pattern)


class AutoSendRules(BaseModel):
    """One client's auto-send configuration, stored as JSON.

    - ``series``: evaluated in order, the first matching rule decides (at most ``MAX_SERIES_RULES``; a pattern may
      appear once, since a repeat could never decide);
    - ``default``: the action for a number that matches no series rule;
    - ``hold_b2c``: invoices to consumers (``InvoiceFacts.buyer_is_consumer``) are held, before any series rule;
    - ``backfill_day``: on that day of each month (1-28), the invoices of the previous month still held are sent;
      ``None`` means no backfill.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: list[SeriesRule] = Field(default_factory=list, max_length=MAX_SERIES_RULES)
    default: SeriesAction = SeriesAction.SEND
    # Strict: lax validation would read ``true`` as day 1 or ``"yes"`` as a flag, and a stored rule is not a form.
    hold_b2c: bool = Field(default=False, strict=True)
    backfill_day: int | None = Field(default=None, ge=1, le=MAX_BACKFILL_DAY, strict=True)

    @field_validator("series")
    @classmethod
    def _check_unique_patterns(cls, series: list[SeriesRule]) -> list[SeriesRule]:
        first: dict[str, int] = {}
        for position, rule in enumerate(series, start=1):
            if rule.pattern in first:
                raise ValueError(f"series rule {position} repeats the pattern of rule {first[rule.pattern]}")
            first[rule.pattern] = position
        return series

    @classmethod
    def default_rules(cls) -> Self:
        """The rules of a client who configured nothing: every invoice is sent at once, nothing to backfill."""
        return cls()


@dataclass(frozen=True)
class AutoSendDecision:
    """What ``decide`` answered: ``send`` at once or hold, which ``rule`` decided (``"b2c"``,
    ``"series:<pattern>"`` or ``"default"``) and why, in English and Polish, for the user to read."""

    send: bool
    rule: str
    reason_en: str
    reason_pl: str


def _series_decision(rule: SeriesRule) -> AutoSendDecision:
    pattern = rule.pattern
    if rule.action is SeriesAction.SEND:
        return AutoSendDecision(
            send=True,
            rule=f"series:{pattern}",
            reason_en=f"The invoice number matches the series '{pattern}': the client's rule sends it automatically",
            reason_pl=f"Numer faktury pasuje do serii „{pattern}” — reguła klienta: wysyłaj automatycznie",
        )
    return AutoSendDecision(
        send=False,
        rule=f"series:{pattern}",
        reason_en=f"The invoice number matches the series '{pattern}': the client's rule holds it",
        reason_pl=f"Numer faktury pasuje do serii „{pattern}” — reguła klienta: nie wysyłaj automatycznie",
    )


# (send, the client wrote series rules) → (reason_en, reason_pl). With no series at all, "matches none of the
# series" would describe rules the client never wrote.
_DEFAULT_REASONS: Final[dict[tuple[bool, bool], tuple[str, str]]] = {
    (True, True): (
        "The invoice number matches none of the client's series: the client's default sends it automatically",
        "Numer nie pasuje do żadnej serii — domyślna reguła klienta: wysyłaj automatycznie",
    ),
    (False, True): (
        "The invoice number matches none of the client's series: the client's default holds it",
        "Numer nie pasuje do żadnej serii — domyślna reguła klienta: nie wysyłaj automatycznie",
    ),
    (True, False): (
        "The client's default sends it automatically",
        "Domyślna reguła klienta: wysyłaj automatycznie",
    ),
    (False, False): (
        "The client's default holds it",
        "Domyślna reguła klienta: nie wysyłaj automatycznie",
    ),
}


def _default_decision(rules: AutoSendRules) -> AutoSendDecision:
    send = rules.default is SeriesAction.SEND
    reason_en, reason_pl = _DEFAULT_REASONS[send, bool(rules.series)]
    return AutoSendDecision(send=send, rule="default", reason_en=reason_en, reason_pl=reason_pl)


_B2C_HOLD: Final = AutoSendDecision(
    send=False,
    rule="b2c",
    reason_en="Invoice to a consumer (B2C): the client's rule holds it",
    reason_pl="Faktura dla konsumenta (B2C) — reguła klienta: nie wysyłaj automatycznie",
)


def decide(rules: AutoSendRules, facts: InvoiceFacts) -> AutoSendDecision:
    """Send ``facts``' invoice to KSeF at once, or hold it: B2C hold, then the series in order, then the default.

    A correction is decided like any other invoice, by its own buyer and number (see the module docstring).
    """
    if rules.hold_b2c and facts.buyer_is_consumer:
        return _B2C_HOLD
    for rule in rules.series:
        if rule.matches(facts.invoice_number):
            return _series_decision(rule)
    return _default_decision(rules)


def _month_before(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def backfill_due(
    rules: AutoSendRules, today: date, last_backfill_month: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The (year, month) whose held invoices are to be backfilled today, or ``None``.

    Month M is backfilled from day ``backfill_day`` of month M+1 on, once: ``last_backfill_month`` is the last month
    done (``None``: never). Being due "from that day on" rather than "on that day" is what catches up a day missed
    while the service was down, the next time it runs. The current month is never due: its invoices are still being
    issued.

    A missed backfill is caught up across a month boundary too (28 February missed: January is backfilled on 1
    March), but only for the latest month that fell due: after a longer gap, or when backfill is switched back on,
    older months stay held for a person to send. A backfill sends to the national system and cannot be taken back,
    so it never reaches further back than the latest month whose day has passed. For the same reason a client who
    never backfilled (who just switched it on) waits for the day itself.
    """
    day = rules.backfill_day
    if day is None:
        return None
    previous = _month_before(today.year, today.month)
    if today.day >= day:
        due = previous
    elif last_backfill_month is None:
        return None
    else:
        due = _month_before(*previous)
    if last_backfill_month is not None and last_backfill_month >= due:
        return None
    return due


def backfill_window(year: int, month: int) -> tuple[date, date]:
    """The first and last issue date (``InvoiceFacts.issue_date``, P_1) that the backfill of (year, month) covers."""
    last_day = calendar.monthrange(year, month)[1]
    return date(year, month, 1), date(year, month, last_day)
