"""Every query of the mail capability."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from notify_svc.db import mail_message


@dataclass(frozen=True)
class MailRecord:
    id: uuid.UUID
    kind: str
    recipient: str
    subject_id: uuid.UUID
    sealed_link: str
    expires_at: datetime
    status: str
    created_at: datetime


class MailRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, record: MailRecord) -> None:
        await self.session.execute(insert(mail_message).values(**record.__dict__))

    async def by_status(self, status: str) -> list[MailRecord]:
        rows = await self.session.execute(
            select(mail_message).where(mail_message.c.status == status).order_by(mail_message.c.created_at)
        )
        return [MailRecord(**row._mapping) for row in rows]
