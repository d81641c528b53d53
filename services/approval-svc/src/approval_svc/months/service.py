"""Use cases of month approval. Each owns its transaction and writes its event to the outbox in it, so a month
changes and is announced together.

Who may do what: the client's people with ``month.approve`` (its owner) approve and unlock; the client and an
office whose integration is active read (the route's gate). The office never approves on the client's behalf:
the approval is the client's statement that its decisions are final.

The counts are this service's projection of buffer-svc's ``status.changed`` purchase events (``entry_changed``),
applied per entry only when newer. An entry first heard of after its month was approved is a late arrival: the
month is flagged and both sides are told (``month.late_arrival``); this also covers an invoice the buffer took in
a moment before the approval, whose event reached this service only after it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from approval_svc.integrations.domain import IntegrationState
from approval_svc.integrations.repository import IntegrationRepository
from approval_svc.months.domain import MonthCounts, MonthError, MonthState, check_approve, check_unlock
from approval_svc.months.repository import MonthRepository
from platform_common.auth.clock import Clock, system_clock
from platform_common.auth.principal import Principal
from platform_common.contracts import DocumentKind, StatusChanged
from platform_common.contracts.months import (
    ApprovedDocument,
    MonthApproved,
    MonthLateArrival,
    MonthUnlocked,
    Recipient,
)
from platform_common.db import Database
from platform_common.messaging.dispatch import PermanentFailure
from platform_common.messaging.outbox import Outbox

log = logging.getLogger(__name__)

Side = Literal["office", "client"]


@dataclass(frozen=True)
class People:
    """Whom a month's change is told to, from the client's active integrations."""

    client_name: str | None
    recipients: tuple[Recipient, ...]


class MonthApprovals:
    def __init__(self, db: Database, outbox: Outbox, clock: Clock = system_clock) -> None:
        self._db = db
        self._outbox = outbox
        self.clock = clock

    # --- reads ---------------------------------------------------------------------------------------------------

    async def months(self, client_nip: str) -> list[dict[str, Any]]:
        """Every month the client has invoices in or has approved once, the newest first."""
        async with self._db.sessionmaker() as session:
            repo = MonthRepository(session)
            rows = {r.period: r for r in await repo.of_client(client_nip)}
            counts = await repo.counts_by_period(client_nip)
        periods = sorted(set(rows) | set(counts), reverse=True)
        return [_view(client_nip, p, rows.get(p), counts.get(p, MonthCounts())) for p in periods]

    async def month(self, client_nip: str, period: str) -> dict[str, Any]:
        async with self._db.sessionmaker() as session:
            repo = MonthRepository(session)
            row = await repo.get(client_nip, period)
            counts = await repo.counts(client_nip, period)
        return _view(client_nip, period, row, counts)

    # --- the client's steps --------------------------------------------------------------------------------------

    async def approve(self, actor: Principal, client_nip: str, period: str) -> dict[str, Any]:
        """Approve: refused while an invoice of the month is unverified; ``month.approved`` lists what to book."""
        self._client_side(actor, client_nip)
        async with self._db.sessionmaker() as session, session.begin():
            repo = MonthRepository(session)
            now = self.clock()
            row = await self._locked_month(repo, client_nip, period, now)
            counts = await repo.counts(client_nip, period)
            check_approve(MonthState(row.state), counts)
            revision = row.revision + 1
            await repo.change(
                client_nip,
                period,
                {
                    "state": MonthState.APPROVED.value,
                    "revision": revision,
                    "approved_at": now,
                    "approved_by": actor.id,
                    # Counted from this approval on: what the client approved, it has seen.
                    "late_arrivals": 0,
                    "updated_at": now,
                },
            )
            people = await self._people(session, client_nip, sides=("office",))
            booked = await repo.booked(client_nip, period)
            await self._outbox.emit(
                session,
                MonthApproved(
                    client_nip=client_nip,
                    period=period,
                    approved_by=actor.id,
                    approved_at=now,
                    book_count=counts.book,
                    dont_book_count=counts.dont_book,
                    documents=tuple(ApprovedDocument(ksef_number=k, decision="book") for k in booked),
                    revision=revision,
                    client_name=people.client_name,
                    recipients=people.recipients,
                ),
                client_nip=client_nip,
            )
            fresh = await repo.get(client_nip, period)
        log.info("client %s approved %s (revision %d, %d to book)", client_nip, period, revision, counts.book)
        return _view(client_nip, period, fresh, counts)

    async def unlock(self, actor: Principal, client_nip: str, period: str) -> dict[str, Any]:
        """Reopen an approved month; refused once the office imported anything from it."""
        self._client_side(actor, client_nip)
        async with self._db.sessionmaker() as session, session.begin():
            repo = MonthRepository(session)
            now = self.clock()
            row = await self._locked_month(repo, client_nip, period, now)
            counts = await repo.counts(client_nip, period)
            check_unlock(MonthState(row.state), counts)
            revision = row.revision + 1
            await repo.change(
                client_nip,
                period,
                {
                    "state": MonthState.OPEN.value,
                    "revision": revision,
                    "unlocked_at": now,
                    "unlocked_by": actor.id,
                    "updated_at": now,
                },
            )
            people = await self._people(session, client_nip, sides=("office",))
            await self._outbox.emit(
                session,
                MonthUnlocked(
                    client_nip=client_nip,
                    period=period,
                    revision=revision,
                    unlocked_by=actor.id,
                    unlocked_at=now,
                    client_name=people.client_name,
                    recipients=people.recipients,
                ),
                client_nip=client_nip,
            )
            fresh = await repo.get(client_nip, period)
        log.info("client %s unlocked %s (revision %d)", client_nip, period, revision)
        return _view(client_nip, period, fresh, counts)

    # --- buffer-svc's entries (status.changed) -------------------------------------------------------------------

    async def entry_changed(self, session: AsyncSession, event: StatusChanged, client_nip: str) -> None:
        """Apply a purchase entry's state when newer than the one held; a new entry in an approved month is a
        late arrival. Sales documents are not this service's business and are ignored."""
        if event.document_kind is not DocumentKind.PURCHASE:
            return
        if event.period is None or event.revision is None or event.decision is None or event.ksef_number is None:
            raise PermanentFailure("a purchase status.changed without its period, revision, decision or KSeF number")
        repo = MonthRepository(session)
        values = {
            "period": event.period,
            "decision": event.decision,
            "imported": bool(event.imported),
            "archived": bool(event.archived),
            "revision": event.revision,
            "updated_at": event.changed_at,
        }
        held = await repo.entry(client_nip, event.ksef_number)
        if held is not None:
            if held.revision < event.revision:
                await repo.change_entry(client_nip, event.ksef_number, values)
            return
        await repo.add_entry({"client_nip": client_nip, "ksef_number": event.ksef_number, **values})
        month = await repo.get(client_nip, event.period, lock=True)
        if month is None or month.state != MonthState.APPROVED:
            return
        late_arrivals = month.late_arrivals + 1
        await repo.change(client_nip, event.period, {"late_arrivals": late_arrivals, "updated_at": self.clock()})
        people = await self._people(session, client_nip, sides=("office", "client"))
        await self._outbox.emit(
            session,
            MonthLateArrival(
                client_nip=client_nip,
                period=event.period,
                ksef_number=event.ksef_number,
                late_arrivals=late_arrivals,
                arrived_at=event.changed_at,
                client_name=people.client_name,
                recipients=people.recipients,
            ),
            client_nip=client_nip,
        )
        log.info("client %s: late arrival %s in approved %s", client_nip, event.ksef_number, event.period)

    # --- helpers -------------------------------------------------------------------------------------------------

    @staticmethod
    def _client_side(actor: Principal, client_nip: str) -> None:
        if actor.org_kind != "client" or client_nip not in actor.nips:
            raise MonthError(
                "client-only", "Only the client company approves or unlocks its month, not the office.", status=403
            )

    @staticmethod
    async def _locked_month(repo: MonthRepository, client_nip: str, period: str, now: datetime) -> Row[Any]:
        # The row lock serialises an approval racing an unlock (or a late arrival) of the same month.
        await repo.ensure(client_nip, period, now)
        row = await repo.get(client_nip, period, lock=True)
        assert row is not None
        return row

    @staticmethod
    async def _people(session: AsyncSession, client_nip: str, *, sides: tuple[Side, ...]) -> People:
        """The offices working with the client now (at their return addresses) and the client's contact
        addresses they asked consent of; each address once."""
        integrations = await IntegrationRepository(session).of_client(client_nip)
        rows = [r for r in integrations if r.state == IntegrationState.ACTIVE]
        recipients: dict[tuple[str, str], Recipient] = {}
        for r in rows:
            addresses: list[tuple[Side, str, str]] = []
            if "office" in sides:
                addresses.append(("office", r.return_email, r.return_language))
            if "client" in sides:
                addresses.append(("client", r.client_email, r.client_language))
            for side, email, language in addresses:
                recipients.setdefault(
                    (side, email.lower()),
                    Recipient(email=email, language=language, side=side, office_name=r.office_name),
                )
        client_name = next((r.client_name for r in rows if r.client_name), None)
        return People(client_name=client_name, recipients=tuple(recipients.values()))


def _view(client_nip: str, period: str, row: Row[Any] | None, counts: MonthCounts) -> dict[str, Any]:
    state = MonthState(row.state) if row is not None else MonthState.OPEN
    blocked: MonthError | None = None
    try:
        (check_unlock if state is MonthState.APPROVED else check_approve)(state, counts)
    except MonthError as exc:
        blocked = exc
    return {
        "client_nip": client_nip,
        "period": period,
        "state": state.value,
        "revision": row.revision if row is not None else 0,
        "counts": {
            "unverified": counts.unverified,
            "book": counts.book,
            "dont_book": counts.dont_book,
            "imported": counts.imported,
            "archived": counts.archived,
            "entries": counts.entries,
        },
        "late_arrivals": row.late_arrivals if row is not None else 0,
        "approved_at": row.approved_at if row is not None else None,
        "approved_by": row.approved_by if row is not None else None,
        "unlocked_at": row.unlocked_at if row is not None else None,
        "unlocked_by": row.unlocked_by if row is not None else None,
        "can_approve": state is MonthState.OPEN and blocked is None,
        "can_unlock": state is MonthState.APPROVED and blocked is None,
        "blocked_by": None if blocked is None else {"code": blocked.code, "detail": str(blocked)},
    }
