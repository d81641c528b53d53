"""Use cases of the sales invoices: submit (validated, idempotent), read one with its history and documents, list.

A submission is stored as ``queued`` with its ``status.changed`` event in one transaction and wakes the sender
after the commit; from there on the sender owns it (sales/sender.py). Nothing here calls KSeF.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.outages.service import Availability
from ksef_gateway.sales.deadlines import (
    NoMatchingOutage,
    OfflineMode,
    alert_due,
    mode_for,
    overdue,
    resolve_deadline,
)
from ksef_gateway.sales.domain import SalesStatus, SubmissionError, request_fingerprint
from ksef_gateway.sales.outages import legal_outages
from ksef_gateway.sales.qr import kod_ii
from ksef_gateway.sales.repository import SalesRepository
from ksef_gateway.sales.rules import AutoSendDecision, AutoSendRules, backfill_due, backfill_window, decide
from ksef_gateway.sales.validation import InvoiceFacts, read_facts, validate_fa3
from ksef_gateway.vault.offline import OfflineCertificates
from platform_common.auth.clock import Clock, system_clock
from platform_common.contracts.outages import DeadlineAlert, OutageSource, SalesDeadlineAlerted
from platform_common.contracts.status import DocumentKind, StatusChanged
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox, wake_after_commit

log = logging.getLogger(__name__)

# KSeF's cap on an invoice without attachments (REFERENCE.md §4 limits: maxInvoiceSizeInMB = 1).
MAX_INVOICE_BYTES = 1_000_000
MAX_ERRORS_SHOWN = 50


@dataclass(frozen=True)
class Submitted:
    row: Row[Any]
    replayed: bool  # answered from an earlier request with the same Idempotency-Key


@dataclass(frozen=True)
class SalesBacklog:
    """A client's sales invoices as the operators' overview shows them."""

    by_status: dict[str, int]
    stuck: int  # sending or submitted, not moved for longer than the caller's threshold
    stuck_since: datetime | None  # the oldest of those moves
    offline_queued: int  # issued offline, not yet in KSeF (held, queued, sending, submitted)
    offline_nearest_deadline: date | None
    offline_awaiting_deadline: int  # of those, without a deadline while their outage goes on


class SalesInvoices:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        offline_certificates: OfflineCertificates,
        availability: Availability,
        *,
        qr_base: str,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._offline_certificates = offline_certificates
        self._availability = availability
        self.qr_base = qr_base
        self.clock = clock
        self.queued = asyncio.Event()  # set after a submission commits: the sender starts at once

    async def submit(
        self,
        client_nip: str,
        xml: bytes,
        *,
        source: str,
        content_type: str,
        body: bytes,
        idempotency_key: str | None,
        submitted_by: str,
        offline: OfflineMode | None = None,
        corrects: uuid.UUID | None = None,
    ) -> Submitted:
        fingerprint = request_fingerprint(content_type, body)
        if idempotency_key is not None:
            earlier = await self._earlier(client_nip, idempotency_key, fingerprint)
            if earlier is not None:
                return Submitted(earlier, replayed=True)
        if len(xml) > MAX_INVOICE_BYTES:
            raise SubmissionError(
                "invoice-too-large", f"The invoice has {len(xml)} bytes; KSeF takes at most 1 MB.", status=413
            )
        errors = validate_fa3(xml)
        if errors:
            raise SubmissionError(
                "invalid-fa3",
                f"The invoice does not conform to the FA(3) schema: {len(errors)} error(s).",
                status=422,
                errors=[{"line": e.line, "column": e.column, "message": e.message} for e in errors[:MAX_ERRORS_SHOWN]],
            )
        facts = read_facts(xml)
        if facts.seller_nip != client_nip:
            raise SubmissionError(
                "seller-not-client",
                f"The seller (Podmiot1 NIP {facts.seller_nip}) is not the client {client_nip}: a client sends its own"
                " sales invoices.",
                status=422,
            )
        correction: dict[str, Any] = {}
        if corrects is not None:
            correction = await self._correction_of(client_nip, corrects)
            offline = OfflineMode(correction.pop("offline_mode"))
        now = self.clock()
        offline_values, offline_detail = await self._offline(client_nip, xml, facts.issue_date, offline, now)
        held = None if offline_values else await self._held_by(client_nip, facts)
        invoice_id = uuid.uuid4()
        status = SalesStatus.HELD if held is not None else SalesStatus.QUEUED
        values = (
            offline_values
            | correction
            | {
                "id": invoice_id,
                "client_nip": client_nip,
                "idempotency_key": idempotency_key,
                "request_fingerprint": fingerprint,
                "source": source,
                "xml": xml,
                "invoice_hash": sha256_b64(xml),
                "invoice_number": facts.invoice_number,
                "issue_date": facts.issue_date,
                "seller_nip": facts.seller_nip,
                "buyer_nip": facts.buyer_nip,
                "invoice_type": facts.invoice_type,
                "currency": facts.currency,
                "gross_amount": facts.gross,
                "held_by_rule": held.rule if held is not None else None,
                "status": status.value,
                "attempts": 0,
                "submitted_by": submitted_by,
                "created_at": now,
                "updated_at": now,
            }
        )
        try:
            async with self._db.one_writer(), self._db.sessionmaker() as session, session.begin():
                detail = {"by": submitted_by, "source": source} | offline_detail
                if held is not None:
                    detail |= {"held_by_rule": held.rule, "reason": {"pl": held.reason_pl, "en": held.reason_en}}
                if correction:
                    detail |= {"corrects": str(correction["corrects_invoice_id"])}
                await SalesRepository(session).add(values, at=now, detail=detail)
                await self._outbox.emit(
                    session,
                    StatusChanged(
                        document_kind=DocumentKind.SALES,
                        document_id=str(invoice_id),
                        previous_status=None,
                        status=status.value,
                        changed_at=now,
                    ),
                    client_nip=client_nip,
                )
                wake_after_commit(session, self.queued)
        except IntegrityError:
            # Two requests with one key at the same moment: the first stored wins, the other answers with it.
            if idempotency_key is None:
                raise
            earlier = await self._earlier(client_nip, idempotency_key, fingerprint)
            if earlier is None:
                raise
            return Submitted(earlier, replayed=True)
        async with self._db.sessionmaker() as session:
            row = await SalesRepository(session).get(client_nip, invoice_id)
        assert row is not None
        return Submitted(row, replayed=False)

    async def _offline(
        self, client_nip: str, xml: bytes, issue_date: date, chosen: OfflineMode | None, now: datetime
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The offline columns of a new invoice and what its history says about them.

        Chosen (offline24, or a technical correction of an offline invoice): KOD II is required, so no Offline
        certificate is a 422. Not chosen but KSeF is down (REFERENCE.md §12): the mode follows the outage
        (Latarnia's announcement, or offline24 while only our probes see KSeF down); without an Offline
        certificate no KOD II can be made, so the invoice just waits in the queue for KSeF, as an online one.
        """
        mode = chosen or self._outage_mode()
        if mode is None:
            return {}, {}
        detail: dict[str, Any] = {"offline_mode": mode.value} | ({} if chosen else {"ksef_down": True})
        kod_ii_url = None
        if mode.carries_qr_codes:
            material = await self._offline_certificates.signing_material(client_nip)
            if material is None:
                if chosen is None:
                    return {}, {"ksef_down": True, "offline": "no-offline-certificate"}
                raise SubmissionError(
                    "no-offline-certificate",
                    "An offline invoice needs KOD II, signed with the client's KSeF Offline certificate: register it"
                    " at PUT /clients/{nip}/offline-certificate.",
                    status=422,
                )
            try:
                kod_ii_url = kod_ii(
                    self.qr_base,
                    context_type="Nip",
                    context_value=client_nip,
                    seller_nip=client_nip,
                    certificate=material.certificate,
                    private_key=material.private_key,
                    xml=xml,
                    now=now,
                ).url
            except ValueError as exc:
                raise SubmissionError(
                    "unusable-offline-certificate", f"KOD II cannot be signed: {exc}.", status=422
                ) from None
        due = await self.deadline_of(mode, issue_date)
        return {"offline_mode": mode.value, "offline_deadline": due, "kod_ii_url": kod_ii_url}, detail

    def _outage_mode(self) -> OfflineMode | None:
        open_outages = self._availability.open_outages()
        announced = next((o for o in open_outages if o.source is OutageSource.LATARNIA), None)
        if announced is not None:
            return mode_for(announced.kind.value, chosen_offline24=False)
        return OfflineMode.OFFLINE24 if open_outages else None

    async def deadline_of(self, mode: OfflineMode, issue_date: date) -> date | None:
        """The legal deadline from every outage recorded; None while the outage it hangs on goes on (or none
        applies: a total failure)."""
        outages = legal_outages(await self._availability.recent())
        try:
            return resolve_deadline(mode, issue_date, outages).due
        except NoMatchingOutage:
            # The invoice is dated before the announcement we saw (issued offline earlier, sent to us now):
            # its deadline waits for the outage's record, as an open one does.
            return None

    async def _correction_of(self, client_nip: str, original_id: uuid.UUID) -> dict[str, Any]:
        """A technical correction (REFERENCE.md §8) replaces a rejected offline invoice, once: the original must be
        offline and rejected, and no other correction of it may be under way or accepted."""
        async with self._db.sessionmaker() as session:
            repository = SalesRepository(session)
            original = await repository.get(client_nip, original_id)
            corrections = await repository.corrections_of(original_id) if original is not None else []
        if original is None:
            raise SubmissionError("not-found", "No such sales invoice of this client.", status=404)
        if original.offline_mode is None or original.status != SalesStatus.REJECTED.value:
            raise SubmissionError(
                "not-correctable",
                "Only a rejected invoice issued offline can be replaced by a technical correction (KSeF 21166/21167);"
                f" this one is {original.status}{'' if original.offline_mode else ', online'}.",
                status=409,
            )
        if any(c.status != SalesStatus.REJECTED.value for c in corrections):
            raise SubmissionError(
                "correction-exists",
                "A technical correction of this invoice is already under way or accepted; KSeF takes one.",
                status=409,
                invoice_id=str(next(c.id for c in corrections if c.status != SalesStatus.REJECTED.value)),
            )
        return {
            "corrects_invoice_id": original.id,
            "hash_of_corrected_invoice": original.invoice_hash,
            "offline_mode": original.offline_mode,
        }

    async def _held_by(self, client_nip: str, facts: InvoiceFacts) -> AutoSendDecision | None:
        async with self._db.sessionmaker() as session:
            stored = await SalesRepository(session).rules(client_nip)
        if stored is None:
            return None
        decision = decide(AutoSendRules.model_validate(stored.rules), facts)
        return None if decision.send else decision

    async def _earlier(self, client_nip: str, key: str, fingerprint: str) -> Row[Any] | None:
        async with self._db.sessionmaker() as session:
            earlier = await SalesRepository(session).by_key(client_nip, key)
        if earlier is not None and earlier.request_fingerprint != fingerprint:
            raise SubmissionError(
                "idempotency-key-reused",
                "This Idempotency-Key was used with a different request body; use a new key for a new invoice.",
                status=409,
                invoice_id=str(earlier.id),
            )
        return earlier

    async def by_idempotency_key(self, client_nip: str, key: str) -> Row[Any] | None:
        async with self._db.sessionmaker() as session:
            return await SalesRepository(session).by_key(client_nip, key)

    async def get(self, client_nip: str, invoice_id: uuid.UUID) -> tuple[Row[Any], Sequence[Row[Any]]]:
        async with self._db.sessionmaker() as session:
            repository = SalesRepository(session)
            row = await repository.get(client_nip, invoice_id)
            if row is None:
                raise SubmissionError("not-found", "No such sales invoice of this client.", status=404)
            return row, await repository.events(invoice_id)

    async def document(self, client_nip: str, invoice_id: uuid.UUID, which: str) -> tuple[Row[Any], bytes]:
        """The invoice's XML as submitted, or its UPO (``which`` = ``xml`` | ``upo``)."""
        async with self._db.sessionmaker() as session:
            row = await SalesRepository(session).get(client_nip, invoice_id, documents=True)
        if row is None:
            raise SubmissionError("not-found", "No such sales invoice of this client.", status=404)
        content = row.xml if which == "xml" else row.upo
        if content is None:
            raise SubmissionError(
                "no-upo", f"KSeF has not issued a UPO for this invoice (status {row.status}).", status=404
            )
        return row, bytes(content)

    async def page(
        self, client_nip: str, *, status: str | None, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> Sequence[Row[Any]]:
        async with self._db.sessionmaker() as session:
            return await SalesRepository(session).page(client_nip, status=status, after=after, limit=limit)

    # --- the operators' overview ----------------------------------------------------------------------------

    async def client_nips(self, *, after: str | None, limit: int) -> list[str]:
        """Client NIPs with a sales invoice, in NIP order after ``after``."""
        async with self._db.sessionmaker() as session:
            return await SalesRepository(session).client_nips_after(after, limit)

    async def backlogs(self, client_nips: Sequence[str], *, stuck_after: timedelta) -> dict[str, SalesBacklog]:
        """Each client's invoices per status, those stuck in processing, and its offline queue; one query of each
        kind for all of ``client_nips``."""
        if not client_nips:
            return {}
        async with self._db.sessionmaker() as session:
            repository = SalesRepository(session)
            counts = await repository.counts_of(client_nips)
            stuck = await repository.stuck_of(client_nips, self.clock() - stuck_after)
            offline = await repository.offline_queue_of(client_nips)
        backlogs = {}
        for nip in client_nips:
            stuck_n, stuck_since = stuck.get(nip, (0, None))
            queued, nearest, awaiting = offline.get(nip, (0, None, 0))
            backlogs[nip] = SalesBacklog(counts.get(nip, {}), stuck_n, stuck_since, queued, nearest, awaiting)
        return backlogs

    # --- auto-send rules, held invoices, backfill -------------------------------------------------------------

    async def rules(self, client_nip: str) -> tuple[AutoSendRules, Row[Any] | None]:
        async with self._db.sessionmaker() as session:
            stored = await SalesRepository(session).rules(client_nip)
        if stored is None:
            return AutoSendRules.default_rules(), None
        return AutoSendRules.model_validate(stored.rules), stored

    async def set_rules(self, client_nip: str, rules: AutoSendRules, *, by: str) -> Row[Any]:
        async with self._db.sessionmaker() as session, session.begin():
            repository = SalesRepository(session)
            await repository.put_rules(client_nip, rules.model_dump(mode="json"), by=by, at=self.clock())
            stored = await repository.rules(client_nip)
        assert stored is not None
        return stored

    async def release(self, client_nip: str, invoice_ids: Sequence[uuid.UUID], *, by: str, why: str) -> int:
        """Held invoices to the queue (``why``: ``by_hand`` | ``backfill``); those not held are left as they are."""
        now = self.clock()
        released = 0
        async with self._db.sessionmaker() as session, session.begin():
            repository = SalesRepository(session)
            for invoice_id in invoice_ids:
                moved = await repository.update(
                    invoice_id,
                    SalesStatus.HELD.value,
                    {"status": SalesStatus.QUEUED.value, "next_attempt_at": None, "updated_at": now},
                )
                if not moved:
                    continue
                released += 1
                await repository.history(invoice_id, SalesStatus.QUEUED.value, now, {"released": why, "by": by})
                await self._outbox.emit(
                    session,
                    StatusChanged(
                        document_kind=DocumentKind.SALES,
                        document_id=str(invoice_id),
                        previous_status=SalesStatus.HELD.value,
                        status=SalesStatus.QUEUED.value,
                        reason=why,
                        changed_at=now,
                    ),
                    client_nip=client_nip,
                )
            if released:
                wake_after_commit(session, self.queued)
        return released

    async def held(
        self, client_nip: str, issued_from: date | None = None, issued_to: date | None = None
    ) -> list[uuid.UUID]:
        async with self._db.sessionmaker() as session:
            rows = await SalesRepository(session).held(client_nip, issued_from=issued_from, issued_to=issued_to)
        return [r.id for r in rows]

    async def run_due_backfills(self, today: date) -> dict[str, int]:
        """Each client's monthly "send everything not yet sent" that is due today; one replica runs each (the
        month is marked done first, from the state read, so a second replica's mark changes nothing)."""
        async with self._db.sessionmaker() as session:
            configured = await SalesRepository(session).clients_with_backfill()
        done: dict[str, int] = {}
        for stored in configured:
            rules = AutoSendRules.model_validate(stored.rules)
            last = _month(stored.last_backfill_month)
            due = backfill_due(rules, today, last)
            if due is None:
                continue
            month = f"{due[0]:04d}-{due[1]:02d}"
            async with self._db.sessionmaker() as session, session.begin():
                if not await SalesRepository(session).mark_backfilled(
                    stored.client_nip, month, stored.last_backfill_month
                ):
                    continue
            first, last_day = backfill_window(*due)
            ids = await self.held(stored.client_nip, first, last_day)
            done[stored.client_nip] = await self.release(stored.client_nip, ids, by="platform", why="backfill")
            log.info("monthly backfill of %s for %s: %d invoice(s) released", stored.client_nip, month, len(ids))
        return done

    # --- offline deadlines ------------------------------------------------------------------------------------

    async def watch_deadlines(self, warn_before: timedelta) -> int:
        """Recompute every unsent offline invoice's deadline from the outages recorded (an outage that ended fixes
        an open one; a failure announced later moves it) and fire each alert once: approaching, then missed."""
        now = self.clock()
        outages = legal_outages(await self._availability.recent())
        async with self._db.sessionmaker() as session:
            rows = await SalesRepository(session).offline_unsent()
        fired = 0
        for row in rows:
            mode = OfflineMode(row.offline_mode)
            try:
                due = resolve_deadline(mode, row.issue_date, outages).due
            except NoMatchingOutage:
                due = row.offline_deadline
            changes: dict[str, Any] = {}
            if due != row.offline_deadline:
                changes["offline_deadline"] = due
            alerts: list[DeadlineAlert] = []
            if overdue(due, now):
                if row.deadline_missed_at is None:
                    alerts.append(DeadlineAlert.MISSED)
                    changes["deadline_missed_at"] = now
            elif alert_due(due, now, warn_before) and row.deadline_warned_at is None:
                alerts.append(DeadlineAlert.APPROACHING)
                changes["deadline_warned_at"] = now
            if not changes:
                continue
            async with self._db.sessionmaker() as session, session.begin():
                repository = SalesRepository(session)
                await repository.set_offline_fields(row.id, changes)
                if "offline_deadline" in changes:
                    await repository.history(
                        row.id, row.status, now, {"offline_deadline": due.isoformat() if due else None}
                    )
                for alert in alerts:
                    assert due is not None
                    fired += 1
                    await repository.history(row.id, row.status, now, {"deadline_alert": alert.value})
                    await self._outbox.emit(
                        session,
                        SalesDeadlineAlerted(
                            invoice_id=str(row.id),
                            invoice_number=row.invoice_number,
                            offline_mode=row.offline_mode,
                            deadline=due,
                            alert=alert,
                            status=row.status,
                        ),
                        client_nip=row.client_nip,
                    )
        return fired


def _month(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    year, month = text.split("-")
    return int(year), int(month)
