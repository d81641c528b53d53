"""Handlers of the events the integrations react to. A subscription's name is its inbox identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from approval_svc.wiring import Approval
from platform_common.contracts.integrations import (
    CREDENTIAL_ACCESS_TOPIC,
    CredentialAccessLost,
    CredentialAccessVerified,
)
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime

_ACCESS = {c.event_type: c for c in (CredentialAccessVerified, CredentialAccessLost)}


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    integrations = Approval.of(runtime).integrations

    async def on_credential_access(session: AsyncSession, envelope: Envelope) -> None:
        """The gateway's live check of KSeF access: the integration shows whether it works (and why not)."""
        contract = _ACCESS.get(envelope.type)
        if contract is None:
            raise PermanentFailure(f"{envelope.type} is not a credential access event this service knows")
        await integrations.access_changed(session, envelope.parse(contract))

    return (Subscription("approval-svc.integrations.credential-access", CREDENTIAL_ACCESS_TOPIC, on_credential_access),)
