"""Use cases of the mail capability: queue the e-mail an event asks for (``mail.sender`` sends it).

They run inside the consumer's transaction (the platform records the inbox row in it), so a redelivered
event queues nothing twice.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import SecretStr

from notify_svc.mail.domain import MailKind, MailStatus, language_of
from notify_svc.mail.repository import MailRecord
from platform_common.auth.clock import Clock, system_clock
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.contracts.integrations import (
    IntegrationConsented,
    IntegrationConsentRequested,
    IntegrationRefused,
)
from platform_common.contracts.months import MonthApproved, MonthLateArrival, MonthUnlocked
from platform_common.contracts.users import SealedLinkEvent
from platform_common.messaging.dispatch import PermanentFailure
from platform_common.sealing import SealingError

log = logging.getLogger(__name__)

MonthEvent = MonthApproved | MonthUnlocked | MonthLateArrival
_MONTH_KINDS: dict[str, MailKind] = {
    MonthApproved.event_type: MailKind.MONTH_APPROVED,
    MonthUnlocked.event_type: MailKind.MONTH_UNLOCKED,
    MonthLateArrival.event_type: MailKind.MONTH_LATE_ARRIVAL,
}
# Names the mails of one event: each recipient's id is derived from the event's, so a redelivered event (or a
# replayed dead letter) queues the very same rows and collides with them instead of mailing twice.
_MONTH_MAIL = uuid.UUID("6f1f3c52-9a4e-4d41-8d0e-2f6c1b7a4e10")


class MailStore(Protocol):
    async def add(self, record: MailRecord) -> None: ...


class MailService:
    def __init__(
        self,
        seal_key: SecretStr | None,
        clock: Clock = system_clock,
        *,
        default_language: str = "pl",
    ) -> None:
        self._seal_key = seal_key
        self._clock = clock
        self._default_language = default_language

    async def invitation_requested(self, store: MailStore, event_id: uuid.UUID, event: UserInvited) -> None:
        details = {"organisation_name": event.organisation_name, "role": event.role}
        await self._queue(store, event_id, MailKind.INVITATION, event, event.email, event.invitation_id, details)

    async def password_reset_requested(
        self, store: MailStore, event_id: uuid.UUID, event: PasswordResetRequested
    ) -> None:
        await self._queue(store, event_id, MailKind.PASSWORD_RESET, event, event.email, event.user_id)

    async def consent_requested(
        self, store: MailStore, event_id: uuid.UUID, event: IntegrationConsentRequested
    ) -> None:
        details = {
            "organisation_name": event.office_name,
            "office_nip": event.office_nip,
            "client_nip": event.client_nip,
            "send_sales": event.send_sales,
        }
        await self._queue(
            store, event_id, MailKind.CONSENT_REQUEST, event, event.client_email, event.integration_id, details
        )

    async def consented(self, store: MailStore, event_id: uuid.UUID, event: IntegrationConsented) -> None:
        if self._seal_key is not None:
            try:
                event.open_code(self._seal_key.get_secret_value())
            except SealingError as exc:
                raise PermanentFailure(
                    f"the code of {event.event_type} is not sealed to notify-svc's key: {exc}"
                ) from None
        details = {
            "organisation_name": event.office_name,
            "office_nip": event.office_nip,
            "client_nip": event.client_nip,
            # Still sealed, as in the event: opened only into the message.
            "sealed_code": event.sealed_code,
        }
        await self._queue(
            store, event_id, MailKind.ACTIVATION_CODE, event, event.return_email, event.integration_id, details
        )

    async def consent_refused(self, store: MailStore, event_id: uuid.UUID, event: IntegrationRefused) -> None:
        """The office is told at its return address; the mail is a notice, so there is no link to check or seal."""
        await store.add(
            MailRecord(
                id=event_id,
                kind=MailKind.CONSENT_REFUSED.value,
                recipient=event.return_email,
                subject_id=event.integration_id,
                sealed_link=None,
                expires_at=None,
                status=MailStatus.PENDING.value,
                created_at=self._clock(),
                language=language_of(event.return_language, self._default_language),
                details={
                    "organisation_name": event.office_name,
                    "office_nip": event.office_nip,
                    "client_nip": event.client_nip,
                    "client_name": event.client_name,
                    "send_sales": event.send_sales,
                    "refused_at": event.changed_at.isoformat(),
                    "integration_id": str(event.integration_id),
                },
            )
        )
        log.info("%s e-mail pending for event %s", MailKind.CONSENT_REFUSED, event_id)

    async def webhook_disabled(
        self, store: MailStore, mail_id: uuid.UUID, *, recipient: str, language: str, details: dict[str, Any]
    ) -> None:
        """The subscription's contact hears that it was disabled (a notice: no link, no expiry)."""
        await store.add(
            MailRecord(
                id=mail_id,
                kind=MailKind.WEBHOOK_DISABLED.value,
                recipient=recipient,
                subject_id=uuid.UUID(str(details["subscription_id"])),
                sealed_link=None,
                expires_at=None,
                status=MailStatus.PENDING.value,
                created_at=self._clock(),
                language=language_of(language, self._default_language),
                details=details,
            )
        )
        log.info("%s e-mail pending for subscription %s", MailKind.WEBHOOK_DISABLED, details["subscription_id"])

    async def month_changed(self, store: MailStore, event_id: uuid.UUID, event: MonthEvent) -> int:
        """One notice per person the event names (approval-svc chose them: the offices at their return addresses,
        for a late arrival the client too); how many were queued."""
        kind = _MONTH_KINDS[event.event_type]
        subject_id = uuid.uuid5(_MONTH_MAIL, f"{event.client_nip}/{event.period}")
        details: dict[str, Any] = {
            "client_nip": event.client_nip,
            "client_name": event.client_name,
            "period": event.period,
        }
        if isinstance(event, MonthApproved):
            details |= {
                "book_count": event.book_count,
                "dont_book_count": event.dont_book_count,
                "changed_at": event.approved_at.isoformat(),
            }
        elif isinstance(event, MonthUnlocked):
            details |= {"changed_at": event.unlocked_at.isoformat()}
        else:
            details |= {
                "ksef_number": event.ksef_number,
                "late_arrivals": event.late_arrivals,
                "changed_at": event.arrived_at.isoformat(),
            }
        for recipient in event.recipients:
            await store.add(
                MailRecord(
                    id=uuid.uuid5(event_id, f"{recipient.side}:{recipient.email.lower()}"),
                    kind=kind.value,
                    recipient=recipient.email,
                    subject_id=subject_id,
                    sealed_link=None,
                    expires_at=None,
                    status=MailStatus.PENDING.value,
                    created_at=self._clock(),
                    language=language_of(recipient.language, self._default_language),
                    details=details | {"organisation_name": recipient.office_name, "side": recipient.side},
                )
            )
        log.info("%s: %d e-mail(s) pending for event %s", kind, len(event.recipients), event_id)
        return len(event.recipients)

    async def _queue(
        self,
        store: MailStore,
        event_id: uuid.UUID,
        kind: MailKind,
        event: SealedLinkEvent,
        recipient: str,
        subject_id: uuid.UUID,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._check_link(event)
        await store.add(
            MailRecord(
                id=event_id,
                kind=kind.value,
                recipient=recipient,
                subject_id=subject_id,
                sealed_link=event.sealed_link,
                expires_at=event.expires_at,
                status=MailStatus.PENDING.value,
                created_at=self._clock(),
                language=language_of(event.language, self._default_language),
                details=details,
            )
        )
        log.info("%s e-mail pending for event %s", kind, event_id)

    def _check_link(self, event: SealedLinkEvent) -> None:
        """Open the link now, so an event no e-mail could ever be made of is dead-lettered with its reason."""
        # Dead letters are replayable: once the key is fixed, an operator replays them and nothing is lost.
        if self._seal_key is None:
            raise PermanentFailure("notify-svc has no sealing key: set NOTIFY_SEAL_PRIVATE_KEY or NOTIFY_SEAL_KEY_FILE")
        try:
            link = event.open_link(self._seal_key.get_secret_value())
        except SealingError as exc:
            raise PermanentFailure(f"the link of {event.event_type} is not sealed to notify-svc's key: {exc}") from None
        # The opened link is only checked, never kept or logged.
        parts = urlsplit(link)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise PermanentFailure(f"the sealed link of {event.event_type} is not an http(s) URL")
