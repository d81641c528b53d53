"""Handlers of approval-svc's integration lifecycle. A subscription's name is its inbox identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.wiring import Gateway
from platform_common.contracts.integrations import INTEGRATION_TOPIC, parse_integration_change
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    async def on_integration_changed(session: AsyncSession, envelope: Envelope) -> None:
        try:
            change = parse_integration_change(envelope.type, envelope.version, envelope.payload)
        except ValueError as exc:
            raise PermanentFailure(f"malformed {envelope.type}: {type(exc).__name__}") from None
        if change is None:
            return  # a type or version this gateway does not know: not ours to act on
        # Every type carries the state after the change, so activated/resumed start and suspended/revoked (or any
        # other non-active state) stop the delegated access, in revision order.
        await Gateway.of(runtime).delegation.apply_integration(session, change)

    return (Subscription("ksef-gateway.delegation.integration-changed", INTEGRATION_TOPIC, on_integration_changed),)
