"""auth-svc's relation state follows approval-svc's integration lifecycle. A subscription's name is its inbox
identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.settings import AuthSettings
from auth_svc.unit_of_work import Tx
from auth_svc.wiring import AuthService
from platform_common.auth.clock import system_clock
from platform_common.contracts.integrations import (
    INTEGRATION_TOPIC,
    IntegrationConsented,
    IntegrationConsentRequested,
    parse_integration_change,
)
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    settings = runtime.settings
    assert isinstance(settings, AuthSettings)
    service = AuthService(runtime.db.sessionmaker, runtime.outbox, settings, clock=system_clock)

    async def on_integration_changed(session: AsyncSession, envelope: Envelope) -> None:
        change = parse_integration_change(envelope.type, envelope.version, envelope.payload)
        if change is None:
            raise PermanentFailure(f"{envelope.type} v{envelope.version} is not an integration change auth-svc knows")
        name = change.client_name if isinstance(change, IntegrationConsentRequested) else None
        tx = Tx(session, service.clock)
        client_id = await service.relations.follow_integration(tx, change, name)
        if isinstance(change, IntegrationConsented) and change.client_email and client_id is not None:
            await service.members.invite_consenting_owner(tx, client_id, change.client_email, change.client_language)

    return (Subscription("auth-svc.relations.integration-changed", INTEGRATION_TOPIC, on_integration_changed),)
