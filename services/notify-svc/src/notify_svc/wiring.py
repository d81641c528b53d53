"""The parts of one notify-svc runtime that its consumers, components and routers share (one of each per
runtime)."""

from __future__ import annotations

import weakref

from notify_svc.mail.sender import MailSender
from notify_svc.mail.smtp import SmtpTransport
from notify_svc.settings import NotifySettings
from notify_svc.webhooks.gauges import register_gauges
from notify_svc.webhooks.sender import WebhookSender
from notify_svc.webhooks.service import WebhookSubscriptions
from notify_svc.webhooks.targets import TargetPolicy
from notify_svc.webhooks.transport import WebhookTransport
from platform_common.runtime import ServiceRuntime
from platform_common.secret_box import SecretBox

_SENDERS: weakref.WeakKeyDictionary[ServiceRuntime, MailSender] = weakref.WeakKeyDictionary()
_WEBHOOK_SENDERS: weakref.WeakKeyDictionary[ServiceRuntime, WebhookSender] = weakref.WeakKeyDictionary()
_SUBSCRIPTIONS: weakref.WeakKeyDictionary[ServiceRuntime, WebhookSubscriptions] = weakref.WeakKeyDictionary()


def _settings(runtime: ServiceRuntime) -> NotifySettings:
    settings = runtime.settings
    assert isinstance(settings, NotifySettings)
    return settings


def mail_sender(runtime: ServiceRuntime) -> MailSender:
    sender = _SENDERS.get(runtime)
    if sender is None:
        settings = _settings(runtime)
        sender = _SENDERS[runtime] = MailSender(
            runtime.db,
            SmtpTransport(settings.smtp),
            smtp=settings.smtp,
            settings=settings.mail,
            seal_key=settings.seal_key(),
        )
    return sender


def target_policy(settings: NotifySettings) -> TargetPolicy:
    hooks = settings.webhooks
    return TargetPolicy.from_strings(require_https=hooks.require_https, allowed=hooks.allowed_networks)


def webhook_sender(runtime: ServiceRuntime) -> WebhookSender:
    sender = _WEBHOOK_SENDERS.get(runtime)
    if sender is None:
        settings = _settings(runtime)
        hooks = settings.webhooks
        # Refused at start, not in the settings: `migrate` needs no key.
        if settings.environment == "production" and hooks.secrets_key is None:
            raise RuntimeError("production needs NOTIFY_WEBHOOKS__SECRETS_KEY (base64 of 32 random bytes)")
        transport = WebhookTransport(
            target_policy(settings),
            connect_timeout_s=hooks.connect_timeout_s,
            read_timeout_s=hooks.read_timeout_s,
            max_response_bytes=hooks.max_response_bytes,
        )
        sender = _WEBHOOK_SENDERS[runtime] = WebhookSender(
            runtime.db,
            transport,
            settings=hooks,
            box=SecretBox(hooks.secret_box_key()),
            access=runtime.client_access,
            outbox=runtime.outbox,
            mail_wake=mail_sender(runtime).wake,
            meter=runtime.telemetry.meter_provider.get_meter("notify-svc.webhooks"),
        )
        register_gauges(runtime.gauges, runtime.db)
    return sender


def webhook_subscriptions(runtime: ServiceRuntime) -> WebhookSubscriptions:
    service = _SUBSCRIPTIONS.get(runtime)
    if service is None:
        settings = _settings(runtime)
        sender = webhook_sender(runtime)
        service = _SUBSCRIPTIONS[runtime] = WebhookSubscriptions(
            runtime.db,
            SecretBox(settings.webhooks.secret_box_key()),
            settings.webhooks,
            target_policy(settings),
            runtime.client_access,
            wake=sender.wake.set,
        )
    return service
