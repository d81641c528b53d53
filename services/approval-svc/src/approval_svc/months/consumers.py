"""Handlers of the events month approval follows. A subscription's name is its inbox identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from approval_svc.wiring import Approval
from platform_common.contracts import StatusChanged
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    months = Approval.of(runtime).months

    async def on_status_changed(session: AsyncSession, envelope: Envelope) -> None:
        """buffer-svc's purchase entries, counted per month (sales documents share the topic and are skipped)."""
        if envelope.type != StatusChanged.event_type:
            raise PermanentFailure(f"{envelope.type} is not a status.changed this service reads")
        if envelope.client_nip is None:
            raise PermanentFailure("status.changed without the client's NIP in its envelope")
        try:
            event = envelope.parse(StatusChanged)
        except ValidationError as exc:
            fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
            raise PermanentFailure(f"status.changed does not match its contract (fields: {fields})") from None
        await months.entry_changed(session, event, envelope.client_nip)

    return (Subscription("approval-svc.months.status-changed", StatusChanged.topic, on_status_changed),)
