"""The SMTP client side: one message to one server with aiosmtplib, its answer as a ``DeliveryResult``."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from notify_svc.mail.domain import DeliveryResult
from notify_svc.settings import SmtpSettings

_DETAIL_LIMIT = 500


class MailTransport(Protocol):
    async def send(self, message: EmailMessage) -> DeliveryResult: ...


def _detail(text: str) -> str:
    # A server's reply text is kept for the delivery log; it never holds the message (so never the link).
    return " ".join(text.split())[:_DETAIL_LIMIT]


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> DeliveryResult:
        s = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=s.host,
                port=s.port,
                username=s.username,
                password=s.password.get_secret_value() if s.password is not None else None,
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",  # never opportunistic: "none" is for loopback
                timeout=s.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # One recipient per message, so its refusal is the message's.
            first = exc.recipients[0]
            return DeliveryResult(False, first.code, _detail(first.message))
        except aiosmtplib.SMTPResponseException as exc:
            return DeliveryResult(False, exc.code, _detail(exc.message))
        except (aiosmtplib.SMTPException, OSError) as exc:
            # No reply code: refused connection, timeout, TLS failure, dropped connection. Worth another try.
            return DeliveryResult(False, None, _detail(f"{type(exc).__name__}: {exc}"))
        return DeliveryResult(True, 250, None)
