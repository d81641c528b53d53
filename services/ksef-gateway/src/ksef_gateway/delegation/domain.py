"""Delegated access rules without I/O: which integration events apply, what a live check's answer means, and when
the answer changed (only then is ``credential.access_verified``/``credential.access_lost`` published).

The client grants the office's NIP InvoiceRead (and InvoiceWrite to send) as an entity permission; the office's
own certificate then authenticates in the client's context (REFERENCE.md §15). KSeF refuses a context where the
subject holds nothing with auth status 415, refuses tokens whose auth status changed with 400 21301 at redeem or
refresh, and answers 403 ``missing-permissions`` to an access token without the permission a call needs (§3, §14).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ksef_gateway.ksef.errors import KsefAuthFailed, KsefError, KsefForbidden

GRANT = "grant"
API_REVISION = 0  # a record set through the HTTP API; any integration event supersedes it


class AccessState(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    LOST = "lost"


@dataclass(frozen=True)
class DelegatedAccess:
    client_nip: str
    office_nip: str
    mode: str
    active: bool
    send_sales: bool
    revision: int
    state: AccessState
    verified_at: datetime | None
    lost_at: datetime | None
    lost_reason: str | None
    ksef_code: int | None
    permissions: tuple[str, ...]
    checked_at: datetime | None
    check_error: str | None
    next_check_at: datetime | None
    updated_by: str
    updated_at: datetime

    @property
    def usable(self) -> bool:
        """The office certificate may be used in the client's context (sync, sending)."""
        return self.active and self.state is not AccessState.LOST


def required_permissions(send_sales: bool) -> frozenset[str]:
    return frozenset({"InvoiceRead", "InvoiceWrite"}) if send_sales else frozenset({"InvoiceRead"})


@dataclass(frozen=True)
class IntegrationDecision:
    """What an ``integration.changed`` event does to the client's record: nothing (``apply`` false), or set it."""

    apply: bool
    active: bool = False
    office_nip: str | None = None
    send_sales: bool = False
    reset_check: bool = False  # a new office or a fresh activation: the answer is unknown until checked


def decide_integration(
    current: DelegatedAccess | None,
    *,
    revision: int,
    state: str,
    access_mode: str | None,
    office_nip: str,
    send_sales: bool,
) -> IntegrationDecision:
    """Events apply in revision order: an older or repeated revision changes nothing (redelivery, replays).

    Only an active integration in ``grant`` mode uses the office certificate; every other state (suspended,
    revoked, expired, ...) or mode stops it. An integration that never reached ``grant`` creates no record.
    """
    if current is not None and revision <= current.revision:
        return IntegrationDecision(apply=False)
    wanted = state == "active" and access_mode == GRANT
    if current is None and not wanted:
        return IntegrationDecision(apply=False)
    if not wanted:
        assert current is not None
        return IntegrationDecision(
            apply=True, active=False, office_nip=current.office_nip, send_sales=current.send_sales
        )
    reset = current is None or not current.active or current.office_nip != office_nip
    return IntegrationDecision(apply=True, active=True, office_nip=office_nip, send_sales=send_sales, reset_check=reset)


@dataclass(frozen=True)
class CheckAnswer:
    """A conclusive answer of KSeF about the office's access in the client's context."""

    granted: bool
    permissions: frozenset[str] = frozenset()
    reason: str | None = None
    ksef_code: int | None = None


def judge_permissions(permissions: frozenset[str], send_sales: bool) -> CheckAnswer:
    missing = sorted(required_permissions(send_sales) - permissions)
    if missing:
        return CheckAnswer(
            False,
            permissions,
            reason=f"the office lacks {' and '.join(missing)} in the client's context",
        )
    return CheckAnswer(True, permissions)


def refusal(error: BaseException) -> CheckAnswer | None:
    """A KSeF refusal of the office's access (the grant is gone or was never there); ``None`` for anything that
    says nothing about the grant (outage, 429, a bad request of ours)."""
    if isinstance(error, KsefAuthFailed):
        if error.auth_status == 100:  # the authentication timed out while still in progress: no answer
            return None
        return CheckAnswer(
            False, reason=f"KSeF refused the authentication: {error.status_description}", ksef_code=error.auth_status
        )
    if isinstance(error, KsefForbidden):
        return CheckAnswer(False, reason=f"KSeF refused access: {error.reason_code or error.description}")
    if isinstance(error, KsefError) and 21301 in error.codes:
        return CheckAnswer(False, reason=f"KSeF refused the authorisation: {error.description}", ksef_code=21301)
    return None


@dataclass(frozen=True)
class CheckTransition:
    state: AccessState
    event: AccessState | None  # VERIFIED or LOST when the answer changed; None when it stayed the same
    verified_at: datetime | None
    lost_at: datetime | None
    lost_reason: str | None
    ksef_code: int | None


def after_check(current: DelegatedAccess, answer: CheckAnswer, now: datetime) -> CheckTransition:
    """The record after a conclusive check; an event only on a change of the answer (unverified counts as no
    answer yet, so the first answer is always published)."""
    if answer.granted:
        changed = current.state is not AccessState.VERIFIED
        return CheckTransition(
            AccessState.VERIFIED,
            AccessState.VERIFIED if changed else None,
            verified_at=now if changed else current.verified_at,
            lost_at=None,
            lost_reason=None,
            ksef_code=None,
        )
    changed = current.state is not AccessState.LOST
    return CheckTransition(
        AccessState.LOST,
        AccessState.LOST if changed else None,
        verified_at=current.verified_at,
        lost_at=now if changed else current.lost_at,
        lost_reason=answer.reason,
        ksef_code=answer.ksef_code,
    )


def next_check(now: datetime, interval_s: float) -> datetime:
    return now + timedelta(seconds=interval_s)
