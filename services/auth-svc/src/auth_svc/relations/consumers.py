"""auth-svc's relation state follows approval-svc's integration lifecycle. A subscription's name is its inbox
identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from auth_svc.organisations.service import Organisations
from auth_svc.relations.service import Relations
from auth_svc.unit_of_work import Tx, UnitOfWork
from platform_common.auth.clock import system_clock
from platform_common.contracts.integrations import (
    INTEGRATION_TOPIC,
    IntegrationConsentRequested,
    parse_integration_change,
)
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    uow = UnitOfWork(runtime.db.sessionmaker, system_clock)
    organisations = Organisations(uow)
    relations = Relations(uow, organisations)
    organisations.relations = relations

    async def on_integration_changed(session: AsyncSession, envelope: Envelope) -> None:
        change = parse_integration_change(envelope.type, envelope.version, envelope.payload)
        if change is None:
            raise PermanentFailure(f"{envelope.type} v{envelope.version} is not an integration change auth-svc knows")
        name = change.client_name if isinstance(change, IntegrationConsentRequested) else None
        await relations.follow_integration(Tx(session, uow.clock), change, name)

    return (Subscription("auth-svc.relations.integration-changed", INTEGRATION_TOPIC, on_integration_changed),)
