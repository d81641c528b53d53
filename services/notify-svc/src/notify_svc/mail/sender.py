"""The sender: takes due mail from the table, opens its link, renders it and hands it to the SMTP server.

A component of the service (started after the runtime, stopped before it). Each pass claims a batch (a claim is
a lease: a sender that dies mid-attempt gives the mail back after ``lease_s``), sends one mail at a time and
records every attempt in the delivery log in its own transaction. A queued mail wakes it when its transaction
commits; otherwise it sleeps until the next mail falls due, at most ``poll_interval_s``.

Outcomes: accepted → ``sent``; a 5xx reply, or temporary failures (4xx, no answer) past ``give_up_after_s`` →
``failed`` with the server's reply; any other failure → tried again after ``retry_base_s`` doubling up to
``retry_max_s``. An SMTP outage therefore delays mail and loses none. A mail whose link expired before it could
go out is ``expired``, not sent. A notice (a refused consent) has no link and no expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from pydantic import SecretStr

from notify_svc.mail.composer import MailContent, compose
from notify_svc.mail.domain import (
    AttemptOutcome,
    DeliveryResult,
    MailKind,
    MailStatus,
    RetryPolicy,
    message_id,
    outcome_of,
)
from notify_svc.mail.repository import AttemptEnd, MailRecord, MailRepository
from notify_svc.mail.smtp import MailTransport
from notify_svc.settings import MailDeliverySettings, SmtpSettings
from platform_common.auth.clock import Clock, system_clock
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.contracts.integrations import IntegrationConsented, IntegrationConsentRequested
from platform_common.contracts.users import SealedLinkEvent
from platform_common.db import Database
from platform_common.sealing import SealingError
from platform_common.tasks import finish_or_cancel

log = logging.getLogger(__name__)

_EVENTS: dict[MailKind, type[SealedLinkEvent]] = {
    MailKind.INVITATION: UserInvited,
    MailKind.PASSWORD_RESET: PasswordResetRequested,
    MailKind.CONSENT_REQUEST: IntegrationConsentRequested,
    MailKind.ACTIVATION_CODE: IntegrationConsented,
}


class MailSender:
    def __init__(
        self,
        db: Database,
        transport: MailTransport,
        *,
        smtp: SmtpSettings,
        settings: MailDeliverySettings,
        seal_key: SecretStr | None,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._transport = transport
        self._smtp = smtp
        self._settings = settings
        self._seal_key = seal_key
        self._clock = clock
        self.policy = RetryPolicy(
            base=timedelta(seconds=settings.retry_base_s),
            cap=timedelta(seconds=settings.retry_max_s),
            give_up_after=timedelta(seconds=settings.give_up_after_s),
        )
        self.wake = asyncio.Event()
        # Attempts ended by this sender (sent, retry, failed, expired): what a caller can wait on.
        self.attempts_ended = 0
        self._ended = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # The part of the sender address after "@": every Message-ID of this platform ends in it.
        self._domain = smtp.sender.rsplit("@", 1)[-1].strip(" >") or "ksef-hub.localhost"

    async def start(self) -> None:
        if self._settings.enabled and self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="notify-svc mail sender")

    async def stop(self) -> None:
        """Let the attempt in progress end and be recorded, then stop. Cancelling is the fallback only: a
        cancellation landing in the middle of a database call can be absorbed there, and an attempt cut short after
        the server's 250 would send its mail again on the next start."""
        if self._task is None:
            return
        self._stopping = True
        self.wake.set()
        await finish_or_cancel(self._task, grace_s=self._smtp.timeout_s + 5.0, what="notify-svc mail sender")
        self._task = None

    async def send_due(self) -> int:
        """One pass: claim a batch of due mail and attempt each; how many were attempted."""
        now = self._clock()
        lease = timedelta(seconds=self._settings.lease_s)
        async with self._db.sessionmaker() as session, session.begin():
            claimed = await MailRepository(session).claim_due(now, lease, self._settings.batch_size)
        attempted = 0
        for mail in claimed:
            if self._stopping:
                break
            await self._attempt(mail)
            attempted += 1
        if attempted < len(claimed):  # stopping: hand the rest of the claim back now, not when its lease ends
            async with self._db.sessionmaker() as session, session.begin():
                await MailRepository(session).release([m.id for m in claimed[attempted:]], now + lease)
        return attempted

    async def _attempt(self, mail: MailRecord) -> None:
        now = self._clock()
        if mail.expires_at is not None and mail.expires_at <= now:
            async with self._db.sessionmaker() as session, session.begin():
                await MailRepository(session).expire(mail)
            log.warning("mail %s (%s) not sent: its link expired first", mail.id, mail.kind)
            await self._count_end()
            return
        try:
            link = self._open_link(mail)
            code = self._open_code(mail)
        except SealingError as exc:
            # The consumer checked the link when it queued the mail; a key changed since then. Nothing to retry.
            await self._end(mail, DeliveryResult(False, None, f"cannot open the link: {exc}"), permanent=True)
            return
        content = MailContent(
            kind=MailKind(mail.kind),
            language=mail.language,
            recipient=mail.recipient,
            link=link,
            expires_at=mail.expires_at,
            organisation_name=(mail.details or {}).get("organisation_name"),
            role=(mail.details or {}).get("role"),
            code=code,
            details=mail.details or {},
        )
        message = compose(content, sender=self._smtp.sender, message_id=message_id(mail.id, self._domain), now=now)
        result = await self._transport.send(message)
        await self._end(mail, result)

    def _open_link(self, mail: MailRecord) -> str | None:
        if mail.sealed_link is None:
            return None  # a notice
        if self._seal_key is None:
            raise SealingError("notify-svc has no sealing key")
        event_type = _EVENTS[MailKind(mail.kind)]
        # The event's own rule (``info`` = its type): a text sealed for another purpose does not open here.
        return event_type.open_sealed_link(self._seal_key.get_secret_value(), mail.sealed_link)

    def _open_code(self, mail: MailRecord) -> str | None:
        """An activation code mail's code, opened like its link (and, like it, only into the message)."""
        sealed_code = (mail.details or {}).get("sealed_code")
        if MailKind(mail.kind) is not MailKind.ACTIVATION_CODE:
            return None
        if self._seal_key is None or not isinstance(sealed_code, str):
            raise SealingError("an activation code mail without its sealed code, or no sealing key")
        return IntegrationConsented.open_sealed_code(self._seal_key.get_secret_value(), sealed_code)

    async def _end(self, mail: MailRecord, result: DeliveryResult, *, permanent: bool = False) -> None:
        now = self._clock()
        outcome = (
            AttemptOutcome.FAILED if permanent else outcome_of(result, self.policy, now=now, queued_at=mail.created_at)
        )
        status = {
            AttemptOutcome.SENT: MailStatus.SENT,
            AttemptOutcome.FAILED: MailStatus.FAILED,
            AttemptOutcome.RETRY: MailStatus.PENDING,
        }[outcome]
        next_at = self.policy.next_attempt_at(now, mail.attempts + 1) if outcome is AttemptOutcome.RETRY else None
        end = AttemptEnd(outcome, now, result.smtp_code, result.detail, next_at, status)
        async with self._db.sessionmaker() as session, session.begin():
            await MailRepository(session).end_attempt(mail, end)
        await self._count_end()
        if outcome is AttemptOutcome.SENT:
            log.info("mail %s (%s) sent, attempt %d", mail.id, mail.kind, mail.attempts + 1)
        else:
            log.warning(
                "mail %s (%s) attempt %d: %s (%s %s)",
                mail.id,
                mail.kind,
                mail.attempts + 1,
                outcome.value,
                result.smtp_code,
                result.detail,
            )

    async def _count_end(self) -> None:
        async with self._ended:
            self.attempts_ended += 1
            self._ended.notify_all()

    async def wait_for_attempt(self, after: int, timeout: float) -> None:
        """Until more than ``after`` attempts have ended (``TimeoutError`` after ``timeout``)."""
        async with self._ended:
            await asyncio.wait_for(self._ended.wait_for(lambda: self.attempts_ended > after), timeout)

    async def _sleep_s(self) -> float:
        async with self._db.sessionmaker() as session:
            due = await MailRepository(session).next_due_at()
        poll = self._settings.poll_interval_s
        if due is None:
            return poll
        return min(poll, max((due - self._clock()).total_seconds(), 0.0))

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            # Cleared before the pass, so a mail queued during it wakes the next one.
            self.wake.clear()
            try:
                attempted = await self.send_due()
                delay = 0.0 if attempted >= self._settings.batch_size else await self._sleep_s()
                failures = 0
            except Exception:
                failures += 1
                delay = min(self._settings.poll_interval_s * 2 ** min(failures, 6), 300.0)
                log.exception("mail sender pass failed; next in %.1f s", delay)
            if delay > 0 and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
