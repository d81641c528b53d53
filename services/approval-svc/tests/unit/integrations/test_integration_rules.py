"""The integration's lifecycle and its two secrets, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from approval_svc.integrations.domain import (
    ACTIVATION_ALPHABET,
    ActivationCode,
    CodeCheck,
    ConsentLink,
    IntegrationError,
    IntegrationState,
    Side,
    Transition,
    check_transition,
)

S, T = IntegrationState, Transition
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "transition", "side", "target"),
    [
        (S.REQUESTED, T.CONSENT, Side.CLIENT, S.CONSENTED),
        (S.REQUESTED, T.REFUSE, Side.CLIENT, S.REFUSED),
        (S.CONSENTED, T.ACTIVATE, Side.OFFICE, S.ACTIVE),
        (S.ACTIVE, T.SUSPEND, Side.CLIENT, S.SUSPENDED),
        (S.SUSPENDED, T.RESUME, Side.CLIENT, S.ACTIVE),
        (S.ACTIVE, T.REVOKE, Side.OFFICE, S.REVOKED),
        (S.SUSPENDED, T.REVOKE, Side.CLIENT, S.REVOKED),
        (S.CONSENTED, T.EXPIRE, Side.PLATFORM, S.EXPIRED),
        (S.REFUSED, T.RENEW, Side.OFFICE, S.REQUESTED),
        (S.REVOKED, T.RENEW, Side.OFFICE, S.REQUESTED),
    ],
)
def test_allowed_transitions(
    state: IntegrationState, transition: Transition, side: Side, target: IntegrationState
) -> None:
    assert check_transition(state, transition, side=side, suspended_by=side) is target


@pytest.mark.parametrize(
    ("state", "transition", "side", "code"),
    [
        (S.REQUESTED, T.ACTIVATE, Side.OFFICE, "invalid-transition"),  # no consent yet
        (S.ACTIVE, T.CONSENT, Side.CLIENT, "invalid-transition"),
        (S.REVOKED, T.RESUME, Side.OFFICE, "invalid-transition"),
        (S.ACTIVE, T.RENEW, Side.OFFICE, "invalid-transition"),  # an active integration is not asked again
        (S.REQUESTED, T.CONSENT, Side.OFFICE, "client-only"),  # the office never consents for its client
        (S.CONSENTED, T.ACTIVATE, Side.CLIENT, "office-only"),
    ],
)
def test_refused_transitions(state: IntegrationState, transition: Transition, side: Side, code: str) -> None:
    with pytest.raises(IntegrationError) as refused:
        check_transition(state, transition, side=side)
    assert refused.value.code == code


def test_a_suspension_is_lifted_by_the_side_that_imposed_it() -> None:
    with pytest.raises(IntegrationError) as refused:
        check_transition(S.SUSPENDED, T.RESUME, side=Side.OFFICE, suspended_by=Side.CLIENT)
    assert refused.value.code == "suspended-by-other-side"
    assert check_transition(S.SUSPENDED, T.RESUME, side=Side.CLIENT, suspended_by=Side.CLIENT) is S.ACTIVE


def test_activation_codes_have_over_40_bits_grouped_for_reading_aloud() -> None:
    import math

    code = ActivationCode.new()
    assert len(code.code) == 10 and set(code.code) <= set(ACTIVATION_ALPHABET)
    assert 10 * math.log2(len(ACTIVATION_ALPHABET)) > 40
    assert not set("01ILO") & set(ACTIVATION_ALPHABET), "no symbol a person confuses with another"
    assert code.display == f"{code.code[:5]}-{code.code[5:]}"
    assert len({ActivationCode.new().code for _ in range(200)}) == 200


def test_a_code_matches_as_typed_but_only_itself() -> None:
    code = ActivationCode.new()
    salt, digest = code.hash()
    assert code.code not in digest and len(digest) == 64
    assert ActivationCode.matches(code.display.lower(), salt, digest)
    assert ActivationCode.matches(f" {code.code[:5]} {code.code[5:]} ", salt, digest)
    other = ActivationCode.new()
    assert not ActivationCode.matches(other.code, salt, digest)
    assert not ActivationCode.matches("", salt, digest)
    # The same code hashes differently each time (salted): equal codes of two integrations do not show.
    assert code.hash()[1] != digest


def test_code_refusals_in_order_locked_then_expired() -> None:
    soon = NOW + timedelta(hours=1)
    assert CodeCheck(soon, 4, 5).refusal(NOW) is None
    locked = CodeCheck(soon, 5, 5).refusal(NOW)
    assert locked is not None and locked.code == "code-locked"
    expired = CodeCheck(NOW, 0, 5).refusal(NOW)
    assert expired is not None and expired.code == "code-expired"
    missing = CodeCheck(None, 0, 5).refusal(NOW)
    assert missing is not None and missing.code == "no-code"


def test_consent_links_are_random_and_stored_only_as_a_digest() -> None:
    link = ConsentLink.new()
    assert len(link.token) >= 43 and link.token not in link.digest
    assert ConsentLink.digest_of(link.token) == link.digest
    assert ConsentLink.new().token != link.token
