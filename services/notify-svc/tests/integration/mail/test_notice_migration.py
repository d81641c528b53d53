"""notify_0004 lets a mail carry no link; on SQLite it rebuilds ``mail_message``, which the delivery log refers to
with ON DELETE CASCADE: the log of mail already sent must survive the rebuild."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from notify_svc.db import mail_attempt, mail_message
from notify_svc.main import DEFINITION
from platform_common.db import Database
from platform_common.migrations import upgrade
from platform_common.settings import DatabaseSettings


async def test_the_delivery_log_survives_the_upgrade_and_a_notice_fits_after_it(db_url: str) -> None:
    await asyncio.to_thread(upgrade, DEFINITION.migrations, db_url, DEFINITION.schema, "notify_0003")
    db = Database(DatabaseSettings(url=db_url), DEFINITION.schema)
    now = datetime.now(UTC)
    sent = uuid.uuid4()
    try:
        async with db.sessionmaker() as session, session.begin():
            await session.execute(
                insert(mail_message).values(
                    id=sent, kind="invitation", recipient="a@example.com", subject_id=uuid.uuid4(),
                    sealed_link="hpke1.x", expires_at=now, status="sent", created_at=now,
                )
            )  # fmt: skip
            await session.execute(insert(mail_attempt).values(mail_id=sent, attempt=1, at=now, outcome="sent"))

        await asyncio.to_thread(upgrade, DEFINITION.migrations, db_url, DEFINITION.schema)

        async with db.sessionmaker() as session, session.begin():
            assert (await session.execute(select(func.count()).select_from(mail_attempt))).scalar() == 1
            await session.execute(
                insert(mail_message).values(
                    id=uuid.uuid4(), kind="consent_refused", recipient="b@example.com", subject_id=uuid.uuid4(),
                    sealed_link=None, expires_at=None, status="pending", created_at=now,
                )
            )  # fmt: skip
            assert (await session.execute(select(func.count()).select_from(mail_message))).scalar() == 2
    finally:
        await db.dispose()
