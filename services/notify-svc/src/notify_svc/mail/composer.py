"""Turn a queued mail into an RFC 5322 message: Jinja2 templates in Polish and English, plain text and HTML.

The HTML templates are autoescaped (an organisation name is whatever its admin typed); the text ones are not
HTML and are not escaped. The link is opened from its sealed form only here, right before sending, and lives
only in the message handed to the SMTP client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from notify_svc.mail.domain import MailKind

WARSAW = ZoneInfo("Europe/Warsaw")

_SUBJECTS: dict[tuple[MailKind, str], str] = {
    (MailKind.INVITATION, "pl"): "Zaproszenie do {organisation} w KSeF Hub",
    (MailKind.INVITATION, "en"): "Your invitation to {organisation} in KSeF Hub",
    (MailKind.PASSWORD_RESET, "pl"): "Ustawienie nowego hasła w KSeF Hub",
    (MailKind.PASSWORD_RESET, "en"): "Set a new password in KSeF Hub",
    (MailKind.CONSENT_REQUEST, "pl"): "{organisation} prosi o zgodę na dostęp do danych firmy w KSeF Hub",
    (MailKind.CONSENT_REQUEST, "en"): "{organisation} asks for consent to access your company's data in KSeF Hub",
    (MailKind.ACTIVATION_CODE, "pl"): "Kod aktywacyjny integracji z klientem NIP {client_nip}",
    (MailKind.ACTIVATION_CODE, "en"): "Activation code for the integration with client NIP {client_nip}",
    (MailKind.CONSENT_REFUSED, "pl"): "Klient NIP {client_nip} odmówił zgody na integrację",
    (MailKind.CONSENT_REFUSED, "en"): "Client NIP {client_nip} refused consent to the integration",
    (MailKind.MONTH_APPROVED, "pl"): "Klient {client} zatwierdził miesiąc {period}: faktury gotowe do księgowania",
    (MailKind.MONTH_APPROVED, "en"): "{client} approved {period}: invoices ready for booking",
    (MailKind.MONTH_UNLOCKED, "pl"): "Klient {client} odblokował miesiąc {period}",
    (MailKind.MONTH_UNLOCKED, "en"): "{client} unlocked {period}",
    (MailKind.MONTH_LATE_ARRIVAL, "pl"): "Nowa faktura w zatwierdzonym miesiącu {period} ({client})",
    (MailKind.MONTH_LATE_ARRIVAL, "en"): "A new invoice in the approved month {period} ({client})",
    (MailKind.WEBHOOK_DISABLED, "pl"): "Webhook wyłączony po nieudanych dostawach",
    (MailKind.WEBHOOK_DISABLED, "en"): "Webhook disabled after failed deliveries",
}

_ROLES: dict[tuple[str, str], str] = {
    ("office_admin", "pl"): "administrator biura",
    ("office_admin", "en"): "office administrator",
    ("office_accountant", "pl"): "księgowy",
    ("office_accountant", "en"): "accountant",
    ("client_owner", "pl"): "właściciel firmy",
    ("client_owner", "en"): "company owner",
    ("client_member", "pl"): "pracownik firmy",
    ("client_member", "en"): "company member",
}

_environment = Environment(
    loader=PackageLoader("notify_svc.mail", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,  # a template naming a value we do not pass is a bug, not an empty string
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class MailContent:
    kind: MailKind
    language: str
    recipient: str
    # Both None for a notice.
    link: str | None
    expires_at: datetime | None
    organisation_name: str | None = None
    role: str | None = None
    # An activation code mail's code (opened from its sealed form right before sending, like the link).
    code: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def role_label(role: str | None, language: str) -> str | None:
    if role is None:
        return None
    return _ROLES.get((role, language), role)


def _instant(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _warsaw(moment: datetime | None) -> str:
    return moment.astimezone(WARSAW).strftime("%Y-%m-%d %H:%M") if moment is not None else ""


def compose(content: MailContent, *, sender: str, message_id: str, now: datetime) -> EmailMessage:
    context = {
        "link": content.link or "",
        "expires_at": _warsaw(content.expires_at),
        "organisation": content.organisation_name or "",
        "role": role_label(content.role, content.language) or "",
        "code": content.code or "",
        "office_nip": content.details.get("office_nip", ""),
        "client_nip": content.details.get("client_nip", ""),
        "send_sales": bool(content.details.get("send_sales")),
        "client_name": content.details.get("client_name") or "",
        "integration_id": content.details.get("integration_id", ""),
        "refused_at": _warsaw(_instant(content.details.get("refused_at"))),
        # A month's notices.
        "period": content.details.get("period", ""),
        "changed_at": _warsaw(_instant(content.details.get("changed_at"))),
        "book_count": content.details.get("book_count", 0),
        "dont_book_count": content.details.get("dont_book_count", 0),
        "ksef_number": content.details.get("ksef_number", ""),
        "late_arrivals": content.details.get("late_arrivals", 0),
        "to_office": content.details.get("side") == "office",
        # A disabled webhook's notice.
        "webhook_url": content.details.get("url", ""),
        "subscription_id": content.details.get("subscription_id", ""),
        "failed_event_type": content.details.get("failed_event_type", ""),
        "attempts": content.details.get("attempts", 0),
        "last_error": content.details.get("last_error") or "",
    }
    client = context["client_name"] or f"NIP {context['client_nip']}"
    name = f"{content.kind.value}.{content.language}"
    message = EmailMessage()
    message["Subject"] = _SUBJECTS[(content.kind, content.language)].format(
        organisation=context["organisation"], client_nip=context["client_nip"], client=client, period=context["period"]
    )
    message["From"] = sender
    message["To"] = content.recipient
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    # Automated mail (RFC 3834): no vacation auto-replies to a no-reply sender.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_environment.get_template(f"{name}.txt").render(context))
    message.add_alternative(_environment.get_template(f"{name}.html").render(context), subtype="html")
    # After the parts exist: turning the message multipart moves its Content-* headers into the first part.
    message["Content-Language"] = content.language
    return message
