"""The webhook sender: takes due deliveries, signs them, POSTs them to the pinned target, records every attempt.

A component of the service (started after the runtime, stopped before it). Each pass claims the head of every
(subscription, client) queue that is due (a claim is a lease: a sender that dies mid-attempt hands the delivery
back after ``lease_s``, and it is sent again with the same ``webhook-id`` — at least once), attempts them
concurrently (heads of different keys only, so per-client order holds) and records each attempt with its outcome
in its own transaction. A fan-out or a replay wakes it when its transaction commits; otherwise it sleeps until the
next delivery falls due, at most ``poll_interval_s``.

Outcomes: a 2xx → ``delivered``. Anything else (another status, a timeout, a refused target) → the next attempt
after the schedule's jittered delay; once the retry window (about three days) has passed, the delivery is
``failed`` (a dead letter, replayable), its subscription disabled, the contact e-mailed and
``webhook.subscription_disabled`` published, in one transaction. Before every attempt the subscription's right to
the event is asked again of the live client-access projection: a delivery about a client the office no longer
reads is ``cancelled``, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta

from opentelemetry import metrics
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.mail.repository import MailRepository
from notify_svc.mail.service import MailService
from notify_svc.settings import WebhookSettings
from notify_svc.webhooks.domain import (
    DeliveryStatus,
    RetrySchedule,
    excerpt,
    may_receive,
    message_id,
    webhook_body,
    webhook_headers,
)
from notify_svc.webhooks.repository import Attempt, DueDelivery, WebhookRepository
from notify_svc.webhooks.service import office_reads, open_secret
from notify_svc.webhooks.transport import HttpResponse, WebhookTransport
from platform_common.auth.clock import Clock, system_clock
from platform_common.client_access import ClientAccessProjection
from platform_common.contracts.webhooks import WebhookSubscriptionDisabled
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox, wake_after_commit
from platform_common.secret_box import SecretBox
from platform_common.tasks import finish_or_cancel

log = logging.getLogger(__name__)

# Names the notice mail of one disabling, so a retried transaction cannot queue it twice.
_DISABLED_MAIL = uuid.UUID("a6c0f7d2-3b8e-4c1a-9f5d-2e7b6a4c8d10")


class WebhookSender:
    def __init__(
        self,
        db: Database,
        transport: WebhookTransport,
        *,
        settings: WebhookSettings,
        box: SecretBox,
        access: ClientAccessProjection | None,
        outbox: Outbox,
        mail_wake: asyncio.Event | None = None,
        meter: metrics.Meter | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._transport = transport
        self._settings = settings
        self._box = box
        self._access = access
        self._outbox = outbox
        self._mail_wake = mail_wake
        self._mail = MailService(None, clock)
        self._clock = clock
        self.schedule = RetrySchedule(
            delays=tuple(timedelta(seconds=d) for d in settings.retry_delays_s),
            jitter=settings.retry_jitter,
            give_up_after=timedelta(seconds=settings.give_up_after_s),
        )
        self.wake = asyncio.Event()
        self.attempts_ended = 0  # what a test or benchmark can wait on
        self._ended = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._limit = asyncio.Semaphore(settings.concurrency)
        meter = meter or metrics.NoOpMeterProvider().get_meter("notify-svc.webhooks")
        self._attempts = meter.create_counter(
            "webhook.attempts", unit="{attempt}", description="Webhook delivery attempts by subscription and outcome"
        )
        self._latency = meter.create_histogram(
            "webhook.attempt.duration", unit="ms", description="Time to the receiver's answer, per attempt"
        )
        self._backlog: dict[str, int] = {}
        meter.create_observable_gauge(
            "webhook.backlog",
            callbacks=[self._observe_backlog],
            unit="{delivery}",
            description="Pending deliveries per subscription",
        )

    def _observe_backlog(self, _options: metrics.CallbackOptions) -> list[metrics.Observation]:
        return [metrics.Observation(n, {"subscription_id": sid}) for sid, n in self._backlog.items()]

    async def start(self) -> None:
        if self._settings.enabled and self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="notify-svc webhook sender")

    async def stop(self) -> None:
        """Let the attempts in flight end and be recorded, then stop (an attempt cut short would be sent again)."""
        if self._task is not None:
            self._stopping = True
            self.wake.set()
            grace = self._settings.connect_timeout_s + 2 * self._settings.read_timeout_s + 5.0
            await finish_or_cancel(self._task, grace_s=grace, what="notify-svc webhook sender")
            self._task = None
        await self._transport.aclose()

    async def wait_for_attempts(self, count: int) -> None:
        """Until this sender has ended at least ``count`` attempts in all."""
        async with self._ended:
            await self._ended.wait_for(lambda: self.attempts_ended >= count)

    async def _loop(self) -> None:
        while not self._stopping:
            self.wake.clear()
            try:
                attempted = await self.send_due()
                await self._refresh_backlog()
            except Exception:  # the database away for a moment: nothing is lost, the next pass retries
                log.exception("webhook sender pass failed")
                attempted = 0
            if attempted >= self._settings.batch_size or self._stopping:
                continue
            timeout = await self._sleep_for()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _sleep_for(self) -> float:
        try:
            async with self._db.sessionmaker() as session:
                due = await WebhookRepository(session).next_due_at()
        except Exception:
            return self._settings.poll_interval_s
        if due is None:
            return self._settings.poll_interval_s
        return max(0.0, min(self._settings.poll_interval_s, (due - self._clock()).total_seconds()))

    async def send_due(self) -> int:
        """One pass: claim the due heads and attempt them; how many were attempted."""
        now = self._clock()
        async with self._db.sessionmaker() as session, session.begin():
            claimed = await WebhookRepository(session).claim_due(
                now, timedelta(seconds=self._settings.lease_s), self._settings.batch_size
            )
        if not claimed:
            return 0
        await asyncio.gather(*(self._guarded(due) for due in claimed))
        return len(claimed)

    async def _guarded(self, due: DueDelivery) -> None:
        async with self._limit:
            try:
                await self._attempt(due)
            except Exception:  # recorded nowhere: the lease runs out and the delivery is attempted again
                log.exception("webhook delivery %s: attempt failed before it was recorded", due.delivery.id)

    async def _attempt(self, due: DueDelivery) -> None:
        delivery, event, subscription = due.delivery, due.event, due.subscription
        if not event.test:
            async with self._db.sessionmaker() as session, session.begin():
                reads = await office_reads(self._access, session, subscription, event)
                if not may_receive(subscription.scope, event, office_reads_client=reads):
                    await WebhookRepository(session).cancel(delivery, "the organisation no longer reads this client")
                    log.info("webhook delivery %s cancelled: access to the client ended", delivery.id)
                    await self._count_end()
                    return
        now = self._clock()
        signing = [open_secret(self._box, subscription.id, subscription.secret_sealed)]
        if (
            subscription.previous_secret_sealed is not None
            and subscription.previous_secret_until is not None
            and subscription.previous_secret_until > now
        ):
            signing.append(open_secret(self._box, subscription.id, subscription.previous_secret_sealed))
        body = webhook_body(event, api_base_url=self._settings.api_base_url)
        headers = webhook_headers(signing, message_id(delivery.id), now, body)
        response = await self._transport.post(subscription.url, body, headers)
        await self._end(due, now, response)

    async def _end(self, due: DueDelivery, started: datetime, response: HttpResponse) -> None:
        delivery, subscription = due.delivery, due.subscription
        now = self._clock()
        window_started = delivery.window_started_at or started
        attempt = Attempt(
            attempt=delivery.attempts + 1,
            at=started,
            status_code=response.status,
            latency_ms=response.latency_ms,
            ok=response.ok,
            error=excerpt(response.error),
            response_excerpt=excerpt(response.excerpt),
        )
        values: dict[str, object] = {
            "attempts": delivery.attempts + 1,
            "window_attempts": delivery.window_attempts + 1,
            "window_started_at": window_started,
            "last_attempt_at": started,
            "last_status_code": response.status,
            "last_error": attempt.error,
        }
        give_up = not response.ok and self.schedule.exhausted(window_started, now)
        if response.ok:
            values |= {"status": DeliveryStatus.DELIVERED.value, "delivered_at": now}
        elif give_up:
            values |= {"status": DeliveryStatus.FAILED.value}
        else:
            values |= {"next_attempt_at": self.schedule.next_attempt_at(now, delivery.window_attempts + 1)}
        async with self._db.sessionmaker() as session, session.begin():
            repo = WebhookRepository(session)
            await repo.record_attempt(delivery, attempt, values)
            if give_up:
                await self._disable(session, repo, due, attempt, now)
        outcome = "delivered" if response.ok else ("failed" if give_up else "retry")
        attributes = {"subscription_id": str(subscription.id), "outcome": outcome}
        self._attempts.add(1, attributes)
        self._latency.record(response.latency_ms, attributes)
        if not response.ok:
            log.warning(
                "webhook delivery %s (%s) attempt %d: %s (%s)",
                delivery.id,
                delivery.event_type,
                attempt.attempt,
                outcome,
                attempt.error or response.status,
            )
        await self._count_end()

    async def _disable(
        self, session: AsyncSession, repo: WebhookRepository, due: DueDelivery, attempt: Attempt, now: datetime
    ) -> None:
        subscription = due.subscription
        held = await repo.subscription(subscription.id, for_update=True)
        if held is None or not held.enabled:
            return
        reason = f"delivery {due.delivery.id} ({due.delivery.event_type}) failed for the whole retry window"
        await repo.update_subscription(
            subscription.id, {"enabled": False, "disabled_at": now, "disabled_reason": reason, "updated_at": now}
        )
        notice = WebhookSubscriptionDisabled(
            subscription_id=subscription.id,
            organisation_id=subscription.organisation_id,
            url=subscription.url,
            disabled_at=now,
            failed_delivery_id=due.delivery.id,
            failed_event_type=due.delivery.event_type,
            attempts=attempt.attempt,
            last_error=attempt.error[:500] if attempt.error else None,
        )
        await self._outbox.emit(session, notice, tenant=str(subscription.organisation_id))
        await self._mail.webhook_disabled(
            MailRepository(session),
            uuid.uuid5(_DISABLED_MAIL, f"{subscription.id}/{due.delivery.id}"),
            recipient=subscription.contact_email,
            language=subscription.language,
            details={
                "subscription_id": str(subscription.id),
                "url": subscription.url,
                "failed_event_type": due.delivery.event_type,
                "attempts": attempt.attempt,
                "last_error": attempt.error,
                "changed_at": now.isoformat(),
            },
        )
        if self._mail_wake is not None:
            wake_after_commit(session, self._mail_wake)
        log.warning("webhook subscription %s disabled: %s", subscription.id, reason)

    async def _refresh_backlog(self) -> None:
        async with self._db.sessionmaker() as session:
            rows = await WebhookRepository(session).backlog()
        self._backlog = {str(sid): n for sid, n in rows}

    async def _count_end(self) -> None:
        async with self._ended:
            self.attempts_ended += 1
            self._ended.notify_all()
