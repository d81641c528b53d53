"""Use cases of the purchase buffer. Each owns its transaction; a change, its communication-log line and its
``status.changed`` event commit together.

Who may do what (``platform_common.auth`` has already checked the permission and that the caller may touch the
client at all, against the live integration projection):
- the client's people (``buffer.decide``) decide and describe, until the month is approved;
- the office (``buffer.decide``) may override a decision until it imported the entry, logged as an override;
- the office (``buffer.import``) imports what is marked to book, archives what is marked not to, restores;
- every read by somebody outside the client goes into the access ledger first.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from buffer_svc.communication.service import CommunicationLog, line
from buffer_svc.ledger.service import AccessLedger
from buffer_svc.months.service import MonthLocks
from buffer_svc.purchases.domain import (
    MAX_BULK,
    SORTS,
    BufferError,
    Decision,
    EntryState,
    Side,
    Suggestion,
    check_archive,
    check_edit,
    clean_description,
    decode_cursor,
    encode_cursor,
    gate_refusal,
    period_of,
)
from buffer_svc.purchases.repository import EntryFilter, EntryRepository
from platform_common.auth.clock import Clock, system_clock
from platform_common.auth.principal import Principal
from platform_common.contracts import DocumentKind, InvoiceFetched, StatusChanged
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox

log = logging.getLogger(__name__)


def side_of(principal: Principal) -> Side:
    return "client" if principal.org_kind == "client" else "office"


@dataclass(frozen=True)
class EntryView:
    row: Row[Any]
    month_locked: bool
    suggestion: Suggestion | None = None
    corrects_entry_id: uuid.UUID | None = None
    corrections: tuple[tuple[uuid.UUID, str], ...] = ()


@dataclass(frozen=True)
class EntryPage:
    items: list[EntryView]
    next_cursor: str | None


@dataclass(frozen=True)
class Outcome:
    entry_id: uuid.UUID | None
    ksef_number: str | None
    result: str  # changed | unchanged | refused | not_found | imported | already_imported
    code: str | None = None
    message: str | None = None
    reason: dict[str, str] | None = None


@dataclass
class DecisionChange:
    decision: Decision | None = None
    description: str | None = None
    # A description of None is "leave it"; clearing one is asked for explicitly.
    set_description: bool = False
    outcomes: list[Outcome] = field(default_factory=list)


class PurchaseBuffer:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        months: MonthLocks,
        communication: CommunicationLog,
        ledger: AccessLedger,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._months = months
        self._log = communication
        self._ledger = ledger
        self.clock = clock

    # --- ingest (invoice.fetched) --------------------------------------------------------------------------------

    async def ingest(self, session: AsyncSession, event: InvoiceFetched) -> bool:
        """One entry per invoice and client; a redelivered or re-fetched invoice changes nothing. An invoice
        dated in an approved month is still added (nothing is lost) and flagged as a late arrival."""
        nip, period, now = event.client_nip, period_of(event.p_1), self.clock()
        late = bool(await self._months.locked(session, nip, {period}))
        entry_id = uuid.uuid4()
        values = {
            "id": entry_id,
            "client_nip": nip,
            "ksef_number": event.ksef_number,
            "period": period,
            "subject_role": event.subject_role,
            "seller_nip": event.seller.nip,
            "seller_name": event.seller.name,
            "invoice_number": event.p_2,
            "issue_date": event.p_1,
            "acquisition_date": event.acquisition_date,
            "currency": event.currency,
            "net_amount": event.net_amount,
            "vat_amount": event.vat_amount,
            "gross_amount": event.gross_amount,
            "vat_amount_pln": event.vat_amount_pln,
            "invoice_type": event.invoice_type,
            "corrected_ksef_number": event.corrected_ksef_number,
            "corrected_invoice_number": event.corrected_invoice_number,
            "invoice_hash": event.invoice_hash,
            "xml_ref": event.xml_ref,
            "received_at": now,
            "late_arrival": late,
            "decision": Decision.UNVERIFIED.value,
            "revision": 1,
        }
        repo = EntryRepository(session)
        if not await repo.add(values):
            return False
        detail = {"invoice_number": event.p_2, "seller_nip": event.seller.nip, "period": period}
        await self._log.record(
            session,
            line(
                nip,
                "late_arrival" if late else "invoice_received",
                now,
                entry_id=entry_id,
                ksef_number=event.ksef_number,
                actor_side="platform",
                detail=detail,
            ),
        )
        await self._announce(session, values, previous=None, status=Decision.UNVERIFIED.value, side="platform")
        if late:
            log.info("client %s: late arrival %s in approved month %s", nip, event.ksef_number, period)
        return True

    # --- reads ---------------------------------------------------------------------------------------------------

    async def page(
        self,
        principal: Principal,
        client_nip: str,
        where: EntryFilter,
        *,
        sort: str,
        cursor: str | None,
        limit: int,
    ) -> EntryPage:
        after = decode_cursor(cursor, sort) if cursor else None
        async with self._db.sessionmaker() as session, session.begin():
            repo = EntryRepository(session)
            rows = list(await repo.page(client_nip, where, sort=sort, after=after, limit=limit + 1))
            more, rows = len(rows) > limit, rows[:limit]
            views = await self._views(session, repo, client_nip, rows)
            await self._ledger.record(
                session, principal, client_nip, "list", self.clock(), target=where.period, items=len(rows)
            )
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = encode_cursor(sort, getattr(last, SORTS[sort][0]), str(last.id))
        return EntryPage(items=views, next_cursor=next_cursor)

    async def one(self, principal: Principal, client_nip: str, entry_id: uuid.UUID) -> EntryView:
        async with self._db.sessionmaker() as session, session.begin():
            repo = EntryRepository(session)
            row = await repo.get(client_nip, entry_id)
            if row is None:
                raise BufferError("not-found", "The invoice is not in this client's buffer.", status=404)
            (view,) = await self._views(session, repo, client_nip, [row], with_corrections=True)
            await self._ledger.record(session, principal, client_nip, "read", self.clock(), target=row.ksef_number)
        return view

    async def ready(
        self, principal: Principal, client_nip: str, period: str | None, *, include_imported: bool, fmt: str
    ) -> Sequence[Row[Any]]:
        """The ERP hand-off: what is marked to book and not archived (and not imported yet, unless asked)."""
        async with self._db.sessionmaker() as session, session.begin():
            rows = await EntryRepository(session).ready(client_nip, period, include_imported=include_imported)
            await self._ledger.record(
                session, principal, client_nip, f"export_{fmt}", self.clock(), target=period, items=len(rows)
            )
        return rows

    async def months(self, principal: Principal, client_nip: str) -> list[dict[str, Any]]:
        """Per month: entries by decision, imported, late arrivals, and whether it is approved (locked)."""
        async with self._db.sessionmaker() as session, session.begin():
            counts = await EntryRepository(session).month_counts(client_nip)
            locks = await self._months.of_client(session, client_nip)
            await self._ledger.record(session, principal, client_nip, "months", self.clock(), items=len(counts))
        months: dict[str, dict[str, Any]] = {}
        for r in counts:
            month = months.setdefault(
                r.period,
                {"period": r.period, "entries": 0, "imported": 0, "late_arrivals": 0, "archived": 0}
                | {d.value: 0 for d in Decision},
            )
            if r.archived:
                month["archived"] += r.entries
            else:
                month[r.decision] += r.entries
                month["entries"] += r.entries
            month["imported"] += r.imported
            month["late_arrivals"] += int(r.late or 0)
        for period in locks:
            months.setdefault(
                period,
                {"period": period, "entries": 0, "imported": 0, "late_arrivals": 0, "archived": 0}
                | {d.value: 0 for d in Decision},
            )
        for period, month in months.items():
            lock = locks.get(period)
            month["approved"] = lock is not None and lock.state == "approved"
            month["approval_changed_at"] = lock.changed_at if lock is not None else None
        return [months[p] for p in sorted(months, reverse=True)]

    async def _views(
        self,
        session: AsyncSession,
        repo: EntryRepository,
        client_nip: str,
        rows: Sequence[Row[Any]],
        *,
        with_corrections: bool = False,
    ) -> list[EntryView]:
        locked = await self._months.locked(session, client_nip, {r.period for r in rows})
        undecided_sellers = {r.seller_nip for r in rows if r.decision == Decision.UNVERIFIED.value and r.seller_nip}
        basis = await repo.last_decisions(client_nip, undecided_sellers)
        originals = {
            r.ksef_number: r.id
            for r in await repo.many(
                client_nip, ksef_numbers={r.corrected_ksef_number for r in rows if r.corrected_ksef_number}
            )
        }
        views = []
        for r in rows:
            suggestion = None
            b = basis.get(r.seller_nip) if r.decision == Decision.UNVERIFIED.value else None
            if b is not None and b.ksef_number != r.ksef_number:
                suggestion = Suggestion(
                    decision=Decision(b.decision),
                    description=b.description,
                    based_on_ksef_number=b.ksef_number,
                    based_on_invoice_number=b.invoice_number,
                    decided_at=b.decided_at,
                )
            corrections: tuple[tuple[uuid.UUID, str], ...] = ()
            if with_corrections:
                corrections = tuple((c.id, c.ksef_number) for c in await repo.corrections_of(client_nip, r.ksef_number))
            views.append(
                EntryView(
                    row=r,
                    month_locked=r.period in locked,
                    suggestion=suggestion,
                    corrects_entry_id=originals.get(r.corrected_ksef_number) if r.corrected_ksef_number else None,
                    corrections=corrections,
                )
            )
        return views

    # --- decisions -----------------------------------------------------------------------------------------------

    async def decide(
        self, principal: Principal, client_nip: str, entry_ids: Sequence[uuid.UUID], change: DecisionChange
    ) -> list[Outcome]:
        """Set a decision and/or description on a selection; each entry's outcome is reported, and the ones that
        may change do (a locked month or an imported entry refuses only itself)."""
        if change.decision is None and not change.set_description:
            raise BufferError("nothing-to-change", "Give a decision, a description, or both.", status=422)
        if not entry_ids:
            raise BufferError("empty-selection", "Select at least one invoice.", status=422)
        if len(entry_ids) > MAX_BULK:
            raise BufferError("selection-too-large", f"At most {MAX_BULK} invoices at once.", status=422)
        description = clean_description(change.description) if change.set_description else None
        side = side_of(principal)
        outcomes: list[Outcome] = []
        async with self._db.sessionmaker() as session, session.begin():
            repo = EntryRepository(session)
            rows = {r.id: r for r in await repo.many(client_nip, ids=entry_ids, lock=True)}
            locked = await self._months.locked(session, client_nip, {r.period for r in rows.values()})
            now = self.clock()
            for entry_id in dict.fromkeys(entry_ids):
                row = rows.get(entry_id)
                if row is None:
                    outcomes.append(Outcome(entry_id, None, "not_found", "not-found", "No such invoice here."))
                    continue
                try:
                    check_edit(self._state(row, locked), side)
                except BufferError as refusal:
                    outcomes.append(Outcome(row.id, row.ksef_number, "refused", refusal.code, str(refusal)))
                    continue
                values: dict[str, Any] = {}
                if change.decision is not None and change.decision.value != row.decision:
                    values["decision"] = change.decision.value
                if change.set_description and description != row.description:
                    values["description"] = description
                if not values:
                    outcomes.append(Outcome(row.id, row.ksef_number, "unchanged"))
                    continue
                values |= {"decided_at": now, "decided_by": principal.id[:64], "decided_by_side": side}
                await repo.change(row.id, values)
                kind = "override" if side == "office" else "decision_changed"
                detail = {"from": row.decision, "to": values.get("decision", row.decision)}
                if "description" in values:
                    detail["description"] = description
                await self._log.record(
                    session,
                    line(
                        client_nip,
                        kind,
                        now,
                        entry_id=row.id,
                        ksef_number=row.ksef_number,
                        actor=principal.id,
                        actor_side=side,
                        detail=detail,
                    ),
                )
                if "decision" in values:
                    await self._announce_row(session, repo, row, previous=row.decision, side=side)
                outcomes.append(Outcome(row.id, row.ksef_number, "changed"))
        return outcomes

    # --- the office's intake -------------------------------------------------------------------------------------

    async def import_entries(
        self,
        principal: Principal,
        client_nip: str,
        *,
        entry_ids: Iterable[uuid.UUID] = (),
        ksef_numbers: Iterable[str] = (),
    ) -> list[Outcome]:
        """ "Realizacja": the booking gate lets through only what is marked to book; importing again is
        idempotent (reported as already imported, nothing changes), so an ERP may retry a whole batch."""
        ids, numbers = list(dict.fromkeys(entry_ids)), list(dict.fromkeys(ksef_numbers))
        if not ids and not numbers:
            raise BufferError("empty-selection", "Name at least one invoice (entry id or KSeF number).", status=422)
        if len(ids) + len(numbers) > MAX_BULK:
            raise BufferError("selection-too-large", f"At most {MAX_BULK} invoices at once.", status=422)
        outcomes: list[Outcome] = []
        async with self._db.sessionmaker() as session, session.begin():
            repo = EntryRepository(session)
            rows = await repo.many(client_nip, ids=ids, ksef_numbers=numbers, lock=True)
            found_ids, found_numbers = {r.id for r in rows}, {r.ksef_number for r in rows}
            outcomes += [
                Outcome(i, None, "not_found", "not-found", "No such invoice here.") for i in ids if i not in found_ids
            ]
            outcomes += [
                Outcome(None, n, "not_found", "not-found", "No such invoice here.")
                for n in numbers
                if n not in found_numbers
            ]
            now = self.clock()
            for row in rows:
                if row.imported_at is not None:
                    outcomes.append(Outcome(row.id, row.ksef_number, "already_imported"))
                    continue
                reason = gate_refusal(self._state(row, set()))
                if reason is not None:
                    outcomes.append(
                        Outcome(row.id, row.ksef_number, "refused", reason["code"], reason["en"], reason=reason)
                    )
                    await self._log.record(
                        session,
                        line(
                            client_nip,
                            "import_refused",
                            now,
                            entry_id=row.id,
                            ksef_number=row.ksef_number,
                            actor=principal.id,
                            actor_side="office",
                            detail={"reason": reason["pl"]},
                        ),
                    )
                    continue
                await repo.change(row.id, {"imported_at": now, "imported_by": principal.id[:64]})
                await self._log.record(
                    session,
                    line(
                        client_nip,
                        "imported",
                        now,
                        entry_id=row.id,
                        ksef_number=row.ksef_number,
                        actor=principal.id,
                        actor_side="office",
                    ),
                )
                await self._announce_row(session, repo, row, previous=row.decision, side="office", status="imported")
                outcomes.append(Outcome(row.id, row.ksef_number, "imported"))
            await self._ledger.record(session, principal, client_nip, "import", now, items=len(rows))
        return outcomes

    async def archive(self, principal: Principal, client_nip: str, entry_id: uuid.UUID, *, restore: bool) -> EntryView:
        """Archive what the client said not to book (never deleted), or restore it."""
        async with self._db.sessionmaker() as session, session.begin():
            repo = EntryRepository(session)
            row = await repo.get(client_nip, entry_id, lock=True)
            if row is None:
                raise BufferError("not-found", "The invoice is not in this client's buffer.", status=404)
            now = self.clock()
            if restore:
                if row.archived_at is None:
                    raise BufferError("not-archived", "The invoice is not in the archive.")
                values: dict[str, Any] = {"archived_at": None, "archived_by": None}
            else:
                if row.archived_at is not None:
                    raise BufferError("entry-archived", "The invoice is in the archive already.")
                check_archive(self._state(row, set()))
                values = {"archived_at": now, "archived_by": principal.id[:64]}
            await repo.change(row.id, values)
            kind = "restored" if restore else "archived"
            await self._log.record(
                session,
                line(
                    client_nip,
                    kind,
                    now,
                    entry_id=row.id,
                    ksef_number=row.ksef_number,
                    actor=principal.id,
                    actor_side=side_of(principal),
                ),
            )
            await self._announce_row(session, repo, row, previous=row.decision, side=side_of(principal), status=kind)
            fresh = await repo.get(client_nip, entry_id)
            assert fresh is not None
            (view,) = await self._views(session, repo, client_nip, [fresh])
        return view

    # --- the communication log and the ledger, read ---------------------------------------------------------------

    async def communication(
        self, principal: Principal, client_nip: str, *, entry_id: uuid.UUID | None, after: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        rows = await self._log.read(client_nip, entry_id=entry_id, after=after, limit=limit)
        async with self._db.sessionmaker() as session, session.begin():
            await self._ledger.record(session, principal, client_nip, "log", self.clock(), items=len(rows))
        return rows

    async def access_ledger(
        self, principal: Principal, client_nip: str, *, before: int | None, limit: int
    ) -> Sequence[Row[Any]]:
        """The client's own owner reads who read its invoices; nobody else does (an office reading about itself
        would learn other offices' names)."""
        if principal.org_kind != "client" or client_nip not in principal.nips:
            raise BufferError("not-found", "The resource does not exist.", status=404)
        return await self._ledger.read(client_nip, before=before, limit=limit)

    # --- helpers -------------------------------------------------------------------------------------------------

    @staticmethod
    def _state(row: Row[Any], locked: set[str]) -> EntryState:
        return EntryState(
            decision=Decision(row.decision),
            imported=row.imported_at is not None,
            archived=row.archived_at is not None,
            month_locked=row.period in locked,
        )

    async def _announce_row(
        self,
        session: AsyncSession,
        repo: EntryRepository,
        row: Row[Any],
        *,
        previous: str | None,
        side: Side,
        status: str | None = None,
    ) -> None:
        fresh = await repo.get(row.client_nip, row.id)
        assert fresh is not None
        await self._announce(
            session, dict(fresh._mapping), previous=previous, status=status or fresh.decision, side=side
        )

    async def _announce(
        self,
        session: AsyncSession,
        entry: Mapping[str, Any],
        *,
        previous: str | None,
        status: str,
        side: Side | Literal["platform"],
    ) -> None:
        """``status.changed`` with the entry's whole state after the change (approval-svc counts months from it)."""
        await self._outbox.emit(
            session,
            StatusChanged(
                document_kind=DocumentKind.PURCHASE,
                document_id=str(entry["id"]),
                ksef_number=entry["ksef_number"],
                previous_status=previous,
                status=status,
                changed_at=self.clock(),
                period=entry["period"],
                revision=entry["revision"],
                decision=entry["decision"],
                imported=entry.get("imported_at") is not None,
                archived=entry.get("archived_at") is not None,
                changed_by_side=side,
            ),
            client_nip=entry["client_nip"],
        )
