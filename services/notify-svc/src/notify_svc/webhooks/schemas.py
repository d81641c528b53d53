"""Request and response bodies of the webhook API. A secret appears only in ``CreatedSubscription``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from notify_svc.webhooks.domain import DeliveryStatus, message_id
from notify_svc.webhooks.repository import Attempt, Delivery, Subscription
from notify_svc.webhooks.service import SubscriptionMetrics

_EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,255}$"


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="https URL of the receiver (no redirects are followed).")
    event_types: list[str] = Field(
        min_length=1, max_length=100, description='Event types (GET /webhooks/event-types), or ["*"] for all.'
    )
    contact_email: str = Field(pattern=_EMAIL, description="Told when the subscription is disabled.")
    client_nips: list[str] | None = Field(
        default=None, max_length=1000, description="Only events about these clients (default: every client)."
    )
    description: str | None = Field(default=None, max_length=200)
    language: Literal["pl", "en"] = "pl"


class SubscriptionPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    event_types: list[str] | None = Field(default=None, min_length=1, max_length=100)
    contact_email: str | None = Field(default=None, pattern=_EMAIL)
    client_nips: list[str] | None = Field(default=None, max_length=1000, description="null: every client")
    description: str | None = Field(default=None, max_length=200)
    language: Literal["pl", "en"] | None = None
    enabled: bool | None = Field(default=None, description="true resumes the waiting deliveries, in order.")


class SubscriptionOut(BaseModel):
    id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    client_nips: list[str] | None
    contact_email: str
    language: str
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    # During a rotation's overlap the previous secret still signs, until then.
    previous_secret_valid_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, s: Subscription) -> SubscriptionOut:
        return cls(
            id=s.id,
            url=s.url,
            description=s.description,
            event_types=s.event_types,
            client_nips=s.client_nips,
            contact_email=s.contact_email,
            language=s.language,
            enabled=s.enabled,
            disabled_at=s.disabled_at,
            disabled_reason=s.disabled_reason,
            previous_secret_valid_until=s.previous_secret_until if s.previous_secret_sealed else None,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class CreatedSubscription(SubscriptionOut):
    secret: str = Field(description="The signing secret (whsec_...). Shown only now: store it.")


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: int = Field(default=24, ge=0, description="How long the previous secret keeps signing too.")


class TestEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(default="invoice.fetched", max_length=64)


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    failed: bool = Field(default=False, description="Every failed delivery of the subscription.")
    event_types: list[str] | None = Field(default=None, max_length=100)
    start: datetime | None = Field(default=None, alias="from")
    end: datetime | None = Field(default=None, alias="to")


class Replayed(BaseModel):
    queued: int


class DeliveryOut(BaseModel):
    id: uuid.UUID
    webhook_id: str = Field(description="The webhook-id header: the same for every attempt and replay.")
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    client_nip: str | None
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    cursor: int = Field(description="Pass as before= to page on.")

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            webhook_id=message_id(d.id),
            subscription_id=d.subscription_id,
            event_id=d.event_id,
            event_type=d.event_type,
            client_nip=d.ordering_key or None,
            status=DeliveryStatus(d.status),
            attempts=d.attempts,
            created_at=d.created_at,
            next_attempt_at=d.next_attempt_at if d.status == DeliveryStatus.PENDING else None,
            last_attempt_at=d.last_attempt_at,
            delivered_at=d.delivered_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            cursor=d.seq,
        )


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int
    ok: bool
    error: str | None
    response_excerpt: str | None

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(**a.__dict__)


class DeliveryDetail(DeliveryOut):
    attempt_log: list[AttemptOut]


class MetricsOut(BaseModel):
    window_h: int
    attempts: int
    successes: int
    success_rate: float | None
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    backlog: int
    oldest_pending_age_s: float | None
    by_status: dict[str, int]

    @classmethod
    def of(cls, m: SubscriptionMetrics) -> MetricsOut:
        return cls(**m.__dict__)


class ClientDeliveryHealthOut(BaseModel):
    client_nip: str = Field(description='The client the events concern; "" for events about no client.')
    failed: int = Field(description="Deliveries given up on after their retry window (replayable).")
    retrying: int = Field(description="Pending deliveries that have failed at least once.")
    backlog: int = Field(description="Every pending delivery.")
    last_failure_at: datetime | None


class DeliveryHealthOut(BaseModel):
    as_of: datetime
    clients: list[ClientDeliveryHealthOut]
