"""Use cases of the webhook capability: an organisation's subscriptions (each use case owns its transaction), and the
fan-out of a received public event into deliveries (inside the consumer's transaction, so a redelivered event
queues nothing twice). ``webhooks.sender`` sends what is queued."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.settings import WebhookSettings
from notify_svc.webhooks.domain import (
    ALL_EVENTS,
    DeliveryStatus,
    OrganisationKind,
    ReceivedEvent,
    delivery_id,
    may_receive,
    needs_live_access,
    new_secret,
)
from notify_svc.webhooks.repository import Attempt, ClientDeliveryHealth, Delivery, Subscription, WebhookRepository
from notify_svc.webhooks.targets import TargetPolicy, TargetRefused, check_url
from platform_common.auth.clock import Clock, system_clock
from platform_common.auth.principal import Principal
from platform_common.client_access import ClientAccessProjection
from platform_common.contracts.public import PUBLIC_EVENTS, public_data, public_link
from platform_common.db import Database
from platform_common.messaging.envelope import Envelope
from platform_common.nip import InvalidNip, normalize_nip
from platform_common.problems import Problem
from platform_common.secret_box import SecretBox

log = logging.getLogger(__name__)

REPLAY_LIMIT = 10_000  # events of one replay by time range; a wider range is refused, not cut silently


def not_found() -> Problem:
    return Problem(404, "Not Found", "The resource does not exist.", code="not-found")


def seal_secret(box: SecretBox, subscription_id: uuid.UUID, secret: str) -> str:
    return box.encrypt(secret.encode(), aad=f"webhook-subscription:{subscription_id}")


def open_secret(box: SecretBox, subscription_id: uuid.UUID, sealed: str) -> str:
    return box.decrypt(sealed, aad=f"webhook-subscription:{subscription_id}").decode()


@dataclass(frozen=True)
class NewSubscription:
    url: str
    event_types: Sequence[str]
    contact_email: str
    client_nips: Sequence[str] | None = None
    description: str | None = None
    language: str = "pl"


@dataclass(frozen=True)
class SubscriptionChanges:
    """Only the fields given change (``client_nips_given`` tells an explicit null from an absent field)."""

    url: str | None = None
    event_types: Sequence[str] | None = None
    contact_email: str | None = None
    client_nips: Sequence[str] | None = None
    client_nips_given: bool = False
    description: str | None = None
    language: str | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class SubscriptionMetrics:
    window_h: int
    attempts: int
    successes: int
    success_rate: float | None
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    backlog: int
    oldest_pending_age_s: float | None
    by_status: dict[str, int]


def _percentile(sorted_values: list[int], fraction: float) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))]


class WebhookSubscriptions:
    def __init__(
        self,
        db: Database,
        box: SecretBox,
        settings: WebhookSettings,
        policy: TargetPolicy,
        access: ClientAccessProjection | None,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._box = box
        self._settings = settings
        self._policy = policy
        self._access = access
        self._wake = wake
        self._clock = clock

    # --- subscriptions ------------------------------------------------------------------------------------------

    async def create(self, principal: Principal, request: NewSubscription) -> tuple[Subscription, str]:
        """The new subscription and its signing secret, which is never shown again."""
        org, kind = self._organisation(principal)
        url = self._url(request.url)
        event_types = self._event_types(request.event_types)
        async with self._db.sessionmaker() as session, session.begin():
            client_nips = await self._client_nips(session, principal, request.client_nips)
            repo = WebhookRepository(session)
            if await repo.count_of(org) >= self._settings.max_subscriptions_per_organisation:
                raise Problem(
                    409,
                    "Too many subscriptions",
                    f"An organisation has at most {self._settings.max_subscriptions_per_organisation} subscriptions.",
                    code="subscription-limit",
                )
            now = self._clock()
            subscription_id = uuid.uuid4()
            secret = new_secret()
            await repo.add_subscription(
                {
                    "id": subscription_id,
                    "organisation_id": org,
                    "organisation_kind": kind,
                    "organisation_nips": sorted(principal.nips) if kind == OrganisationKind.CLIENT else [],
                    "url": url,
                    "description": request.description,
                    "event_types": event_types,
                    "client_nips": client_nips,
                    "contact_email": request.contact_email,
                    "language": request.language,
                    "secret_sealed": seal_secret(self._box, subscription_id, secret),
                    "enabled": True,
                    "created_at": now,
                    "created_by": principal.id,
                    "updated_at": now,
                }
            )
            created = await repo.subscription(subscription_id)
        assert created is not None
        log.info("webhook subscription %s made by %s for organisation %s", subscription_id, principal.id, org)
        return created, secret

    async def of_organisation(self, principal: Principal) -> list[Subscription]:
        org, _kind = self._organisation(principal)
        async with self._db.sessionmaker() as session:
            return await WebhookRepository(session).subscriptions_of(org)

    async def get(self, principal: Principal, subscription_id: uuid.UUID) -> Subscription:
        async with self._db.sessionmaker() as session:
            return await self._own(WebhookRepository(session), principal, subscription_id)

    async def update(
        self, principal: Principal, subscription_id: uuid.UUID, changes: SubscriptionChanges
    ) -> Subscription:
        values: dict[str, Any] = {}
        if changes.url is not None:
            values["url"] = self._url(changes.url)
        if changes.event_types is not None:
            values["event_types"] = self._event_types(changes.event_types)
        for name in ("contact_email", "description", "language"):
            if getattr(changes, name) is not None:
                values[name] = getattr(changes, name)
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            held = await self._own(repo, principal, subscription_id, for_update=True)
            if changes.client_nips_given:
                values["client_nips"] = await self._client_nips(session, principal, changes.client_nips)
            now = self._clock()
            resumed = False
            if changes.enabled is True and not held.enabled:
                values |= {"enabled": True, "disabled_at": None, "disabled_reason": None}
                resumed = True
            elif changes.enabled is False and held.enabled:
                values |= {"enabled": False, "disabled_at": now, "disabled_reason": "disabled by its organisation"}
            values["updated_at"] = now
            await repo.update_subscription(subscription_id, values)
            if resumed:
                # What waited while it was off goes out now, in order, each in a fresh retry window.
                waiting = await repo.resume(subscription_id, now)
                log.info("webhook subscription %s enabled again: %d deliveries resume", subscription_id, waiting)
            updated = await repo.subscription(subscription_id)
        assert updated is not None
        if resumed:
            self._wake()
        return updated

    async def rotate_secret(
        self, principal: Principal, subscription_id: uuid.UUID, overlap: timedelta
    ) -> tuple[Subscription, str]:
        """A new secret; the old one keeps signing alongside it for ``overlap`` (both signatures are sent), so
        receivers can switch without losing a delivery."""
        if overlap > timedelta(hours=self._settings.rotation_overlap_max_h) or overlap < timedelta(0):
            raise Problem(
                422,
                "Invalid overlap",
                f"The overlap is between 0 and {self._settings.rotation_overlap_max_h} hours.",
                code="invalid-overlap",
            )
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            held = await self._own(repo, principal, subscription_id, for_update=True)
            now = self._clock()
            secret = new_secret()
            await repo.update_subscription(
                subscription_id,
                {
                    "secret_sealed": seal_secret(self._box, subscription_id, secret),
                    "previous_secret_sealed": held.secret_sealed if overlap > timedelta(0) else None,
                    "previous_secret_until": now + overlap if overlap > timedelta(0) else None,
                    "updated_at": now,
                },
            )
            updated = await repo.subscription(subscription_id)
        assert updated is not None
        log.info("webhook subscription %s: secret rotated by %s, overlap %s", subscription_id, principal.id, overlap)
        return updated, secret

    async def delete(self, principal: Principal, subscription_id: uuid.UUID) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            await self._own(repo, principal, subscription_id, for_update=True)
            await repo.delete_subscription(subscription_id)
        log.info("webhook subscription %s deleted by %s", subscription_id, principal.id)

    # --- deliveries ---------------------------------------------------------------------------------------------

    async def send_test(self, principal: Principal, subscription_id: uuid.UUID, event_type: str) -> Delivery:
        """The catalogue's example of ``event_type``, marked ``"test": true``, delivered like any event (signed,
        logged, retried) but never subject to a client's access: its data is the example's, no client's."""
        public = PUBLIC_EVENTS.get(event_type)
        if public is None:
            raise Problem(422, "Unknown event type", f"{event_type!r} is not a public event.", code="unknown-event")
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            await self._own(repo, principal, subscription_id)
            now = self._clock()
            payload = public.example.model_dump(mode="json")
            nip = payload.get("client_nip")
            event = ReceivedEvent(
                id=uuid.uuid4(),
                event_type=event_type,
                event_version=public.event_version,
                occurred_at=now,
                client_nip=nip if isinstance(nip, str) else None,
                office_id=None,
                organisation_id=None,
                data=public_data(event_type, payload) or {},
                link=public_link(event_type, payload, nip if isinstance(nip, str) else None),
                test=True,
            )
            await repo.add_event(event, now)
            await repo.add_deliveries(event, (subscription_id,), now)
            delivery = await repo.delivery(delivery_id(subscription_id, event.id))
        assert delivery is not None
        self._wake()
        return delivery

    async def deliveries(
        self,
        principal: Principal,
        subscription_id: uuid.UUID,
        *,
        status: DeliveryStatus | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Delivery]:
        async with self._db.sessionmaker() as session:
            repo = WebhookRepository(session)
            await self._own(repo, principal, subscription_id)
            return await repo.deliveries_of(
                subscription_id, status=status.value if status else None, before_seq=before_seq, limit=limit
            )

    async def delivery(self, principal: Principal, delivery_id: uuid.UUID) -> tuple[Delivery, list[Attempt]]:
        async with self._db.sessionmaker() as session:
            repo = WebhookRepository(session)
            delivery = await repo.delivery(delivery_id)
            if delivery is None:
                raise not_found()
            await self._own(repo, principal, delivery.subscription_id)
            return delivery, await repo.attempts_of(delivery.seq)

    async def replay_delivery(self, principal: Principal, delivery_id: uuid.UUID) -> int:
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            delivery = await repo.delivery(delivery_id)
            if delivery is None:
                raise not_found()
            await self._own(repo, principal, delivery.subscription_id)
            if delivery.status == DeliveryStatus.PENDING:
                raise Problem(409, "Already queued", "This delivery is still pending.", code="delivery-pending")
            queued = await repo.replay_one(delivery_id, self._clock())
        self._wake()
        return queued

    async def replay(
        self,
        principal: Principal,
        subscription_id: uuid.UUID,
        *,
        failed: bool,
        event_types: Sequence[str] | None,
        start: datetime | None,
        end: datetime | None,
    ) -> int:
        """Every failed delivery of the subscription, or every event of the given types received in
        [start, end) that the subscription may receive (also events from before it existed)."""
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            held = await self._own(repo, principal, subscription_id)
            now = self._clock()
            if failed:
                queued = await repo.replay_failed(subscription_id, now)
            else:
                if start is None or end is None or start >= end:
                    raise Problem(422, "Invalid range", "Give from and to, from before to.", code="invalid-range")
                types = self._event_types(event_types) if event_types else None
                events = await repo.events_between(
                    None if types is None or ALL_EVENTS in types else types, start, end, REPLAY_LIMIT + 1
                )
                if len(events) > REPLAY_LIMIT:
                    raise Problem(
                        422,
                        "Range too wide",
                        f"More than {REPLAY_LIMIT} events in the range: replay it in parts.",
                        code="replay-too-wide",
                    )
                chosen = [e for e in events if await self._may_receive(session, held, e)]
                queued = await repo.replay_events(subscription_id, chosen, now)
        log.info("webhook subscription %s: %d deliveries replayed by %s", subscription_id, queued, principal.id)
        self._wake()
        return queued

    async def metrics(
        self, principal: Principal, subscription_id: uuid.UUID, window_h: int = 24
    ) -> SubscriptionMetrics:
        async with self._db.sessionmaker() as session:
            repo = WebhookRepository(session)
            await self._own(repo, principal, subscription_id)
            now = self._clock()
            attempts = await repo.attempts_since(subscription_id, now - timedelta(hours=window_h))
            by_status = await repo.counts_by_status(subscription_id)
            oldest = await repo.oldest_pending(subscription_id)
        latencies = sorted(ms for ok, ms in attempts if ok)
        successes = len(latencies)
        return SubscriptionMetrics(
            window_h=window_h,
            attempts=len(attempts),
            successes=successes,
            success_rate=successes / len(attempts) if attempts else None,
            latency_p50_ms=_percentile(latencies, 0.5),
            latency_p95_ms=_percentile(latencies, 0.95),
            backlog=by_status.get(DeliveryStatus.PENDING.value, 0),
            oldest_pending_age_s=(now - oldest).total_seconds() if oldest is not None else None,
            by_status=by_status,
        )

    async def health_by_client(self, limit: int) -> list[ClientDeliveryHealth]:
        """The operators' view across every organisation (the route admits operators only): it holds NIPs, counts
        and times, never a receiver's URL, an event's data or a secret."""
        async with self._db.sessionmaker() as session:
            return await WebhookRepository(session).health_by_client(limit)

    # --- rules of the requests ----------------------------------------------------------------------------------

    @staticmethod
    def _organisation(principal: Principal) -> tuple[uuid.UUID, str]:
        if principal.org is None or principal.org_kind is None or principal.is_service:
            raise Problem(
                403,
                "Forbidden",
                "Webhooks belong to an organisation: call as one of its users or keys.",
                code="forbidden",
            )
        return principal.org, principal.org_kind

    async def _own(
        self, repo: WebhookRepository, principal: Principal, subscription_id: uuid.UUID, *, for_update: bool = False
    ) -> Subscription:
        org, _kind = self._organisation(principal)
        held = await repo.subscription(subscription_id, for_update=for_update)
        if held is None or held.organisation_id != org:  # another organisation's looks like none at all
            raise not_found()
        return held

    def _url(self, url: str) -> str:
        try:
            return check_url(url, self._policy)
        except TargetRefused as exc:
            raise Problem(422, "Target refused", exc.reason, code="target-refused") from None

    @staticmethod
    def _event_types(event_types: Sequence[str]) -> list[str]:
        chosen = sorted(set(event_types))
        if not chosen:
            raise Problem(422, "No event types", "Subscribe to at least one event type.", code="unknown-event")
        unknown = [t for t in chosen if t != ALL_EVENTS and t not in PUBLIC_EVENTS]
        if unknown:
            raise Problem(
                422,
                "Unknown event type",
                f"Not public events: {', '.join(unknown)}. GET /webhooks/event-types lists them.",
                code="unknown-event",
                unknown=unknown,
            )
        return [ALL_EVENTS] if ALL_EVENTS in chosen else chosen

    async def _client_nips(
        self, session: AsyncSession, principal: Principal, client_nips: Sequence[str] | None
    ) -> list[str] | None:
        """A filter may name only clients the organisation reads now (the same 404-alike rule as the API's)."""
        if client_nips is None:
            return None
        normalized: list[str] = []
        for raw in client_nips:
            try:
                nip = normalize_nip(raw)
            except InvalidNip as exc:
                raise Problem(422, "Invalid NIP", f"{raw!r} is not a valid NIP: {exc}.", code="invalid-nip") from None
            readable = principal.can_access_client(nip)
            if readable and principal.org_kind == "office" and principal.org is not None:
                held = await self._access.held(session, principal.org, nip) if self._access else None
                readable = held is not None and held.readable
            if not readable:
                raise Problem(
                    422, "Unknown client", f"NIP {nip} is not a client you can read.", code="unknown-client", nip=nip
                )
            normalized.append(nip)
        return sorted(set(normalized))

    async def _may_receive(self, session: AsyncSession, subscription: Subscription, event: ReceivedEvent) -> bool:
        return may_receive(
            subscription.scope,
            event,
            office_reads_client=await office_reads(self._access, session, subscription, event),
        )


async def office_reads(
    access: ClientAccessProjection | None, session: AsyncSession, subscription: Subscription, event: ReceivedEvent
) -> bool:
    """The live answer for an office's subscription and an event about a client (False without the projection:
    fail closed)."""
    if not needs_live_access(subscription.scope, event) or event.client_nip is None:
        return False
    if access is None:
        return False
    held = await access.held(session, subscription.organisation_id, event.client_nip)
    return held is not None and held.readable


class EventFanOut:
    """A received public event into one delivery per subscription that may receive it."""

    def __init__(self, access: ClientAccessProjection | None, clock: Clock = system_clock) -> None:
        self._access = access
        self._clock = clock

    async def received(self, session: AsyncSession, envelope: Envelope) -> int:
        public = PUBLIC_EVENTS.get(envelope.type)
        if public is None or public.event_version != envelope.version:
            return 0  # not public, or a version the catalogue does not describe (yet): never published unvetted
        data = public_data(envelope.type, envelope.payload) or {}
        client_nip = envelope.client_nip or _str(envelope.payload.get("client_nip"))
        event = ReceivedEvent(
            id=envelope.id,
            event_type=envelope.type,
            event_version=envelope.version,
            occurred_at=envelope.occurred_at,
            client_nip=client_nip,
            office_id=_uuid(envelope.payload.get("office_id")),
            organisation_id=_uuid(envelope.payload.get("organisation_id")),
            data=data,
            link=public_link(envelope.type, envelope.payload, client_nip),
        )
        repo = WebhookRepository(session)
        now = self._clock()
        if not await repo.add_event(event, now):
            return 0
        chosen = []
        for subscription in await repo.enabled_subscriptions():
            if not subscription.scope.wants(event.event_type):
                continue
            reads = await office_reads(self._access, session, subscription, event)
            if may_receive(subscription.scope, event, office_reads_client=reads):
                chosen.append(subscription.id)
        return await repo.add_deliveries(event, chosen, now)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None
