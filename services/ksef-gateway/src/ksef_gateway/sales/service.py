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
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.sales.deadlines import OfflineMode, deadline
from ksef_gateway.sales.domain import SalesStatus, SubmissionError, request_fingerprint
from ksef_gateway.sales.qr import kod_ii
from ksef_gateway.sales.repository import SalesRepository
from ksef_gateway.sales.validation import read_facts, validate_fa3
from ksef_gateway.vault.offline import OfflineCertificates
from platform_common.auth.clock import Clock, system_clock
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


class SalesInvoices:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        offline_certificates: OfflineCertificates,
        *,
        qr_base: str,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._offline_certificates = offline_certificates
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
        now = self.clock()
        offline_values = await self._offline(client_nip, xml, facts.issue_date, offline, now) if offline else {}
        invoice_id = uuid.uuid4()
        values = offline_values | {
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
            "status": SalesStatus.QUEUED.value,
            "attempts": 0,
            "submitted_by": submitted_by,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._db.sessionmaker() as session, session.begin():
                detail = {"by": submitted_by, "source": source} | ({"offline_mode": offline.value} if offline else {})
                await SalesRepository(session).add(values, at=now, detail=detail)
                await self._outbox.emit(
                    session,
                    StatusChanged(
                        document_kind=DocumentKind.SALES,
                        document_id=str(invoice_id),
                        previous_status=None,
                        status=SalesStatus.QUEUED.value,
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
        self, client_nip: str, xml: bytes, issue_date: date, mode: OfflineMode, now: datetime
    ) -> dict[str, Any]:
        """An invoice issued offline on purpose (offline24): KOD II signed now with the client's Offline
        certificate, and the legal deadline for sending it (the next working day after P_1, REFERENCE.md §12)."""
        if mode is not OfflineMode.OFFLINE24:
            raise SubmissionError(
                "unsupported-offline-mode",
                "Only offline24 can be chosen; the other offline modes follow KSeF's announced outages.",
                status=422,
            )
        material = await self._offline_certificates.signing_material(client_nip)
        if material is None:
            raise SubmissionError(
                "no-offline-certificate",
                "An offline invoice needs KOD II, signed with the client's KSeF Offline certificate: register it at"
                " PUT /clients/{nip}/offline-certificate.",
                status=422,
            )
        try:
            code = kod_ii(
                self.qr_base,
                context_type="Nip",
                context_value=client_nip,
                seller_nip=client_nip,
                certificate=material.certificate,
                private_key=material.private_key,
                xml=xml,
                now=now,
            )
        except ValueError as exc:
            raise SubmissionError(
                "unusable-offline-certificate", f"KOD II cannot be signed: {exc}.", status=422
            ) from None
        return {
            "offline_mode": mode.value,
            "offline_deadline": deadline(mode, issue_date, ()),
            "kod_ii_url": code.url,
        }

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
