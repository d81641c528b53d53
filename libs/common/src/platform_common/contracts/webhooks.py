"""Events of notify-svc's webhook deliveries, themselves deliverable by webhook (to the organisation's other
subscriptions): an ERP learns that a subscription of its organisation stopped receiving events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from platform_common.messaging.envelope import EventContract

WEBHOOK_TOPIC = "webhook.changed"


class WebhookSubscriptionDisabled(EventContract):
    """A subscription failed to take one delivery for the whole retry window (about three days) and was disabled;
    its pending deliveries wait, and are sent in order once the subscription is enabled again."""

    event_type: ClassVar[str] = "webhook.subscription_disabled"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = WEBHOOK_TOPIC

    subscription_id: uuid.UUID
    organisation_id: uuid.UUID
    url: str = Field(max_length=2048)
    disabled_at: datetime
    failed_delivery_id: uuid.UUID
    failed_event_type: str
    attempts: int = Field(ge=1)
    last_error: str | None = Field(default=None, max_length=500)


WEBHOOK_EVENTS: tuple[type[EventContract], ...] = (WebhookSubscriptionDisabled,)

__all__ = ["WEBHOOK_EVENTS", "WEBHOOK_TOPIC", "WebhookSubscriptionDisabled"]
