"""Every topic that carries a public event feeds the webhook fan-out. Each subscription's name is its inbox
identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.webhooks.service import EventFanOut
from notify_svc.wiring import webhook_sender
from platform_common.contracts.public import PUBLIC_EVENTS
from platform_common.messaging.dispatch import Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.outbox import wake_after_commit
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    fan_out = EventFanOut(runtime.client_access)
    sender = webhook_sender(runtime)

    async def on_public_event(session: AsyncSession, envelope: Envelope) -> None:
        if await fan_out.received(session, envelope):
            wake_after_commit(session, sender.wake)

    topics = sorted({event.contract.topic for event in PUBLIC_EVENTS.values()})
    return tuple(Subscription(f"notify-svc.webhooks.{topic}", topic, on_public_event) for topic in topics)
