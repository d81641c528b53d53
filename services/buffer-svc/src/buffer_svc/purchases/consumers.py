"""Handlers of the events the buffer reacts to. A subscription's name is its inbox identity: never rename one."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.wiring import Buffer
from platform_common.contracts import InvoiceFetched, MonthApproved, MonthUnlocked
from platform_common.contracts.months import MONTH_TOPIC, MonthLateArrival
from platform_common.messaging.dispatch import PermanentFailure, Subscription
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    buffer = Buffer.of(runtime)

    async def on_invoice_fetched(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type != InvoiceFetched.event_type or envelope.version != InvoiceFetched.event_version:
            raise PermanentFailure(f"{envelope.type} v{envelope.version} is not an invoice.fetched this service reads")
        try:
            event = envelope.parse(InvoiceFetched)
        except ValidationError as exc:
            # The reason names the fields, never their values (they are a client's invoice data).
            fields = ", ".join(sorted({".".join(map(str, e["loc"])) for e in exc.errors()}))
            raise PermanentFailure(f"invoice.fetched does not match its contract (fields: {fields})") from None
        if envelope.client_nip is not None and envelope.client_nip != event.client_nip:
            raise PermanentFailure("invoice.fetched: the envelope's client NIP differs from the payload's")
        await buffer.purchases.ingest(session, event)

    async def on_month_changed(session: AsyncSession, envelope: Envelope) -> None:
        if envelope.type == MonthApproved.event_type:
            approved = envelope.parse(MonthApproved)
            if approved.revision is None:
                raise PermanentFailure("month.approved without a revision cannot be ordered against an unlock")
            await buffer.months.follow(
                session,
                approved.client_nip,
                approved.period,
                approved=True,
                revision=approved.revision,
                changed_at=approved.approved_at,
                changed_by=approved.approved_by,
            )
        elif envelope.type == MonthUnlocked.event_type:
            unlocked = envelope.parse(MonthUnlocked)
            await buffer.months.follow(
                session,
                unlocked.client_nip,
                unlocked.period,
                approved=False,
                revision=unlocked.revision,
                changed_at=unlocked.unlocked_at,
                changed_by=unlocked.unlocked_by,
            )
        elif envelope.type != MonthLateArrival.event_type:
            raise PermanentFailure(f"{envelope.type} is not a month event this service knows")

    return (
        Subscription("buffer-svc.purchases.invoice-fetched", InvoiceFetched.topic, on_invoice_fetched),
        Subscription("buffer-svc.months.month-changed", MONTH_TOPIC, on_month_changed),
    )
