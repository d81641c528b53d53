"""What sending needs of KSeF (``SendingKsef``), and its implementation over the session manager and the pool of
online sessions (``GatewaySendingKsef``); batch sessions (REFERENCE.md §5) for long queues, see ``sales/batch.py``."""

from __future__ import annotations

from typing import Protocol

from ksef_gateway.ksef.models import (
    FA3,
    BatchArchive,
    BatchSession,
    OnlineSession,
    PartUploadRequest,
    SentInvoiceStatus,
    SessionStatus,
)
from ksef_gateway.sessions.service import OnlineSessions, SessionManager


class SendingKsef(Protocol):
    async def session(self, nip: str) -> OnlineSession: ...

    async def drop_sessions(self, nip: str) -> None:
        """Forget the context's pooled sessions (KSeF said one is unusable); the next send opens a new one."""
        ...

    async def send(
        self, nip: str, session: OnlineSession, xml: bytes, *, offline_mode: bool, hash_of_corrected_invoice: str | None
    ) -> str: ...

    async def status(self, nip: str, session_reference: str, invoice_reference: str) -> SentInvoiceStatus: ...

    async def session_invoices(self, nip: str, session_reference: str) -> list[SentInvoiceStatus]: ...

    async def upo(
        self, nip: str, session_reference: str, *, invoice_reference: str | None = None, ksef_number: str | None = None
    ) -> bytes: ...

    async def download(self, nip: str, ksef_number: str) -> bytes: ...

    async def open_batch(self, nip: str, archive: BatchArchive, *, offline_mode: bool) -> BatchSession: ...

    async def upload_part(self, nip: str, session_reference: str, request: PartUploadRequest, content: bytes) -> None:
        """One encrypted part to its pre-signed URL (no token, not rate-limited)."""
        ...

    async def close_batch(self, nip: str, session_reference: str) -> None: ...

    async def session_status(self, nip: str, session_reference: str) -> SessionStatus: ...


class GatewaySendingKsef:
    """``SendingKsef`` with a valid access token per call (one retry on 401) and the online session of (context,
    FA(3)) reused across invoices until it nears its 12 h end (REFERENCE.md §4)."""

    def __init__(self, sessions: SessionManager, online: OnlineSessions) -> None:
        self._sessions = sessions
        self._online = online

    async def session(self, nip: str) -> OnlineSession:
        return await self._online.acquire(nip, FA3)

    async def drop_sessions(self, nip: str) -> None:
        await self._online.close_context(nip)

    async def send(
        self, nip: str, session: OnlineSession, xml: bytes, *, offline_mode: bool, hash_of_corrected_invoice: str | None
    ) -> str:
        return await self._sessions.call(
            nip,
            lambda client, token: client.send_online_invoice(
                token,
                session,
                xml,
                offline_mode=offline_mode,
                hash_of_corrected_invoice=hash_of_corrected_invoice,
                context_nip=nip,
            ),
        )

    async def status(self, nip: str, session_reference: str, invoice_reference: str) -> SentInvoiceStatus:
        return await self._sessions.call(
            nip,
            lambda client, token: client.sent_invoice_status(
                token, session_reference, invoice_reference, context_nip=nip
            ),
        )

    async def session_invoices(self, nip: str, session_reference: str) -> list[SentInvoiceStatus]:
        return await self._sessions.call(
            nip, lambda client, token: client.session_invoices(token, session_reference, context_nip=nip)
        )

    async def upo(
        self, nip: str, session_reference: str, *, invoice_reference: str | None = None, ksef_number: str | None = None
    ) -> bytes:
        return await self._sessions.call(
            nip,
            lambda client, token: client.invoice_upo(
                token,
                session_reference,
                invoice_reference=invoice_reference,
                ksef_number=ksef_number,
                context_nip=nip,
            ),
        )

    async def download(self, nip: str, ksef_number: str) -> bytes:
        content, _ = await self._sessions.call(
            nip, lambda client, token: client.download_invoice(token, ksef_number, context_nip=nip)
        )
        return content

    async def open_batch(self, nip: str, archive: BatchArchive, *, offline_mode: bool) -> BatchSession:
        return await self._sessions.call(
            nip,
            lambda client, token: client.open_batch_session(
                token, FA3, archive, offline_mode=offline_mode, context_nip=nip
            ),
        )

    async def upload_part(self, nip: str, session_reference: str, request: PartUploadRequest, content: bytes) -> None:
        # Not through ``SessionManager.call``: the link is the credential, and its 401/403 (an expired link) says
        # nothing about the context's access token or permissions.
        client = await self._sessions.client_for(nip)
        await client.upload_batch_part(request, content, context_nip=nip, session_reference=session_reference)

    async def close_batch(self, nip: str, session_reference: str) -> None:
        await self._sessions.call(
            nip, lambda client, token: client.close_batch_session(token, session_reference, context_nip=nip)
        )

    async def session_status(self, nip: str, session_reference: str) -> SessionStatus:
        return await self._sessions.call(
            nip, lambda client, token: client.session_status(token, session_reference, context_nip=nip)
        )
