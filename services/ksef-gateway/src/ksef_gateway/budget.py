"""The rate-limit budget: every KSeF call takes a slot first.

KSeF counts requests per (context, IP) in 1 s / 60 s / 60 min sliding windows per endpoint group
(REFERENCE.md §13). This is the contract between the KSeF client (which takes a slot around every call and
reports how it went) and the limiter behind it.

``slot`` waits until every window of (context, group) has room, the circuit of the environment is closed (or
half-open and this is the probe), and it is this caller's turn under fair scheduling across contexts (lower
``priority`` value goes first, e.g. seconds left to the client's month-close deadline). On leaving the block
the slot must have been ``report``ed (the client does it): a 429 with ``Retry-After`` blocks the group of that
context for that long, 5xx and transport errors count against the environment's circuit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import StrEnum
from typing import Protocol


class EndpointGroup(StrEnum):
    """KSeF's rate-limit groups, named as ``GET /rate-limits`` names them."""

    ONLINE_SESSION = "onlineSession"
    INVOICE_SEND = "invoiceSend"
    BATCH_SESSION = "batchSession"
    INVOICE_STATUS = "invoiceStatus"
    SESSION_LIST = "sessionList"
    SESSION_INVOICE_LIST = "sessionInvoiceList"
    SESSION_MISC = "sessionMisc"
    INVOICE_METADATA = "invoiceMetadata"
    INVOICE_EXPORT = "invoiceExport"
    INVOICE_EXPORT_STATUS = "invoiceExportStatus"
    INVOICE_DOWNLOAD = "invoiceDownload"
    OTHER = "other"
    # Not limited per context: public endpoints (per IP) and pre-signed part URLs (not limited at all).
    PUBLIC = "public"
    UNLIMITED = "unlimited"


class Slot(Protocol):
    def report(self, *, status: int | None, retry_after_s: float | None = None) -> None:
        """How the call went: the HTTP status (``None`` for a transport error) and ``Retry-After`` if any."""


class Budget(Protocol):
    def slot(
        self, *, environment: str, context: str | None, group: EndpointGroup, priority: float = 0.0
    ) -> AbstractAsyncContextManager[Slot]: ...


class _NoteOnly:
    def report(self, *, status: int | None, retry_after_s: float | None = None) -> None:
        pass


class Unlimited:
    """No limits at all: for unit tests of the client and for benchmarks with limits off."""

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[Slot]:
        yield _NoteOnly()

    def slot(
        self, *, environment: str, context: str | None, group: EndpointGroup, priority: float = 0.0
    ) -> AbstractAsyncContextManager[Slot]:
        return self._slot()
