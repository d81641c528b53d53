"""The queries of the webhook capability: subscriptions, received events, deliveries and their attempt log."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, insert, or_, select, type_coerce, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.db import webhook_attempt, webhook_delivery, webhook_event, webhook_subscription
from notify_svc.webhooks.domain import DeliveryStatus, ReceivedEvent, SubscriptionScope, delivery_id
from platform_common.db import UtcDateTime

_PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True)
class Subscription:
    id: uuid.UUID
    organisation_id: uuid.UUID
    organisation_kind: str
    organisation_nips: list[str]
    url: str
    description: str | None
    event_types: list[str]
    client_nips: list[str] | None
    contact_email: str
    language: str
    secret_sealed: str
    previous_secret_sealed: str | None
    previous_secret_until: datetime | None
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    created_by: str
    updated_at: datetime

    @property
    def scope(self) -> SubscriptionScope:
        return SubscriptionScope(
            id=self.id,
            organisation_id=self.organisation_id,
            organisation_kind=self.organisation_kind,
            organisation_nips=frozenset(self.organisation_nips),
            event_types=frozenset(self.event_types),
            client_nips=frozenset(self.client_nips) if self.client_nips is not None else None,
        )


@dataclass(frozen=True)
class Delivery:
    seq: int
    id: uuid.UUID
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    ordering_key: str
    status: str
    attempts: int
    window_attempts: int
    created_at: datetime
    next_attempt_at: datetime
    lease_until: datetime | None
    window_started_at: datetime | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None


@dataclass(frozen=True)
class Attempt:
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int
    ok: bool
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True)
class DueDelivery:
    """A claimed delivery with what its attempt needs."""

    delivery: Delivery
    event: ReceivedEvent
    subscription: Subscription


def _subscription(row: Row[Any]) -> Subscription:
    return Subscription(**{c.name: row._mapping[c.name] for c in webhook_subscription.c})


def _delivery(row: Row[Any]) -> Delivery:
    return Delivery(**{c.name: row._mapping[c.name] for c in webhook_delivery.c})


def event_of(row: Row[Any], prefix: str = "") -> ReceivedEvent:
    m = row._mapping
    return ReceivedEvent(
        id=m[f"{prefix}id"],
        event_type=m[f"{prefix}event_type"],
        event_version=m[f"{prefix}event_version"],
        occurred_at=m[f"{prefix}occurred_at"],
        client_nip=m[f"{prefix}client_nip"],
        office_id=m[f"{prefix}office_id"],
        organisation_id=m[f"{prefix}organisation_id"],
        data=m[f"{prefix}data"],
        link=m[f"{prefix}link"],
        test=m[f"{prefix}test"],
    )


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- subscriptions ------------------------------------------------------------------------------------------

    async def add_subscription(self, values: dict[str, Any]) -> None:
        await self.session.execute(insert(webhook_subscription).values(values))

    async def subscription(self, subscription_id: uuid.UUID, *, for_update: bool = False) -> Subscription | None:
        query = select(webhook_subscription).where(webhook_subscription.c.id == subscription_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return _subscription(row) if row is not None else None

    async def subscriptions_of(self, organisation_id: uuid.UUID) -> list[Subscription]:
        rows = await self.session.execute(
            select(webhook_subscription)
            .where(webhook_subscription.c.organisation_id == organisation_id)
            .order_by(webhook_subscription.c.created_at, webhook_subscription.c.id)
        )
        return [_subscription(r) for r in rows]

    async def count_of(self, organisation_id: uuid.UUID) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(webhook_subscription)
                .where(webhook_subscription.c.organisation_id == organisation_id)
            )
            or 0
        )

    async def enabled_subscriptions(self) -> list[Subscription]:
        rows = await self.session.execute(select(webhook_subscription).where(webhook_subscription.c.enabled))
        return [_subscription(r) for r in rows]

    async def update_subscription(self, subscription_id: uuid.UUID, values: dict[str, Any]) -> None:
        await self.session.execute(
            update(webhook_subscription).where(webhook_subscription.c.id == subscription_id).values(values)
        )

    async def delete_subscription(self, subscription_id: uuid.UUID) -> None:
        # Explicitly, not only by the foreign keys' cascade: SQLite enforces it only with foreign keys on.
        seqs = select(webhook_delivery.c.seq).where(webhook_delivery.c.subscription_id == subscription_id)
        await self.session.execute(webhook_attempt.delete().where(webhook_attempt.c.delivery_seq.in_(seqs)))
        await self.session.execute(
            webhook_delivery.delete().where(webhook_delivery.c.subscription_id == subscription_id)
        )
        await self.session.execute(webhook_subscription.delete().where(webhook_subscription.c.id == subscription_id))

    # --- events -------------------------------------------------------------------------------------------------

    async def add_event(self, event: ReceivedEvent, received_at: datetime) -> bool:
        """False when it is already held (a replayed dead letter that passed the inbox again)."""
        held = await self.session.scalar(select(webhook_event.c.id).where(webhook_event.c.id == event.id))
        if held is not None:
            return False
        await self.session.execute(
            insert(webhook_event).values(
                id=event.id,
                event_type=event.event_type,
                event_version=event.event_version,
                occurred_at=event.occurred_at,
                received_at=received_at,
                client_nip=event.client_nip,
                office_id=event.office_id,
                organisation_id=event.organisation_id,
                data=dict(event.data),
                link=event.link,
                test=event.test,
            )
        )
        return True

    async def events_between(
        self, event_types: Sequence[str] | None, start: datetime, end: datetime, limit: int
    ) -> list[ReceivedEvent]:
        query = (
            select(webhook_event)
            .where(webhook_event.c.occurred_at >= start, webhook_event.c.occurred_at < end, ~webhook_event.c.test)
            .order_by(webhook_event.c.received_at, webhook_event.c.id)
            .limit(limit)
        )
        if event_types is not None:
            query = query.where(webhook_event.c.event_type.in_(list(event_types)))
        return [event_of(r) for r in await self.session.execute(query)]

    # --- deliveries ---------------------------------------------------------------------------------------------

    async def add_deliveries(self, event: ReceivedEvent, subscription_ids: Iterable[uuid.UUID], now: datetime) -> int:
        rows = [
            {
                "id": delivery_id(sid, event.id),
                "subscription_id": sid,
                "event_id": event.id,
                "event_type": event.event_type,
                "ordering_key": event.client_nip or "",
                "status": _PENDING,
                "attempts": 0,
                "window_attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for sid in subscription_ids
        ]
        if rows:
            await self.session.execute(insert(webhook_delivery), rows)
        return len(rows)

    async def delivery(self, delivery: uuid.UUID) -> Delivery | None:
        row = (await self.session.execute(select(webhook_delivery).where(webhook_delivery.c.id == delivery))).first()
        return _delivery(row) if row is not None else None

    async def deliveries_of(
        self, subscription_id: uuid.UUID, *, status: str | None, before_seq: int | None, limit: int
    ) -> list[Delivery]:
        query = (
            select(webhook_delivery)
            .where(webhook_delivery.c.subscription_id == subscription_id)
            .order_by(webhook_delivery.c.seq.desc())
            .limit(limit)
        )
        if status is not None:
            query = query.where(webhook_delivery.c.status == status)
        if before_seq is not None:
            query = query.where(webhook_delivery.c.seq < before_seq)
        return [_delivery(r) for r in await self.session.execute(query)]

    async def attempts_of(self, seq: int) -> list[Attempt]:
        rows = await self.session.execute(
            select(webhook_attempt).where(webhook_attempt.c.delivery_seq == seq).order_by(webhook_attempt.c.attempt)
        )
        return [
            Attempt(
                attempt=r.attempt,
                at=r.at,
                status_code=r.status_code,
                latency_ms=r.latency_ms,
                ok=r.ok,
                error=r.error,
                response_excerpt=r.response_excerpt,
            )
            for r in rows
        ]

    async def requeue(self, where: Any, now: datetime) -> int:
        """Make deliveries pending again with a fresh retry window and the same message id (a replay)."""
        result = await self.session.execute(
            update(webhook_delivery)
            .where(where)
            .values(
                status=_PENDING,
                next_attempt_at=now,
                window_started_at=None,
                window_attempts=0,
                lease_until=None,
            )
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def replay_one(self, delivery: uuid.UUID, now: datetime) -> int:
        return await self.requeue(webhook_delivery.c.id == delivery, now)

    async def replay_failed(self, subscription_id: uuid.UUID, now: datetime) -> int:
        return await self.requeue(
            and_(
                webhook_delivery.c.subscription_id == subscription_id,
                webhook_delivery.c.status == DeliveryStatus.FAILED.value,
            ),
            now,
        )

    async def replay_events(self, subscription_id: uuid.UUID, events: Sequence[ReceivedEvent], now: datetime) -> int:
        """Every one of ``events`` to the subscription again: its delivery requeued, or made when it had none."""
        if not events:
            return 0
        ids = [e.id for e in events]
        held = set(
            (
                await self.session.scalars(
                    select(webhook_delivery.c.event_id).where(
                        webhook_delivery.c.subscription_id == subscription_id, webhook_delivery.c.event_id.in_(ids)
                    )
                )
            ).all()
        )
        requeued = 0
        if held:
            requeued = await self.requeue(
                and_(webhook_delivery.c.subscription_id == subscription_id, webhook_delivery.c.event_id.in_(held)),
                now,
            )
        for event in events:
            if event.id not in held:
                requeued += await self.add_deliveries(event, (subscription_id,), now)
        return requeued

    async def resume(self, subscription_id: uuid.UUID, now: datetime) -> int:
        """A re-enabled subscription's waiting deliveries: due now, in a fresh retry window."""
        return await self.requeue(
            and_(webhook_delivery.c.subscription_id == subscription_id, webhook_delivery.c.status == _PENDING), now
        )

    # --- the sender's queries -----------------------------------------------------------------------------------

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[DueDelivery]:
        """The oldest pending delivery of each (subscription, client) whose attempt is due, leased to this sender.

        Only the head of a key is ever attempted, which is the per-client order; the lease is taken with a
        conditional update, so two senders (replicas) never attempt the same delivery at once."""
        earlier = webhook_delivery.alias("earlier")
        head = ~exists().where(
            earlier.c.subscription_id == webhook_delivery.c.subscription_id,
            earlier.c.ordering_key == webhook_delivery.c.ordering_key,
            earlier.c.status == _PENDING,
            earlier.c.seq < webhook_delivery.c.seq,
        )
        free = or_(webhook_delivery.c.lease_until.is_(None), webhook_delivery.c.lease_until < now)
        candidates = (
            await self.session.scalars(
                select(webhook_delivery.c.seq)
                .join(webhook_subscription, webhook_subscription.c.id == webhook_delivery.c.subscription_id)
                .where(
                    webhook_delivery.c.status == _PENDING,
                    webhook_subscription.c.enabled,
                    webhook_delivery.c.next_attempt_at <= now,
                    free,
                    head,
                )
                .order_by(webhook_delivery.c.next_attempt_at, webhook_delivery.c.seq)
                .limit(limit)
            )
        ).all()
        if not candidates:
            return []
        claimed = (
            await self.session.scalars(
                update(webhook_delivery)
                .where(webhook_delivery.c.seq.in_(list(candidates)), webhook_delivery.c.status == _PENDING, free)
                .values(lease_until=now + lease)
                .returning(webhook_delivery.c.seq)
            )
        ).all()
        if not claimed:
            return []
        ev = webhook_event.alias("ev")
        rows = await self.session.execute(
            select(webhook_delivery, *[c.label(f"ev_{c.name}") for c in ev.c])
            .join(ev, ev.c.id == webhook_delivery.c.event_id)
            .where(webhook_delivery.c.seq.in_(list(claimed)))
            .order_by(webhook_delivery.c.seq)
        )
        deliveries = [(_delivery(r), event_of(r, "ev_")) for r in rows]
        subscriptions = {
            s.id: s
            for s in [
                _subscription(r)
                for r in await self.session.execute(
                    select(webhook_subscription).where(
                        webhook_subscription.c.id.in_({d.subscription_id for d, _e in deliveries})
                    )
                )
            ]
        }
        return [DueDelivery(d, e, subscriptions[d.subscription_id]) for d, e in deliveries]

    async def next_due_at(self) -> datetime | None:
        due: datetime | None = await self.session.scalar(
            select(func.min(webhook_delivery.c.next_attempt_at))
            .join(webhook_subscription, webhook_subscription.c.id == webhook_delivery.c.subscription_id)
            .where(webhook_delivery.c.status == _PENDING, webhook_subscription.c.enabled)
        )
        return due

    async def release(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self.session.execute(
                update(webhook_delivery).where(webhook_delivery.c.seq.in_(list(seqs))).values(lease_until=None)
            )

    async def record_attempt(self, delivery: Delivery, attempt: Attempt, values: dict[str, Any]) -> None:
        await self.session.execute(
            insert(webhook_attempt).values(
                delivery_seq=delivery.seq,
                attempt=attempt.attempt,
                subscription_id=delivery.subscription_id,
                at=attempt.at,
                status_code=attempt.status_code,
                latency_ms=attempt.latency_ms,
                ok=attempt.ok,
                error=attempt.error,
                response_excerpt=attempt.response_excerpt,
            )
        )
        await self.session.execute(
            update(webhook_delivery).where(webhook_delivery.c.seq == delivery.seq).values(lease_until=None, **values)
        )

    async def cancel(self, delivery: Delivery, reason: str) -> None:
        await self.session.execute(
            update(webhook_delivery)
            .where(webhook_delivery.c.seq == delivery.seq)
            .values(status=DeliveryStatus.CANCELLED.value, lease_until=None, last_error=reason)
        )

    # --- metrics ------------------------------------------------------------------------------------------------

    async def counts_by_status(self, subscription_id: uuid.UUID) -> dict[str, int]:
        rows = await self.session.execute(
            select(webhook_delivery.c.status, func.count())
            .where(webhook_delivery.c.subscription_id == subscription_id)
            .group_by(webhook_delivery.c.status)
        )
        return {status: int(n) for status, n in rows}

    async def oldest_pending(self, subscription_id: uuid.UUID) -> datetime | None:
        oldest: datetime | None = await self.session.scalar(
            select(func.min(webhook_delivery.c.created_at)).where(
                webhook_delivery.c.subscription_id == subscription_id, webhook_delivery.c.status == _PENDING
            )
        )
        return oldest

    async def attempts_since(self, subscription_id: uuid.UUID, since: datetime) -> list[tuple[bool, int]]:
        rows = await self.session.execute(
            select(webhook_attempt.c.ok, webhook_attempt.c.latency_ms).where(
                webhook_attempt.c.subscription_id == subscription_id, webhook_attempt.c.at >= since
            )
        )
        return [(bool(ok), int(ms)) for ok, ms in rows]

    async def backlog(self) -> list[tuple[uuid.UUID, int]]:
        rows = await self.session.execute(
            select(webhook_delivery.c.subscription_id, func.count())
            .where(webhook_delivery.c.status == _PENDING)
            .group_by(webhook_delivery.c.subscription_id)
        )
        return [(sid, int(n)) for sid, n in rows]

    async def health_by_client(self, limit: int) -> list[ClientDeliveryHealth]:
        """Per client NIP (the ordering key), across every subscription: deliveries given up on, pending ones that have
        failed at least once, the whole backlog, and when a delivery last failed. Clients with none of these are left
        out: the operators' dashboard shows where receivers fail, not every client."""
        d = webhook_delivery.c
        failed = func.sum(case((d.status == DeliveryStatus.FAILED.value, 1), else_=0))
        retrying = func.sum(case((and_(d.status == _PENDING, d.attempts > 0), 1), else_=0))
        backlog = func.sum(case((d.status == _PENDING, 1), else_=0))
        last_failure = type_coerce(
            func.max(case((d.last_error.is_not(None), d.last_attempt_at), else_=None)), UtcDateTime()
        )
        stmt = (
            select(d.ordering_key, failed, retrying, backlog, last_failure)
            .where(or_(d.status == DeliveryStatus.FAILED.value, d.status == _PENDING))
            .group_by(d.ordering_key)
            .order_by(failed.desc(), retrying.desc(), d.ordering_key)
            .limit(limit)
        )
        return [
            ClientDeliveryHealth(key, int(f or 0), int(r or 0), int(b or 0), at)
            for key, f, r, b, at in await self.session.execute(stmt)
            if f or r or b
        ]


@dataclass(frozen=True)
class ClientDeliveryHealth:
    client_nip: str  # "" for the deliveries of events about no client (an organisation's own notices)
    failed: int
    retrying: int
    backlog: int
    last_failure_at: datetime | None
