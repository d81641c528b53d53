"""Composing a mail from its templates, and what an SMTP answer means for it: no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from notify_svc.mail.composer import MailContent, compose
from notify_svc.mail.domain import (
    AttemptOutcome,
    DeliveryResult,
    MailKind,
    RetryPolicy,
    language_of,
    message_id,
    outcome_of,
)

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
LINK = "https://hub.example/auth/invitations/accept?token=abc&x=1"
POLICY = RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=1), give_up_after=timedelta(days=3))


def _invitation(language: str, organisation: str = "Biuro Rachunkowe Kowalski") -> MailContent:
    return MailContent(
        kind=MailKind.INVITATION,
        language=language,
        recipient="anna@example.com",
        link=LINK,
        expires_at=datetime(2026, 12, 11, 12, 30, tzinfo=UTC),
        organisation_name=organisation,
        role="office_accountant",
    )


def _compose(content: MailContent) -> object:
    return compose(content, sender="KSeF Hub <no-reply@hub.example>", message_id="<m-1@hub.example>", now=NOW)


@pytest.mark.parametrize(
    ("language", "subject", "phrase", "role"),
    [
        ("pl", "Zaproszenie do Biuro Rachunkowe Kowalski w KSeF Hub", "wygasa 2026-12-11 13:30", "księgowy"),
        ("en", "Your invitation to Biuro Rachunkowe Kowalski in KSeF Hub", "expires at 2026-12-11 13:30", "accountant"),
    ],
)
def test_an_invitation_in_the_recipients_language_with_the_link_and_the_expiry_in_warsaw_time(
    language: str, subject: str, phrase: str, role: str
) -> None:
    message = compose(
        _invitation(language), sender="KSeF Hub <no-reply@hub.example>", message_id="<m-1@hub.example>", now=NOW
    )
    assert message["Subject"] == subject
    assert (message["To"], message["Message-ID"], message["Content-Language"]) == (
        "anna@example.com",
        "<m-1@hub.example>",
        language,
    )
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert LINK in text and phrase in text and role in text
    assert 'href="https://hub.example/auth/invitations/accept?token=abc&amp;x=1"' in html
    assert f'<html lang="{language}">' in html


def test_html_escapes_what_an_organisation_admin_typed_and_the_text_part_keeps_it_as_typed() -> None:
    message = compose(
        _invitation("en", organisation='<script>alert("x")</script> & Co'),
        sender="KSeF Hub <no-reply@hub.example>",
        message_id="<m-1@hub.example>",
        now=NOW,
    )
    html = message.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; Co" in html
    assert '<script>alert("x")</script> & Co' in text


@pytest.mark.parametrize("language", ["pl", "en"])
def test_a_password_reset_mail_exists_in_both_languages(language: str) -> None:
    content = MailContent(MailKind.PASSWORD_RESET, language, "jan@example.com", LINK, NOW + timedelta(hours=1))
    message = compose(content, sender="KSeF Hub <no-reply@hub.example>", message_id="<m-2@hub.example>", now=NOW)
    assert LINK in message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert message["Auto-Submitted"] == "auto-generated"


@pytest.mark.parametrize(
    ("language", "phrase"),
    [
        ("pl", "klient (NIP 1112223303) odmówił 2026-12-04 22:00 (czasu warszawskiego)"),
        ("en", "the client (NIP 1112223303) refused consent to the integration with Biuro on 2026-12-04 22:00"),
    ],
)
def test_a_refusal_notice_has_no_link_and_names_what_was_refused(language: str, phrase: str) -> None:
    details = {"client_nip": "1112223303", "send_sales": True, "refused_at": NOW.isoformat(), "integration_id": "i-1"}
    content = MailContent(
        MailKind.CONSENT_REFUSED, language, "biuro@example.com", None, None, organisation_name="Biuro", details=details
    )
    text = _compose(content).get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined]
    assert phrase in text
    # Sending was asked too, so the notice says so; no link, so no dangling "http".
    assert ("faktur sprzedażowych" if language == "pl" else "sales invoices") in text and "http" not in text


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (DeliveryResult(True, 250), AttemptOutcome.SENT),
        (DeliveryResult(False, 451, "4.3.0 Try again later"), AttemptOutcome.RETRY),
        (DeliveryResult(False, 421, "Service not available"), AttemptOutcome.RETRY),
        (DeliveryResult(False, None, "ConnectionRefusedError"), AttemptOutcome.RETRY),
        (DeliveryResult(False, 550, "5.1.1 No such user"), AttemptOutcome.FAILED),
        (DeliveryResult(False, 554, "Transaction failed"), AttemptOutcome.FAILED),
    ],
)
def test_5xx_fails_for_good_4xx_and_no_answer_are_tried_again(result: DeliveryResult, expected: AttemptOutcome) -> None:
    assert outcome_of(result, POLICY, now=NOW, queued_at=NOW - timedelta(minutes=5)) is expected


def test_temporary_failures_give_up_after_the_limit() -> None:
    result = DeliveryResult(False, 451, "later")
    assert outcome_of(result, POLICY, now=NOW, queued_at=NOW - timedelta(days=3)) is AttemptOutcome.FAILED
    assert outcome_of(result, POLICY, now=NOW, queued_at=NOW - timedelta(days=2)) is AttemptOutcome.RETRY


def test_retries_back_off_doubling_up_to_the_cap() -> None:
    waits = [(POLICY.next_attempt_at(NOW, n) - NOW).total_seconds() for n in (1, 2, 3, 8, 20)]
    assert waits == [30, 60, 120, 3600, 3600]


def test_language_falls_back_to_the_default_and_message_ids_are_stable() -> None:
    assert (language_of("en", "pl"), language_of(None, "pl"), language_of("de", "en")) == ("en", "pl", "en")
    mail_id = uuid.uuid4()
    assert message_id(mail_id, "hub.example") == message_id(mail_id, "hub.example") == f"<{mail_id}@hub.example>"
