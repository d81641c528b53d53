"""The sender: every queued sales invoice to KSeF through the context's reused online session (a long queue through
a batch session, sales/batch.py), its status polled until final, the KSeF number and UPO stored with
``invoice.sent`` and ``status.changed`` in one transaction.

Delivery semantics (sales/domain.py has the state machine): each state is committed before the KSeF call it
leads to, so a crash between any two lines leaves a row this loop knows how to finish — ``sending`` is reconciled
by the invoice hash among the session's invoices, ``submitted`` is polled again. One run per context at a time
(``_running``), and only for contexts whose lease this replica holds, so two replicas never send for one client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from sqlalchemy import Row

from ksef_gateway.budget.service import BudgetUnavailable, CircuitOpen
from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.ksef.errors import KsefError
from ksef_gateway.ksef.models import SentInvoiceStatus
from ksef_gateway.sales.batch import DEFAULT_THRESHOLD, BatchSending
from ksef_gateway.sales.domain import (
    DUPLICATE_CODE,
    SESSION_UNUSABLE_CODES,
    PollSchedule,
    SalesStatus,
    duplicate_original,
    send_retry_delay,
)
from ksef_gateway.sales.ksef import SendingKsef
from ksef_gateway.sales.repository import SalesRepository
from ksef_gateway.sales.upo import UpoSignatureError, verify_upo
from ksef_gateway.sessions.service import ContextNotOwned, NoCredential
from platform_common.auth.clock import Clock, system_clock
from platform_common.contracts.invoices import InvoiceSent, SendingMode
from platform_common.contracts.status import DocumentKind, StatusChanged
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox

log = logging.getLogger(__name__)

DEFAULT_POLL = PollSchedule()
BATCH = 100  # invoices looked at per state and pass
SEND_BATCH = 20  # sent per pass: the polls of what was sent come between two batches of a long queue
T = TypeVar("T")


class SalesSender:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        ksef: SendingKsef,
        *,
        holds: Callable[[str], bool],
        wake: asyncio.Event,
        paused: Callable[[], bool] = lambda: False,
        report: Callable[..., Awaitable[None]] | None = None,
        upo_trust: Callable[[], Awaitable[Sequence[x509.Certificate]]] | None = None,
        tick_s: float = 1.0,
        max_contexts: int = 16,
        per_context: int = 4,
        poll: PollSchedule = DEFAULT_POLL,
        clock: Clock = system_clock,
        batch_threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._ksef = ksef
        self._holds = holds
        self._wake = wake
        self._paused = paused
        self._report = report
        self._upo_trust_source = upo_trust
        self._tick_s = tick_s
        self._poll = poll
        self.clock = clock
        self._limit = asyncio.Semaphore(max_contexts)
        self._per_context = per_context
        self._running: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # A queue of ``batch.threshold`` due invoices or more goes out in a batch session (sales/batch.py).
        self.batch = BatchSending(
            db, ksef, threshold=batch_threshold, poll=poll, outcome=self._outcome, clock=lambda: self.clock()
        )

    # --- the loop ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._forever(), name="sales-sender")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:
                log.exception("the sales sender's tick failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=await self._idle_for())

    async def _idle_for(self) -> float:
        """Until the earliest scheduled attempt, at most ``tick_s`` (the peers' submissions wake nobody here)."""
        try:
            async with self._db.sessionmaker() as session:
                # Contexts with a run going look after their own due work.
                due = await SalesRepository(session).next_due(excluding=set(self._running))
        except Exception:
            return self._tick_s
        if due is None:
            return self._tick_s
        return max(0.0, min(self._tick_s, (due - self.clock()).total_seconds()))

    async def tick(self) -> None:
        """Start a run for every held context with due work that has none running; none while KSeF is down (the
        availability monitor wakes the loop when the outage ends: nothing is sent into a 503)."""
        if self._paused():
            return
        async with self._db.sessionmaker() as session:
            contexts = await SalesRepository(session).contexts_with_work(self.clock())
        for nip in contexts:
            if nip in self._running or not self._holds(nip):
                continue
            self._running[nip] = asyncio.create_task(self._guarded(nip), name=f"sales-sender:{nip}")

    async def _guarded(self, nip: str) -> None:
        try:
            async with self._limit:
                await self.run(nip)
        except (NoCredential, ContextNotOwned) as exc:
            log.info("sales invoices of %s wait: %s", nip, exc)
        except Exception:
            log.exception("sending the sales invoices of %s failed", nip)
        finally:
            self._running.pop(nip, None)
            self._wake.set()  # what this run scheduled may be due before the next tick

    async def run(self, nip: str) -> None:
        """Passes over the context while anything is due: reconcile what a crash left, look at what KSeF may have
        decided (first, so that an accepted invoice is not kept waiting behind a long queue), then send the next
        few. Sends and looks go out ``per_context`` at a time: one online session takes parallel sends, and each
        invoice's state is its own row, so the order in which KSeF numbers them is not the submission order."""
        while not self._stopping.is_set():
            now = self.clock()
            async with self._db.sessionmaker() as session:
                repository = SalesRepository(session)
                lost = await repository.due(nip, SalesStatus.SENDING, now, BATCH)
                submitted = await repository.due(nip, SalesStatus.SUBMITTED, now, BATCH)
                queued = await repository.due(nip, SalesStatus.QUEUED, now, SEND_BATCH)
            if lost:
                await self._reconcile(nip, lost)
            await self._each(submitted, lambda row: self._check(nip, row))
            if queued and await self.batch.send(nip):
                continue  # the queue went into a batch session: its rows are reconciled once KSeF has processed it
            sent = await self._each(queued, lambda row: self._send(nip, row))
            if not (lost or queued or submitted):
                return
            if not all(sent):
                return  # budget, credential or a failed step: the rows carry their next attempt
            if not queued:
                # Only short polls are waited for inside the run; anything later is the loop's (next_attempt_at).
                await asyncio.sleep(self._poll.first_s)

    async def _each(self, rows: Sequence[Row[Any]], step: Callable[[Row[Any]], Awaitable[T]]) -> list[T | None]:
        """``step`` for every row, ``per_context`` at a time. A step that fails (the database busy, an error of
        ours) is logged and leaves its row in the state it last committed, which the next pass takes up again; it
        never cancels nor outlives the others (no step keeps running after the run it belongs to has ended)."""
        limit = asyncio.Semaphore(self._per_context)

        async def one(row: Row[Any]) -> T | None:
            async with limit:
                try:
                    return await step(row)
                except (NoCredential, ContextNotOwned):
                    raise
                except Exception:
                    log.exception(
                        "sales invoice %s of %s: this step failed, the next pass retries it", row.id, row.client_nip
                    )
                    return None

        results = await asyncio.gather(*(one(r) for r in rows), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]

    # --- steps ------------------------------------------------------------------------------------------------

    async def _send(self, nip: str, row: Row[Any]) -> bool:
        """Post one queued invoice; False when the context should stop for now (budget, credential)."""
        try:
            online = await self._ksef.session(nip)
        except BudgetUnavailable as exc:
            if isinstance(exc, CircuitOpen):  # the budget's breaker saw KSeF fail: that is a failure too
                await self._outcome(exc)
            await self._defer(row, SalesStatus.QUEUED, exc.retry_after_s)
            return False
        except KsefError as exc:
            await self._outcome(exc)
            await self._defer(row, SalesStatus.QUEUED, send_retry_delay(row.attempts + 1), error=exc)
            return False
        now = self.clock()
        moved = await self._move(
            row,
            SalesStatus.QUEUED,
            SalesStatus.SENDING,
            {"session_reference": online.reference_number, "attempts": row.attempts + 1, "next_attempt_at": None},
            {"session": online.reference_number, "attempt": row.attempts + 1},
        )
        if not moved:
            return True
        async with self._db.sessionmaker() as session:
            full = await SalesRepository(session).get(nip, row.id, documents=True)
        assert full is not None
        try:
            reference = await self._ksef.send(
                nip,
                online,
                bytes(full.xml),
                offline_mode=full.offline_mode is not None,
                hash_of_corrected_invoice=full.hash_of_corrected_invoice,
            )
        except BudgetUnavailable as exc:
            # Refused by our own budget before anything left: certainly not sent, so not an attempt either (the
            # attempt count drives the retry delay and the give-up; a long budget wait must not use them up).
            await self._move(
                row,
                SalesStatus.SENDING,
                SalesStatus.QUEUED,
                _later(now, exc.retry_after_s) | {"attempts": row.attempts},
                {},
            )
            return False
        except KsefError as exc:
            await self._outcome(exc)
            if exc.http_status == 400 and SESSION_UNUSABLE_CODES & set(exc.codes):
                await self._ksef.drop_sessions(nip)
                await self._move(
                    row, SalesStatus.SENDING, SalesStatus.QUEUED, {"next_attempt_at": None}, _error_detail(exc)
                )
                return True
            if exc.http_status == 400:
                await self._reject(row, SalesStatus.SENDING, exc.codes[0] if exc.codes else 400, _error_detail(exc))
                return True
            # 429, 5xx, a timeout: KSeF may or may not hold it. Left in ``sending``, reconciled by its hash later.
            await self._defer(row, SalesStatus.SENDING, send_retry_delay(row.attempts + 1), error=exc)
            return bool(exc.http_status != 429)
        await self._outcome(None)
        await self._move(
            row,
            SalesStatus.SENDING,
            SalesStatus.SUBMITTED,
            {"invoice_reference": reference, "next_attempt_at": self.clock() + timedelta(seconds=self._poll.first_s)},
            {"invoice_reference": reference},
        )
        return True

    async def _upo_trust(self) -> Sequence[x509.Certificate]:
        return await self._upo_trust_source() if self._upo_trust_source is not None else ()

    async def _outcome(self, error: KsefError | CircuitOpen | None) -> None:
        """What a call tells about KSeF's availability: an answer (even a refusal) means it is up; a 5xx or no
        answer counts towards the circuit that records an UNREACHABLE outage (outages/domain.py)."""
        if self._report is None:
            return
        if error is None or (
            isinstance(error, KsefError) and error.http_status is not None and error.http_status < 500
        ):
            await self._report(True)
        else:
            await self._report(False)

    async def _reconcile(self, nip: str, rows: list[Row[Any]] | Any) -> None:
        """``sending`` rows nobody is posting: KSeF holds the invoice (→ submitted) or not (→ queued again)."""
        rows = await self.batch.settled(nip, rows)  # a batch session KSeF has not processed yet keeps its rows
        listed: dict[str, list[SentInvoiceStatus]] = {}
        for row in rows:
            reference = row.session_reference
            if reference not in listed:
                try:
                    listed[reference] = await self._ksef.session_invoices(nip, reference)
                except (KsefError, BudgetUnavailable) as exc:
                    log.info("reconciling %s of %s waits: %s", row.id, nip, exc)
                    await self._defer(row, SalesStatus.SENDING, send_retry_delay(row.attempts))
                    continue
            async with self._db.sessionmaker() as session:
                taken = await SalesRepository(session).references_in(nip, reference)
            matches = [
                i for i in listed[reference] if i.invoice_hash == row.invoice_hash and i.reference_number not in taken
            ]
            if matches:
                found = next((i for i in matches if i.code == 200), matches[-1])
                await self._move(
                    row,
                    SalesStatus.SENDING,
                    SalesStatus.SUBMITTED,
                    {"invoice_reference": found.reference_number, "next_attempt_at": None},
                    {"invoice_reference": found.reference_number, "reconciled": True},
                )
            else:
                await self._move(
                    row, SalesStatus.SENDING, SalesStatus.QUEUED, {"next_attempt_at": None}, {"reconciled": True}
                )

    async def _check(self, nip: str, row: Row[Any]) -> None:
        try:
            status = await self._ksef.status(nip, row.session_reference, row.invoice_reference)
        except (KsefError, BudgetUnavailable) as exc:
            retry = exc.retry_after_s if isinstance(exc, BudgetUnavailable) else None
            if isinstance(exc, KsefError | CircuitOpen):
                await self._outcome(exc)
            await self._defer(row, SalesStatus.SUBMITTED, retry or self._poll.max_s)
            return
        await self._outcome(None)
        if status.processing:
            waited = (self.clock() - row.updated_at).total_seconds()
            await self._defer(row, SalesStatus.SUBMITTED, self._poll.after(waited))
            return
        if status.code == 200 and status.ksef_number:
            upo = await self._upo(nip, row, row.session_reference, invoice_reference=row.invoice_reference)
            if upo is None:
                return
            await self._accept(row, SalesStatus.ACCEPTED, status.ksef_number, status.acquisition_date, upo, {})
            return
        if status.code == DUPLICATE_CODE:
            await self._duplicate(nip, row, status)
            return
        await self._reject(row, SalesStatus.SUBMITTED, status.code, _status_detail(status))

    async def _duplicate(self, nip: str, row: Row[Any], status: SentInvoiceStatus) -> None:
        """KSeF holds an invoice with this seller, type and number: the same document (by hash) is accepted under
        the original's KSeF number with the original's UPO; a different document is a real conflict."""
        number, original_session = duplicate_original(status.extensions)
        if number is None or original_session is None:
            await self._reject(row, SalesStatus.SUBMITTED, status.code, _status_detail(status))
            return
        try:
            original = await self._ksef.download(nip, number)
        except (KsefError, BudgetUnavailable):
            await self._defer(row, SalesStatus.SUBMITTED, self._poll.max_s)
            return
        if sha256_b64(original) != row.invoice_hash:
            detail = _status_detail(status) | {"original_ksef_number": number, "same_document": False}
            await self._reject(row, SalesStatus.SUBMITTED, status.code, detail)
            return
        upo = await self._upo(nip, row, original_session, ksef_number=number)
        if upo is None:
            return
        detail = {"original_ksef_number": number, "original_session": original_session, "same_document": True}
        await self._accept(row, SalesStatus.DUPLICATE, number, None, upo, detail)

    async def _upo(
        self,
        nip: str,
        row: Row[Any],
        session_reference: str,
        *,
        invoice_reference: str | None = None,
        ksef_number: str | None = None,
    ) -> bytes | None:
        try:
            upo = await self._ksef.upo(
                nip, session_reference, invoice_reference=invoice_reference, ksef_number=ksef_number
            )
        except (KsefError, BudgetUnavailable) as exc:
            # Accepted but without its receipt yet: polled again, the UPO is part of being done.
            log.info("UPO of %s (%s) not yet available: %s", row.id, nip, exc)
            await self._defer(row, SalesStatus.SUBMITTED, 1.0)
            return None
        try:
            verify_upo(upo, await self._upo_trust())
        except UpoSignatureError as exc:
            # A UPO whose signature does not hold is not a receipt: the invoice stays submitted, the reason is
            # shown on it, and the UPO is fetched again later (a damaged download heals, a forged one never passes).
            log.error("UPO of %s (%s) refused: %s", row.id, nip, exc.reason)
            values: dict[str, Any] = {"next_attempt_at": self.clock() + timedelta(seconds=self._poll.max_s)}
            async with self._db.sessionmaker() as session, session.begin():
                repository = SalesRepository(session)
                values["error"] = {"description": f"UPO signature refused: {exc.reason}", "code": "upo-signature"}
                if await repository.update(row.id, SalesStatus.SUBMITTED.value, values):
                    await repository.history(
                        row.id, SalesStatus.SUBMITTED.value, self.clock(), {"upo_refused": exc.reason}
                    )
            return None
        return upo

    # --- transitions --------------------------------------------------------------------------------------------

    async def _move(
        self,
        row: Row[Any],
        expected: SalesStatus,
        to: SalesStatus,
        values: dict[str, Any],
        detail: dict[str, Any],
        *,
        events: list[Any] | None = None,
    ) -> bool:
        now = self.clock()
        async with self._db.sessionmaker() as session, session.begin():
            repository = SalesRepository(session)
            moved = await repository.update(row.id, expected.value, {"status": to.value, "updated_at": now} | values)
            if not moved:
                return False
            await repository.history(row.id, to.value, now, detail)
            for event in events or ():
                await self._outbox.emit(session, event, client_nip=row.client_nip)
        return True

    async def _defer(
        self, row: Row[Any], state: SalesStatus, delay_s: float, *, error: KsefError | None = None
    ) -> None:
        values: dict[str, Any] = {"next_attempt_at": self.clock() + timedelta(seconds=max(0.0, delay_s))}
        if error is not None:
            values["error"] = _error_detail(error)
        async with self._db.sessionmaker() as session, session.begin():
            await SalesRepository(session).update(row.id, state.value, values)

    async def _accept(
        self,
        row: Row[Any],
        to: SalesStatus,
        ksef_number: str,
        acquisition_date: datetime | None,
        upo: bytes,
        detail: dict[str, Any],
    ) -> None:
        now = self.clock()
        events = [
            InvoiceSent(
                invoice_id=str(row.id),
                ksef_number=ksef_number,
                client_nip=row.client_nip,
                p_2=row.invoice_number,
                mode=SendingMode.OFFLINE if row.offline_mode else SendingMode.ONLINE,
                accepted_at=acquisition_date or now,
            ),
            StatusChanged(
                document_kind=DocumentKind.SALES,
                document_id=str(row.id),
                ksef_number=ksef_number,
                previous_status=SalesStatus.SUBMITTED.value,
                status=to.value,
                changed_at=now,
            ),
        ]
        await self._move(
            row,
            SalesStatus.SUBMITTED,
            to,
            {
                "ksef_number": ksef_number,
                "acquisition_date": acquisition_date,
                "upo": upo,
                "ksef_code": 200 if to is SalesStatus.ACCEPTED else DUPLICATE_CODE,
                "error": None,
                "next_attempt_at": None,
            },
            detail | {"ksef_number": ksef_number},
            events=events,
        )

    async def _reject(self, row: Row[Any], expected: SalesStatus, code: int, detail: dict[str, Any]) -> None:
        now = self.clock()
        reason = " ".join(filter(None, [str(detail.get("description") or ""), *detail.get("details", ())]))
        event = StatusChanged(
            document_kind=DocumentKind.SALES,
            document_id=str(row.id),
            previous_status=expected.value,
            status=SalesStatus.REJECTED.value,
            reason=f"{code}: {reason}"[:1000],
            changed_at=now,
        )
        await self._move(
            row,
            expected,
            SalesStatus.REJECTED,
            {"ksef_code": code, "error": detail, "next_attempt_at": None},
            detail | {"code": code},
            events=[event],
        )


def _later(now: datetime, delay_s: float) -> dict[str, Any]:
    return {"next_attempt_at": now + timedelta(seconds=max(0.0, delay_s))}


def _error_detail(error: KsefError) -> dict[str, Any]:
    return {
        "description": error.description,
        "http_status": error.http_status,
        "codes": list(error.codes),
        "details": list(error.details),
    }


def _status_detail(status: SentInvoiceStatus) -> dict[str, Any]:
    return {
        "description": status.description,
        "details": list(status.details),
        "extensions": status.extensions,
        "invoice_reference": status.reference_number,
    }
