"""Use cases of the documents: one invoice's XML and preview, a month's ERP bundle.

Each fetches the copies first (no transaction held across the network), checks every one against KSeF's hash,
then records the read in the access ledger (and a failure in the communication log) in one transaction before
anything is returned: a read the ledger could not record is not served.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from buffer_svc.communication.service import CommunicationLog, line
from buffer_svc.documents.domain import (
    MAX_BUNDLE,
    BundledInvoice,
    DocumentError,
    Language,
    build_bundle,
    check_copy,
    read_preview,
    render_preview,
)
from buffer_svc.documents.gateway import GatewayDocuments, TokenSource
from buffer_svc.ledger.service import AccessLedger
from buffer_svc.purchases.repository import EntryRepository
from platform_common.auth.clock import Clock, system_clock
from platform_common.auth.principal import Principal
from platform_common.db import Database

# Copies fetched at once for a bundle: enough to hide the gateway's latency, few enough not to crowd its pool.
FETCH_CONCURRENCY = 8


@dataclass(frozen=True)
class Document:
    ksef_number: str
    invoice_hash: str
    content: bytes


class Documents:
    def __init__(
        self,
        db: Database,
        gateway: GatewayDocuments,
        ledger: AccessLedger,
        communication: CommunicationLog,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._gateway = gateway
        self._ledger = ledger
        self._log = communication
        self.clock = clock

    async def xml(self, principal: Principal, client_nip: str, entry_id: uuid.UUID, token: TokenSource) -> Document:
        row = await self._entry(client_nip, entry_id)
        content = await self._copy(client_nip, row, token)
        await self._record(principal, client_nip, "xml", row.ksef_number)
        return Document(row.ksef_number, row.invoice_hash, content)

    async def preview(
        self, principal: Principal, client_nip: str, entry_id: uuid.UUID, token: TokenSource, *, language: Language
    ) -> str:
        row = await self._entry(client_nip, entry_id)
        content = await self._copy(client_nip, row, token)
        page = render_preview(
            read_preview(content), ksef_number=row.ksef_number, invoice_hash=row.invoice_hash, language=language
        )
        await self._record(principal, client_nip, "preview", row.ksef_number)
        return page

    async def bundle(
        self, principal: Principal, client_nip: str, period: str | None, token: TokenSource, *, include_imported: bool
    ) -> bytes:
        """The ready-to-book invoices (marked to book, not archived, not imported unless asked) as a ZIP of their
        XML with a manifest; all or nothing: one copy that cannot be fetched or verified fails the bundle."""
        async with self._db.sessionmaker() as session:
            rows = await EntryRepository(session).ready(client_nip, period, include_imported=include_imported)
        if len(rows) > MAX_BUNDLE:
            raise DocumentError(
                "bundle-too-large",
                f"{len(rows)} invoices are ready; a bundle holds at most {MAX_BUNDLE}: choose a month (period).",
                status=422,
            )
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def fetch(row: Row[Any]) -> bytes:
            async with limit:
                return await self._copy(client_nip, row, token)

        copies = await asyncio.gather(*(fetch(r) for r in rows))
        archive = build_bundle(
            client_nip,
            period,
            [_bundled(r, content) for r, content in zip(rows, copies, strict=True)],
            generated_at=self.clock(),
        )
        await self._record(principal, client_nip, "bundle", period, items=len(rows))
        return archive

    async def _entry(self, client_nip: str, entry_id: uuid.UUID) -> Row[Any]:
        async with self._db.sessionmaker() as session:
            row = await EntryRepository(session).get(client_nip, entry_id)
        if row is None:
            raise DocumentError("not-found", "The invoice is not in this client's buffer.", status=404)
        return row

    async def _copy(self, client_nip: str, row: Row[Any], token: TokenSource) -> bytes:
        try:
            content = await self._gateway.xml(client_nip, row.ksef_number, token)
            check_copy(content, row.invoice_hash)
        except DocumentError as failure:
            async with self._db.sessionmaker() as session, session.begin():
                await self._log.record(
                    session,
                    line(
                        client_nip,
                        "document_failure",
                        self.clock(),
                        entry_id=row.id,
                        ksef_number=row.ksef_number,
                        actor_side="platform",
                        detail={"code": failure.code},
                    ),
                )
            raise
        return content

    async def _record(
        self, principal: Principal, client_nip: str, action: str, target: str | None, *, items: int = 1
    ) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            await self._ledger.record(session, principal, client_nip, action, self.clock(), target=target, items=items)


def _bundled(row: Row[Any], content: bytes) -> BundledInvoice:
    return BundledInvoice(
        ksef_number=row.ksef_number,
        invoice_number=row.invoice_number,
        issue_date=row.issue_date.isoformat(),
        seller_nip=row.seller_nip,
        seller_name=row.seller_name,
        currency=row.currency,
        net_amount=f"{row.net_amount:.2f}",
        vat_amount=f"{row.vat_amount:.2f}",
        gross_amount=f"{row.gross_amount:.2f}",
        invoice_type=row.invoice_type,
        decision=row.decision,
        description=row.description,
        invoice_hash=row.invoice_hash,
        xml=content,
    )
