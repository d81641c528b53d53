"""Delegated access rules: which integration events apply, what KSeF's answers mean, when an event is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ksef_gateway.delegation.domain import (
    AccessState,
    CheckAnswer,
    DelegatedAccess,
    IntegrationDecision,
    after_check,
    decide_integration,
    judge_permissions,
    refusal,
)
from ksef_gateway.ksef.errors import KsefAuthFailed, KsefError, KsefForbidden, KsefRateLimited, KsefUnavailable

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
OFFICE, OTHER_OFFICE = "5260250216", "1112223303"


def access(**overrides: object) -> DelegatedAccess:
    values: dict[str, object] = {
        "client_nip": "7777777702",
        "office_nip": OFFICE,
        "mode": "grant",
        "active": True,
        "send_sales": False,
        "revision": 3,
        "state": AccessState.VERIFIED,
        "verified_at": NOW - timedelta(hours=1),
        "lost_at": None,
        "lost_reason": None,
        "ksef_code": None,
        "permissions": ("InvoiceRead",),
        "checked_at": NOW - timedelta(minutes=15),
        "check_error": None,
        "next_check_at": NOW,
        "updated_by": "test",
        "updated_at": NOW - timedelta(hours=1),
    }
    values.update(overrides)
    return DelegatedAccess(**values)  # type: ignore[arg-type]


def decide(
    current: DelegatedAccess | None, revision: int, state: str, mode: str | None = "grant", office: str = OFFICE
) -> IntegrationDecision:
    return decide_integration(
        current, revision=revision, state=state, access_mode=mode, office_nip=office, send_sales=False
    )


class TestDecideIntegration:
    def test_an_activation_in_grant_mode_creates_an_unverified_record(self) -> None:
        decision = decide(None, 1, "active")
        assert decision.apply and decision.active and decision.reset_check and decision.office_nip == OFFICE

    def test_a_token_mode_or_a_state_other_than_active_creates_nothing(self) -> None:
        assert not decide(None, 1, "active", mode="token").apply
        assert not decide(None, 1, "consented").apply
        assert not decide(None, 2, "revoked").apply

    def test_older_and_repeated_revisions_are_ignored(self) -> None:
        assert not decide(access(revision=3), 3, "revoked").apply
        assert not decide(access(revision=3), 2, "active").apply

    def test_suspension_and_revocation_stop_it(self) -> None:
        for state in ("suspended", "revoked", "expired"):
            decision = decide(access(), 4, state)
            assert decision.apply and not decision.active

    def test_switching_to_token_mode_stops_it(self) -> None:
        decision = decide(access(), 4, "active", mode="token")
        assert decision.apply and not decision.active

    def test_a_resume_resets_the_answer_but_a_repeat_activation_of_the_same_office_keeps_it(self) -> None:
        assert decide(access(active=False), 5, "active").reset_check
        assert not decide(access(), 4, "active").reset_check
        assert decide(access(), 4, "active", office=OTHER_OFFICE).reset_check


class TestAnswers:
    def test_permissions_cover_the_scope(self) -> None:
        assert judge_permissions(frozenset({"InvoiceRead"}), send_sales=False).granted
        missing = judge_permissions(frozenset({"InvoiceRead"}), send_sales=True)
        assert not missing.granted and "InvoiceWrite" in (missing.reason or "")

    def test_refusals_of_the_grant(self) -> None:
        no_permission = refusal(KsefAuthFailed(415, "Brak uprawnień", [], reference_number=None))
        assert no_permission is not None and no_permission.ksef_code == 415
        refused = refusal(KsefError("Brak autoryzacji.", http_status=400, codes=[21301]))
        assert refused is not None and refused.ksef_code == 21301
        assert refusal(KsefForbidden("forbidden", http_status=403, reason_code="missing-permissions")) is not None

    def test_no_answer_is_no_refusal(self) -> None:
        assert refusal(KsefUnavailable("down")) is None
        assert refusal(KsefRateLimited("429", http_status=429)) is None
        assert refusal(KsefAuthFailed(100, "W toku", [], reference_number=None)) is None
        assert refusal(KsefError("bad input", http_status=400, codes=[21405])) is None


class TestAfterCheck:
    def test_the_first_answer_is_published(self) -> None:
        granted = after_check(access(state=AccessState.UNVERIFIED, verified_at=None), CheckAnswer(True), NOW)
        assert granted.event is AccessState.VERIFIED and granted.verified_at == NOW
        lost = after_check(access(state=AccessState.UNVERIFIED), CheckAnswer(False, reason="415", ksef_code=415), NOW)
        assert lost.event is AccessState.LOST and lost.lost_at == NOW and lost.ksef_code == 415

    def test_the_same_answer_again_publishes_nothing(self) -> None:
        assert after_check(access(), CheckAnswer(True), NOW).event is None
        was_lost = access(state=AccessState.LOST, lost_at=NOW - timedelta(hours=1))
        again = after_check(was_lost, CheckAnswer(False, reason="415", ksef_code=415), NOW)
        assert again.event is None and again.lost_at == NOW - timedelta(hours=1)

    def test_a_regained_grant_is_published(self) -> None:
        regained = after_check(access(state=AccessState.LOST, lost_at=NOW), CheckAnswer(True), NOW)
        assert regained.event is AccessState.VERIFIED and regained.lost_at is None
