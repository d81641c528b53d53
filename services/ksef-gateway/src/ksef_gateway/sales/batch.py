"""Batch sessions for long sales queues (REFERENCE.md §5): a backlog goes to KSeF as one package instead of one
request per invoice.

Building a batch is pure (``build_batch``): the invoices' exact XML bytes in a ZIP named by invoice id, size and
hash of the whole archive, the archive split binary into parts of at most 100 MB, each part encrypted on its own
with the session's AES key and IV (the same for all), each encrypted part's size and hash declared.

``BatchSending`` is the use case the sender calls, with the same delivery semantics as the online path
(sales/domain.py): every row of the batch is committed ``sending`` with the batch's reference *before* anything
is uploaded, so a crash at any point leaves rows the reconcile path knows how to finish. A batch session's
invoices exist in KSeF only once it is closed and processed, so its rows are reconciled by hash only when the
session's status is final (``settled``); while it is open (100) or processing (150) they stay ``sending``: re-queued
then, they would be sent a second time. Batch sessions are told apart from online ones by their reference number's
type, ``…-SB-…`` against ``…-SO-…`` (REFERENCE.md §2).
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row

from ksef_gateway.budget.service import BudgetUnavailable, CircuitOpen
from ksef_gateway.ksef.crypto import SymmetricKey, sha256_b64
from ksef_gateway.ksef.errors import KsefError
from ksef_gateway.ksef.models import BatchArchive, BatchPart, BatchSession
from ksef_gateway.sales.domain import PollSchedule, SalesStatus
from ksef_gateway.sales.ksef import SendingKsef
from ksef_gateway.sales.repository import SalesRepository
from ksef_gateway.sessions.service import ContextNotOwned, NoCredential
from ksef_gateway.settings import SalesSettings
from platform_common.db import Database

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD: int = SalesSettings.model_fields["batch_threshold"].default
# KSeF's package limits (REFERENCE.md §5): parts of at most 100 MB before encryption (in decimal megabytes, which
# is below either reading of "MB"), at most 50 of them, at most 5 GB for the whole archive.
MAX_PART_BYTES = 100_000_000
MAX_PARTS = 50
MAX_ARCHIVE_BYTES = 5_000_000_000
# What one batch takes at most: the archive and its encrypted parts are built in memory. KSeF allows 10 000
# invoices per session (REFERENCE.md §8); a longer queue goes out in several batches.
BATCH_INVOICES = 1_000
BATCH_XML_BYTES = 200_000_000
# After a batch could not be opened or uploaded, the context sends one by one for this long.
COOLDOWN_S = 60.0
PARALLEL_UPLOADS = 4
# How long a batch session lacking parts is left alone when its status names no ``validUntil``.
UNKNOWN_EXPIRY = timedelta(minutes=15)
# Close refused because a declared part is missing (21205) or its upload window passed (21208): not closed.
PARTS_MISSING = frozenset({21205, 21208})
# A ZIP entry's time; a fixed one makes the same invoices the same archive (KSeF reads none of it).
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

DEFAULT_POLL = PollSchedule()

Outcome = Callable[[KsefError | CircuitOpen | None], Awaitable[None]]


def is_batch_session(reference: str | None) -> bool:
    """``YYYYMMDD-SB-XXXXXXXXXX-XXXXXXXXXX-CC`` is a batch session, ``…-SO-…`` an online one (REFERENCE.md §2)."""
    if not reference:
        return False
    parts = reference.split("-")
    return len(parts) == 5 and parts[1] == "SB"


def archive_name(invoice_id: uuid.UUID | str) -> str:
    return f"{invoice_id}.xml"


def build_zip(files: Sequence[tuple[str, bytes]]) -> bytes:
    """The ZIP of ``(name, exact bytes)``, in order: the bytes are the invoice as hashed, never re-serialised."""
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise ValueError("two files of one batch have the same name")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files:
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content)
    return buffer.getvalue()


def split(data: bytes, part_size: int = MAX_PART_BYTES) -> list[bytes]:
    """``data`` cut into consecutive pieces of ``part_size`` bytes (the last one shorter)."""
    if part_size < 1:
        raise ValueError("part_size must be positive")
    return [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]


def build_batch(
    files: Sequence[tuple[str, bytes]], *, key: SymmetricKey | None = None, part_size: int = MAX_PART_BYTES
) -> BatchArchive:
    """The package of a batch session: ZIP, its size and hash, its parts encrypted with ``key`` (a fresh one by
    default) and each encrypted part's size and hash (REFERENCE.md §5 steps 1-2). CPU only, no I/O."""
    if not files:
        raise ValueError("a batch holds at least one invoice")
    archive = build_zip(files)
    if len(archive) > MAX_ARCHIVE_BYTES:
        raise ValueError(f"the archive has {len(archive)} bytes, KSeF takes at most {MAX_ARCHIVE_BYTES}")
    pieces = split(archive, min(part_size, MAX_PART_BYTES))
    if len(pieces) > MAX_PARTS:
        raise ValueError(f"the archive needs {len(pieces)} parts, KSeF takes at most {MAX_PARTS}")
    key = key or SymmetricKey.generate()
    parts = []
    for ordinal, piece in enumerate(pieces, start=1):
        encrypted = key.encrypt(piece)
        parts.append(BatchPart(ordinal, encrypted, len(encrypted), sha256_b64(encrypted)))
    return BatchArchive(file_size=len(archive), file_hash=sha256_b64(archive), parts=tuple(parts), key=key)


class _Taken(Exception):
    """A row of the batch left ``queued`` meanwhile: the batch is dropped before anything is uploaded."""


class BatchSending:
    """The context's due queue in a batch session (``send``), and the check that keeps a batch session's
    ``sending`` rows away from the hash reconcile until KSeF has processed it (``settled``)."""

    def __init__(
        self,
        db: Database,
        ksef: SendingKsef,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        poll: PollSchedule = DEFAULT_POLL,
        outcome: Outcome | None = None,
        clock: Callable[[], datetime],
        max_invoices: int = BATCH_INVOICES,
        max_xml_bytes: int = BATCH_XML_BYTES,
    ) -> None:
        self._db = db
        self._ksef = ksef
        self.threshold = threshold
        self._poll = poll
        self._outcome = outcome
        self._clock = clock
        self._max_invoices = max_invoices
        self._max_xml_bytes = max_xml_bytes
        self._cooling: dict[str, datetime] = {}
        # Batch session → when its status is worth reading again: all of its rows wait for one look.
        self._not_before: dict[str, datetime] = {}

    # --- sending ----------------------------------------------------------------------------------------------

    async def send(self, nip: str) -> bool:
        """One batch session for the context's due queue when it holds at least ``threshold`` invoices that may
        go in one. True: the batch took them (its rows are ``sending`` until KSeF has processed it, or back in the
        queue if it never left); False: nothing was batched, the caller sends one by one.

        A batch takes only invoices never sent before (``attempts == 0``): one back from a failed or lost batch goes
        through the online session, whose answer names the invoice, so a package KSeF refuses as a whole
        (405, 430, 435) is not sent again and again. Technical corrections are online-only (REFERENCE.md §8), and
        invoices issued offline go in batches of their own (``offlineMode`` is the session's)."""
        now = self._clock()
        cooling = self._cooling.get(nip)
        if cooling is not None and cooling > now:
            return False
        self._cooling.pop(nip, None)
        async with self._db.sessionmaker() as session:
            due = await SalesRepository(session).due(
                nip, SalesStatus.QUEUED, now, max(self._max_invoices, self.threshold)
            )
        fresh = [r for r in due if r.attempts == 0 and r.hash_of_corrected_invoice is None]
        online = [r for r in fresh if r.offline_mode is None]
        offline = [r for r in fresh if r.offline_mode is not None]
        rows, offline_mode = (online, False) if len(online) >= len(offline) else (offline, True)
        if len(rows) < self.threshold:
            return False
        rows, files = await self._documents(nip, rows)
        if len(rows) < self.threshold:
            return False
        try:
            archive = await asyncio.to_thread(build_batch, files)
        except ValueError as exc:  # beyond KSeF's package limits: not with our caps, but never a loop of tries
            log.error("the batch of %s cannot be built, sending one by one: %s", nip, exc)
            self._cool(nip, COOLDOWN_S)
            return False
        try:
            batch = await self._ksef.open_batch(nip, archive, offline_mode=offline_mode)
        except BudgetUnavailable as exc:
            if isinstance(exc, CircuitOpen):
                await self._report(exc)
            self._cool(nip, max(exc.retry_after_s, 1.0))
            return False
        except KsefError as exc:
            # Nothing is in the session, if one opened: it expires on its own. The online path carries on.
            log.warning("a batch session for %s could not be opened, sending one by one: %s", nip, exc)
            await self._report(exc)
            self._cool(nip, COOLDOWN_S)
            return False
        except (NoCredential, ContextNotOwned):
            raise
        except Exception:  # an answer we cannot read: whether a session opened does not matter, it stays empty
            log.exception("opening a batch session for %s failed, sending one by one", nip)
            self._cool(nip, COOLDOWN_S)
            return False
        await self._report(None)
        try:
            await self._commit(rows, batch.reference_number)
        except _Taken:
            log.info("batch %s of %s dropped before its upload: its queue changed", batch.reference_number, nip)
            return False
        await self._deliver(nip, batch, archive, rows)
        return True

    async def _documents(self, nip: str, rows: list[Row[Any]]) -> tuple[list[Row[Any]], list[tuple[str, bytes]]]:
        """The rows that fit in one batch, oldest first, with their exact XML bytes."""
        taken: list[Row[Any]] = []
        files: list[tuple[str, bytes]] = []
        size = 0
        async with self._db.sessionmaker() as session:
            repository = SalesRepository(session)
            for row in rows:
                full = await repository.get(nip, row.id, documents=True)
                if full is None or full.status != SalesStatus.QUEUED.value:
                    continue
                xml = bytes(full.xml)
                if taken and size + len(xml) > self._max_xml_bytes:
                    break
                size += len(xml)
                taken.append(row)
                files.append((archive_name(row.id), xml))
        return taken, files

    async def _commit(self, rows: list[Row[Any]], reference: str) -> None:
        """Every row ``sending`` in the batch session, in one transaction, before anything is uploaded; all or none
        (``_Taken``), since the package already holds every one of them."""
        now = self._clock()
        async with self._db.sessionmaker() as session, session.begin():
            repository = SalesRepository(session)
            for row in rows:
                attempt = row.attempts + 1
                values = {
                    "status": SalesStatus.SENDING.value,
                    "updated_at": now,
                    "session_reference": reference,
                    "attempts": attempt,
                    "next_attempt_at": None,
                }
                if not await repository.update(row.id, SalesStatus.QUEUED.value, values):
                    raise _Taken
                await repository.history(
                    row.id, SalesStatus.SENDING.value, now, {"session": reference, "attempt": attempt, "batch": True}
                )

    async def _deliver(self, nip: str, batch: BatchSession, archive: BatchArchive, rows: list[Row[Any]]) -> None:
        """Upload the parts and close. Up to the close nothing can be processed, so a failed upload puts the rows
        back in the queue at once (nobody will close this session: it expires empty). A close whose answer is lost
        may have happened: its rows stay ``sending`` and ``settled`` finds out."""
        reference = batch.reference_number
        requests = {r.ordinal_number: r for r in batch.part_upload_requests}
        limit = asyncio.Semaphore(PARALLEL_UPLOADS)

        async def upload(part: BatchPart) -> None:
            async with limit:
                await self._ksef.upload_part(nip, reference, requests[part.ordinal_number], part.content)

        try:
            if set(requests) != {p.ordinal_number for p in archive.parts}:
                raise KsefError(f"batch session {reference} did not give an upload URL for every part")
            await asyncio.gather(*(upload(part) for part in archive.parts))
        except asyncio.CancelledError:
            # The sender stops: without the close KSeF never processes this session, so the rows are not lost in
            # it until its 12 h end (a SIGKILL here leaves them to ``settled``, which waits for that end).
            await self._requeue(rows, {"batch": reference, "not_sent": "stopped during the upload"})
            raise
        except Exception as exc:
            log.warning("uploading batch %s of %s failed; its invoices go back to the queue: %s", reference, nip, exc)
            if isinstance(exc, KsefError | CircuitOpen):
                await self._report(exc)
            await self._requeue(rows, {"batch": reference, "not_sent": "upload failed"})
            self._cool(nip, COOLDOWN_S)
            return
        try:
            await self._ksef.close_batch(nip, reference)
        except BudgetUnavailable as exc:
            # Our budget refused it before anything left: every part is there, ``settled`` closes it later.
            self._not_before[reference] = self._clock() + timedelta(seconds=max(exc.retry_after_s, 0.0))
            return
        except KsefError as exc:
            await self._report(exc)
            if exc.http_status == 400 and PARTS_MISSING & set(exc.codes):
                await self._requeue(rows, {"batch": reference, "not_sent": "close refused", "codes": exc.codes})
                self._cool(nip, COOLDOWN_S)
                return
            log.info("closing batch %s of %s failed, its status decides: %s", reference, nip, exc)
            return
        await self._report(None)
        log.info("batch session %s of %s closed with %d invoices", reference, nip, len(rows))

    # --- reconciling ------------------------------------------------------------------------------------------

    async def settled(self, nip: str, rows: Sequence[Row[Any]]) -> list[Row[Any]]:
        """The ``sending`` rows the hash reconcile may decide now: every online session's, and a batch session's
        once its status is final (200 or 4xx/5xx, REFERENCE.md §5). A batch still open (100) or processing (150)
        keeps its rows ``sending``, deferred to the next look at it; an open one is closed (its close was lost or
        refused for a passing reason). Nothing here ever moves a row to another state."""
        now = self._clock()
        for known, at in list(self._not_before.items()):
            if at < now - timedelta(hours=1):
                del self._not_before[known]
        groups: dict[str, list[Row[Any]]] = {}
        for row in rows:
            if is_batch_session(row.session_reference):
                groups.setdefault(row.session_reference, []).append(row)
        waiting: set[str] = set()
        for reference, group in groups.items():
            until = self._not_before.get(reference)
            if until is None or until <= now:
                waited = (now - min(r.updated_at for r in group)).total_seconds()
                until = await self._look(nip, reference, waited)
            if until is None:
                self._not_before.pop(reference, None)
                continue
            self._not_before[reference] = until
            waiting.add(reference)
            await self._defer(group, until)
        return [r for r in rows if r.session_reference not in waiting]

    async def _look(self, nip: str, reference: str, waited_s: float) -> datetime | None:
        """None when the batch session's status is final; otherwise when to look again."""
        try:
            status = await self._ksef.session_status(nip, reference)
        except (KsefError, BudgetUnavailable) as exc:
            # Not knowing is not final: the rows wait.
            if isinstance(exc, KsefError | CircuitOpen):
                await self._report(exc)
            retry = exc.retry_after_s if isinstance(exc, BudgetUnavailable) else None
            return self._clock() + timedelta(seconds=retry or self._poll.max_s)
        await self._report(None)
        if status.code >= 200:
            return None
        if status.code == 100:
            return await self._close_open(nip, reference, status.valid_until)
        return self._clock() + timedelta(seconds=self._poll.after(waited_s))  # 150: KSeF is processing it

    async def _close_open(self, nip: str, reference: str, valid_until: datetime | None) -> datetime:
        """A batch session still open while its rows are ``sending``: its close was lost, or it was never sent
        (a crash, our budget). Closing it is safe either way: with every part there KSeF processes it (150), with
        one missing it refuses (21205/21208) and the session ends as 440 at ``validUntil``, when its rows go back
        to the queue (nobody holds its upload links any more)."""
        try:
            await self._ksef.close_batch(nip, reference)
        except BudgetUnavailable as exc:
            return self._clock() + timedelta(seconds=max(exc.retry_after_s, self._poll.first_s))
        except KsefError as exc:
            await self._report(exc)
            if exc.http_status == 400 and PARTS_MISSING & set(exc.codes):
                log.info("batch %s of %s lacks parts; its invoices wait for it to expire", reference, nip)
                now = self._clock()
                expires = valid_until if valid_until is not None else now + UNKNOWN_EXPIRY
                return max(expires, now) + timedelta(seconds=self._poll.max_s)
            return self._clock() + timedelta(seconds=self._poll.max_s)
        await self._report(None)
        log.info("batch session %s of %s closed on reconcile", reference, nip)
        return self._clock() + timedelta(seconds=self._poll.first_s)

    # --- transitions --------------------------------------------------------------------------------------------

    async def _defer(self, rows: Sequence[Row[Any]], until: datetime) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            repository = SalesRepository(session)
            for row in rows:
                await repository.update(row.id, SalesStatus.SENDING.value, {"next_attempt_at": until})

    async def _requeue(self, rows: Sequence[Row[Any]], detail: dict[str, Any]) -> None:
        """Back to the queue: only for a batch session that certainly was not closed."""
        now = self._clock()
        async with self._db.sessionmaker() as session, session.begin():
            repository = SalesRepository(session)
            for row in rows:
                values = {"status": SalesStatus.QUEUED.value, "updated_at": now, "next_attempt_at": None}
                if await repository.update(row.id, SalesStatus.SENDING.value, values):
                    await repository.history(row.id, SalesStatus.QUEUED.value, now, detail)

    def _cool(self, nip: str, seconds: float) -> None:
        self._cooling[nip] = self._clock() + timedelta(seconds=seconds)

    async def _report(self, error: KsefError | CircuitOpen | None) -> None:
        if self._outcome is not None:
            await self._outcome(error)
