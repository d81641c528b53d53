"""What the sync needs of KSeF (``SyncKsef``), and its implementation over the session manager (``GatewayKsef``).

Every call of one run carries the run's ``BudgetHints`` to the rate-limit budget, a token refresh included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ksef_gateway.ksef.models import ExportHandle, ExportStatus, MetadataPage
from ksef_gateway.sessions.service import SessionManager


@dataclass(frozen=True)
class BudgetHints:
    """What every KSeF call of one run tells the rate-limit budget: ``priority`` (seconds to the client's
    month-close deadline, lower goes first) and ``max_wait_s`` (past it the call fails with ``BudgetExhausted``
    and the run is rescheduled instead of holding a worker)."""

    priority: float = 0.0
    max_wait_s: float | None = None


NO_HINTS = BudgetHints()


class SyncKsef(Protocol):
    async def query_metadata(
        self, nip: str, filters: dict[str, Any], *, page_offset: int, page_size: int, hints: BudgetHints = NO_HINTS
    ) -> MetadataPage: ...

    async def download_invoice(
        self, nip: str, ksef_number: str, *, hints: BudgetHints = NO_HINTS
    ) -> tuple[bytes, str | None]: ...

    async def start_export(
        self, nip: str, filters: dict[str, Any], *, hints: BudgetHints = NO_HINTS
    ) -> ExportHandle: ...

    async def export_status(
        self, nip: str, reference_number: str, *, hints: BudgetHints = NO_HINTS
    ) -> ExportStatus: ...

    async def download_export_parts(
        self, nip: str, handle: ExportHandle, status: ExportStatus, *, hints: BudgetHints = NO_HINTS
    ) -> list[bytes]:
        """The package's encrypted parts; the engine opens them (``ksef.client.open_export_package``) itself."""
        ...


class GatewayKsef:
    """``SyncKsef`` over the session manager: the context's environment, a valid access token, one retry on 401, and
    the run's budget hints on every call (a token refresh included)."""

    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions

    async def query_metadata(
        self, nip: str, filters: dict[str, Any], *, page_offset: int, page_size: int, hints: BudgetHints = NO_HINTS
    ) -> MetadataPage:
        return await self._sessions.call(
            nip,
            lambda client, token: client.query_metadata(
                token,
                filters,
                page_offset=page_offset,
                page_size=page_size,
                context_nip=nip,
                priority=hints.priority,
                max_wait_s=hints.max_wait_s,
            ),
            priority=hints.priority,
            max_wait_s=hints.max_wait_s,
        )

    async def download_invoice(
        self, nip: str, ksef_number: str, *, hints: BudgetHints = NO_HINTS
    ) -> tuple[bytes, str | None]:
        return await self._sessions.call(
            nip,
            lambda client, token: client.download_invoice(
                token, ksef_number, context_nip=nip, priority=hints.priority, max_wait_s=hints.max_wait_s
            ),
            priority=hints.priority,
            max_wait_s=hints.max_wait_s,
        )

    async def start_export(self, nip: str, filters: dict[str, Any], *, hints: BudgetHints = NO_HINTS) -> ExportHandle:
        return await self._sessions.call(
            nip,
            lambda client, token: client.start_export(
                token, filters, context_nip=nip, priority=hints.priority, max_wait_s=hints.max_wait_s
            ),
            priority=hints.priority,
            max_wait_s=hints.max_wait_s,
        )

    async def export_status(self, nip: str, reference_number: str, *, hints: BudgetHints = NO_HINTS) -> ExportStatus:
        return await self._sessions.call(
            nip,
            lambda client, token: client.export_status(
                token, reference_number, context_nip=nip, priority=hints.priority, max_wait_s=hints.max_wait_s
            ),
            priority=hints.priority,
            max_wait_s=hints.max_wait_s,
        )

    async def download_export_parts(
        self, nip: str, handle: ExportHandle, status: ExportStatus, *, hints: BudgetHints = NO_HINTS
    ) -> list[bytes]:
        client = await self._sessions.client_for(nip, priority=hints.priority, max_wait_s=hints.max_wait_s)
        return await client.download_export_parts(handle, status, priority=hints.priority, max_wait_s=hints.max_wait_s)
