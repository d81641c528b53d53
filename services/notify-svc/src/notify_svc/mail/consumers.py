"""Handlers of the events that ask for an e-mail. Each subscription's name is its inbox identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.mail.repository import MailRepository
from notify_svc.mail.service import MailService
from notify_svc.settings import NotifySettings
from notify_svc.wiring import mail_sender
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.contracts.integrations import (
    INTEGRATION_TOPIC,
    IntegrationConsented,
    IntegrationConsentRequested,
    IntegrationRefused,
)
from platform_common.contracts.months import MONTH_TOPIC, MonthApproved, MonthLateArrival, MonthUnlocked
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.outbox import wake_after_commit
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    settings = runtime.settings
    assert isinstance(settings, NotifySettings)
    seal_key = settings.seal_key()
    if seal_key is None and settings.environment == "production":
        raise RuntimeError(
            "production needs the key invitation and reset links are sealed to: set NOTIFY_SEAL_PRIVATE_KEY or "
            "NOTIFY_SEAL_KEY_FILE (`notify-svc seal-keygen` prints a fresh pair)"
        )
    service = MailService(seal_key, default_language=settings.mail.default_language)
    sender = mail_sender(runtime)

    async def on_user_invited(session: AsyncSession, envelope: Envelope) -> None:
        await service.invitation_requested(MailRepository(session), envelope.id, envelope.parse(UserInvited))
        wake_after_commit(session, sender.wake)

    async def on_password_reset_requested(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.parse(PasswordResetRequested)
        await service.password_reset_requested(MailRepository(session), envelope.id, event)
        wake_after_commit(session, sender.wake)

    async def on_integration_changed(session: AsyncSession, envelope: Envelope) -> None:
        # The lifecycle shares one topic; only three of its changes ask for an e-mail.
        if envelope.type == IntegrationConsentRequested.event_type:
            event = envelope.parse(IntegrationConsentRequested)
            await service.consent_requested(MailRepository(session), envelope.id, event)
        elif envelope.type == IntegrationConsented.event_type:
            await service.consented(MailRepository(session), envelope.id, envelope.parse(IntegrationConsented))
        elif envelope.type == IntegrationRefused.event_type:
            await service.consent_refused(MailRepository(session), envelope.id, envelope.parse(IntegrationRefused))
        else:
            return
        wake_after_commit(session, sender.wake)

    month_contracts = {c.event_type: c for c in (MonthApproved, MonthUnlocked, MonthLateArrival)}

    async def on_month_changed(session: AsyncSession, envelope: Envelope) -> None:
        contract = month_contracts.get(envelope.type)
        if contract is None:
            raise PermanentFailure(f"{envelope.type} is not a month event this service knows")
        event = envelope.parse(contract)
        if await service.month_changed(MailRepository(session), envelope.id, event):  # type: ignore[arg-type]
            wake_after_commit(session, sender.wake)

    return (
        Subscription("notify-svc.mail.month-changed", MONTH_TOPIC, on_month_changed),
        Subscription("notify-svc.mail.integration-changed", INTEGRATION_TOPIC, on_integration_changed),
        Subscription("notify-svc.mail.user-invited", UserInvited.topic, on_user_invited),
        Subscription(
            "notify-svc.mail.password-reset-requested", PasswordResetRequested.topic, on_password_reset_requested
        ),
    )
