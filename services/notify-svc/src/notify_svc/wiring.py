"""The parts of one notify-svc runtime that its consumers and components share (one sender per runtime)."""

from __future__ import annotations

import weakref

from notify_svc.mail.sender import MailSender
from notify_svc.mail.smtp import SmtpTransport
from notify_svc.settings import NotifySettings
from platform_common.runtime import ServiceRuntime

_SENDERS: weakref.WeakKeyDictionary[ServiceRuntime, MailSender] = weakref.WeakKeyDictionary()


def mail_sender(runtime: ServiceRuntime) -> MailSender:
    sender = _SENDERS.get(runtime)
    if sender is None:
        settings = runtime.settings
        assert isinstance(settings, NotifySettings)
        sender = _SENDERS[runtime] = MailSender(
            runtime.db,
            SmtpTransport(settings.smtp),
            smtp=settings.smtp,
            settings=settings.mail,
            seal_key=settings.seal_key(),
        )
    return sender
