"""Every query of the mail capability."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.db import mail_attempt, mail_message
from notify_svc.mail.domain import AttemptOutcome, MailStatus


@dataclass(frozen=True)
class MailRecord:
    id: uuid.UUID
    kind: str
    recipient: str
    subject_id: uuid.UUID
    # Both None for a notice (no link to open, nothing that stops being worth sending).
    sealed_link: str | None
    expires_at: datetime | None
    status: str
    created_at: datetime
    language: str = "pl"
    details: dict[str, Any] | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True)
class Attempt:
    mail_id: uuid.UUID
    attempt: int
    at: datetime
    outcome: str
    smtp_code: int | None = None
    detail: str | None = None


@dataclass(frozen=True)
class AttemptEnd:
    """What an attempt changes on its mail."""

    outcome: AttemptOutcome
    now: datetime
    smtp_code: int | None = None
    detail: str | None = None
    next_attempt_at: datetime | None = None
    status: MailStatus = field(default=MailStatus.PENDING)


_INSERTED = {c.name for c in mail_message.columns} - {"attempts", "next_attempt_at", "last_error", "sent_at"}


class MailRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, record: MailRecord) -> None:
        await self.session.execute(
            insert(mail_message).values({k: v for k, v in record.__dict__.items() if k in _INSERTED})
        )

    async def get(self, mail_id: uuid.UUID) -> MailRecord | None:
        row = (await self.session.execute(select(mail_message).where(mail_message.c.id == mail_id))).first()
        return MailRecord(**row._mapping) if row is not None else None

    async def by_status(self, status: str) -> list[MailRecord]:
        rows = await self.session.execute(
            select(mail_message).where(mail_message.c.status == status).order_by(mail_message.c.created_at)
        )
        return [MailRecord(**row._mapping) for row in rows]

    async def recent(self, limit: int) -> list[MailRecord]:
        rows = await self.session.execute(select(mail_message).order_by(mail_message.c.created_at.desc()).limit(limit))
        return [MailRecord(**row._mapping) for row in rows]

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[MailRecord]:
        """Pending mail due now, each claimed for ``lease`` by moving its next attempt past it. The claim is a
        conditional update, so of several senders (replicas) exactly one gets each mail."""
        due = and_(
            mail_message.c.status == MailStatus.PENDING.value,
            or_(mail_message.c.next_attempt_at.is_(None), mail_message.c.next_attempt_at <= now),
        )
        rows = await self.session.execute(
            select(mail_message).where(due).order_by(mail_message.c.created_at).limit(limit)
        )
        claimed = []
        for row in rows.all():
            result = await self.session.execute(
                update(mail_message).where(mail_message.c.id == row.id, due).values(next_attempt_at=now + lease)
            )
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(MailRecord(**row._mapping))
        return claimed

    async def release(self, mail_ids: list[uuid.UUID], claimed_until: datetime) -> None:
        """Give back claimed mail not attempted (only while the claim is still this one's)."""
        await self.session.execute(
            update(mail_message)
            .where(mail_message.c.id.in_(mail_ids), mail_message.c.next_attempt_at == claimed_until)
            .values(next_attempt_at=None)
        )

    async def next_due_at(self) -> datetime | None:
        return (
            await self.session.execute(
                select(mail_message.c.next_attempt_at)
                .where(mail_message.c.status == MailStatus.PENDING.value)
                .order_by(mail_message.c.next_attempt_at.is_not(None), mail_message.c.next_attempt_at)
                .limit(1)
            )
        ).scalar()

    async def end_attempt(self, mail: MailRecord, end: AttemptEnd) -> None:
        attempt = mail.attempts + 1
        await self.session.execute(
            insert(mail_attempt).values(
                mail_id=mail.id,
                attempt=attempt,
                at=end.now,
                outcome=end.outcome.value,
                smtp_code=end.smtp_code,
                detail=end.detail,
            )
        )
        values: dict[str, Any] = {
            "attempts": attempt,
            "status": end.status.value,
            "next_attempt_at": end.next_attempt_at,
            "last_error": end.detail if end.outcome is not AttemptOutcome.SENT else None,
        }
        if end.outcome is AttemptOutcome.SENT:
            values["sent_at"] = end.now
        await self.session.execute(update(mail_message).where(mail_message.c.id == mail.id).values(**values))

    async def expire(self, mail: MailRecord) -> None:
        await self.session.execute(
            update(mail_message)
            .where(mail_message.c.id == mail.id)
            .values(status=MailStatus.EXPIRED.value, next_attempt_at=None, last_error="the link expired unsent")
        )

    async def attempts_of(self, mail_id: uuid.UUID) -> list[Attempt]:
        rows = await self.session.execute(
            select(mail_attempt).where(mail_attempt.c.mail_id == mail_id).order_by(mail_attempt.c.attempt)
        )
        return [Attempt(**row._mapping) for row in rows]
