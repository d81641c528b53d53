"""Use cases of the stored purchase invoices: pages of metadata, one invoice, its raw XML.

Served from our database, never live from KSeF (screens never spend KSeF's budget). The sync stores invoices
through ``known_numbers`` and ``store``, which join the sync's window transaction on purpose: a window's invoices,
their ``invoice.fetched`` outbox rows and the advanced checkpoint commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ksef_gateway.purchases import repository
from ksef_gateway.purchases.repository import StoredInvoice


class UnknownClient(Exception):
    """Nothing is known of the client here (no credential, no sync state, no invoice)."""


@dataclass(frozen=True)
class InvoicePage:
    items: list[StoredInvoice]
    has_more: bool


async def known_numbers(session: AsyncSession, nip: str, numbers: Sequence[str]) -> set[str]:
    """Which of ``numbers`` are stored already (in the caller's transaction)."""
    return await repository.stored_numbers(session, nip, numbers)


async def store(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Store new invoices (rows of ``purchases.domain.invoice_row``) in the caller's transaction."""
    await repository.insert_invoices(session, rows)


async def count(session: AsyncSession, nip: str) -> int:
    """How many invoices of ``nip`` are stored (in the caller's transaction)."""
    return await repository.count_invoices(session, nip)


class Invoices:
    """The read side behind the invoices API. ``is_known(nip)`` tells an empty client from an unknown one."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], is_known: Callable[[str], Awaitable[bool]]
    ) -> None:
        self._sessions = sessionmaker
        self._is_known = is_known

    async def page(
        self,
        nip: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None,
        acquired_from: datetime | None = None,
        acquired_to: datetime | None = None,
    ) -> InvoicePage:
        """Keyset pages in acquisition (receipt) order; ``UnknownClient`` for a client never seen here."""
        async with self._sessions() as session:
            found = await repository.list_invoices(
                session, nip, limit=limit + 1, after=after, acquired_from=acquired_from, acquired_to=acquired_to
            )
        if not found and after is None and not await self._is_known(nip):
            raise UnknownClient(nip)
        return InvoicePage(found[:limit], has_more=len(found) > limit)

    async def one(self, nip: str, ksef_number: str) -> StoredInvoice | None:
        async with self._sessions() as session:
            return await repository.load_invoice(session, nip, ksef_number)

    async def xml(self, nip: str, ksef_number: str) -> tuple[bytes, str] | None:
        """The XML byte for byte as KSeF stored it, and its base64 SHA-256 (KSeF's ``invoiceHash``)."""
        async with self._sessions() as session:
            return await repository.load_invoice_xml(session, nip, ksef_number)
