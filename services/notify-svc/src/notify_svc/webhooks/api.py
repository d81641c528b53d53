"""The webhook API of an organisation (permission ``webhooks.manage``): subscriptions, their delivery log, replay.

Another organisation's subscription or delivery answers 404, exactly like one that does not exist."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from notify_svc.webhooks.domain import DeliveryStatus
from notify_svc.webhooks.schemas import (
    AttemptOut,
    ClientDeliveryHealthOut,
    CreatedSubscription,
    DeliveryDetail,
    DeliveryHealthOut,
    DeliveryOut,
    MetricsOut,
    Replayed,
    ReplayIn,
    RotateSecretIn,
    SubscriptionIn,
    SubscriptionOut,
    SubscriptionPatch,
    TestEventIn,
)
from notify_svc.webhooks.service import NewSubscription, SubscriptionChanges, WebhookSubscriptions
from notify_svc.wiring import webhook_subscriptions
from platform_common.auth import require
from platform_common.auth.principal import Principal

router = APIRouter(prefix="/webhooks", tags=["webhooks"])
# Beside the platform's /ops endpoints (outbox, consumers, dead letters), for operators only.
ops_router = APIRouter(tags=["operations"])

Manager = Annotated[Principal, Depends(require("webhooks.manage"))]


def _service(request: Request) -> WebhookSubscriptions:
    return webhook_subscriptions(request.app.state.runtime)


Service = Annotated[WebhookSubscriptions, Depends(_service)]


@router.post("/subscriptions", status_code=201, response_model=CreatedSubscription, summary="Subscribe a receiver")
async def create_subscription(body: SubscriptionIn, principal: Manager, service: Service) -> CreatedSubscription:
    created, secret = await service.create(
        principal,
        NewSubscription(
            url=body.url,
            event_types=body.event_types,
            contact_email=body.contact_email,
            client_nips=body.client_nips,
            description=body.description,
            language=body.language,
        ),
    )
    return CreatedSubscription(**SubscriptionOut.of(created).model_dump(), secret=secret)


@router.get("/subscriptions", response_model=list[SubscriptionOut], summary="The organisation's subscriptions")
async def list_subscriptions(principal: Manager, service: Service) -> list[SubscriptionOut]:
    return [SubscriptionOut.of(s) for s in await service.of_organisation(principal)]


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def get_subscription(subscription_id: uuid.UUID, principal: Manager, service: Service) -> SubscriptionOut:
    return SubscriptionOut.of(await service.get(principal, subscription_id))


@router.patch("/subscriptions/{subscription_id}", response_model=SubscriptionOut, summary="Change or enable/disable")
async def update_subscription(
    subscription_id: uuid.UUID, body: SubscriptionPatch, principal: Manager, service: Service
) -> SubscriptionOut:
    changes = SubscriptionChanges(
        url=body.url,
        event_types=body.event_types,
        contact_email=body.contact_email,
        client_nips=body.client_nips,
        client_nips_given="client_nips" in body.model_fields_set,
        description=body.description,
        language=body.language,
        enabled=body.enabled,
    )
    return SubscriptionOut.of(await service.update(principal, subscription_id, changes))


@router.delete("/subscriptions/{subscription_id}", status_code=204, response_class=Response)
async def delete_subscription(subscription_id: uuid.UUID, principal: Manager, service: Service) -> Response:
    await service.delete(principal, subscription_id)
    return Response(status_code=204)


@router.post(
    "/subscriptions/{subscription_id}/rotate-secret",
    response_model=CreatedSubscription,
    summary="A new secret; the old one keeps signing during the overlap",
)
async def rotate_secret(
    subscription_id: uuid.UUID, principal: Manager, service: Service, body: RotateSecretIn | None = None
) -> CreatedSubscription:
    overlap = timedelta(hours=(body or RotateSecretIn()).overlap_hours)
    rotated, secret = await service.rotate_secret(principal, subscription_id, overlap)
    return CreatedSubscription(**SubscriptionOut.of(rotated).model_dump(), secret=secret)


@router.post(
    "/subscriptions/{subscription_id}/test",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send the catalogue's example of an event type, marked test",
)
async def send_test(
    subscription_id: uuid.UUID, principal: Manager, service: Service, body: TestEventIn | None = None
) -> DeliveryOut:
    event_type = (body or TestEventIn()).event_type
    return DeliveryOut.of(await service.send_test(principal, subscription_id, event_type))


@router.get(
    "/subscriptions/{subscription_id}/deliveries",
    response_model=list[DeliveryOut],
    summary="The delivery log, newest first",
)
async def list_deliveries(
    subscription_id: uuid.UUID,
    principal: Manager,
    service: Service,
    status: DeliveryStatus | None = None,
    before: Annotated[int | None, Query(ge=1, description="A cursor from the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    found = await service.deliveries(principal, subscription_id, status=status, before_seq=before, limit=limit)
    return [DeliveryOut.of(d) for d in found]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail, summary="One delivery and its attempts")
async def get_delivery(delivery_id: uuid.UUID, principal: Manager, service: Service) -> DeliveryDetail:
    delivery, attempts = await service.delivery(principal, delivery_id)
    return DeliveryDetail(**DeliveryOut.of(delivery).model_dump(), attempt_log=[AttemptOut.of(a) for a in attempts])


@router.post(
    "/deliveries/{delivery_id}/replay",
    status_code=202,
    response_model=Replayed,
    summary="Send one delivery again (same webhook-id)",
)
async def replay_delivery(delivery_id: uuid.UUID, principal: Manager, service: Service) -> Replayed:
    return Replayed(queued=await service.replay_delivery(principal, delivery_id))


@router.post(
    "/subscriptions/{subscription_id}/replay",
    status_code=202,
    response_model=Replayed,
    summary="Replay every failed delivery, or every event of some types in a time range",
)
async def replay_subscription(
    subscription_id: uuid.UUID, body: ReplayIn, principal: Manager, service: Service
) -> Replayed:
    queued = await service.replay(
        principal, subscription_id, failed=body.failed, event_types=body.event_types, start=body.start, end=body.end
    )
    return Replayed(queued=queued)


@router.get("/subscriptions/{subscription_id}/metrics", response_model=MetricsOut, summary="Success rate, latency")
async def subscription_metrics(
    subscription_id: uuid.UUID,
    principal: Manager,
    service: Service,
    window_h: Annotated[int, Query(ge=1, le=24 * 30)] = 24,
) -> MetricsOut:
    return MetricsOut.of(await service.metrics(principal, subscription_id, window_h))


@ops_router.get(
    "/ops/webhooks/clients",
    response_model=DeliveryHealthOut,
    summary="Operators: webhook failures and backlog per client NIP, across every organisation",
)
async def delivery_health(
    _operator: Annotated[Principal, Depends(require("ops"))],
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> DeliveryHealthOut:
    rows = await service.health_by_client(limit)
    return DeliveryHealthOut(as_of=datetime.now(UTC), clients=[ClientDeliveryHealthOut(**r.__dict__) for r in rows])
