"""One purchase-invoice sync run: the engine that walks a client's HWM windows.

``SyncEngine.run(nip, subject)`` is one run for one (client, subject type): from the stored checkpoint it takes
windows (``sync.domain``) until it has caught up with KSeF's permanent-storage HWM, fetching each by export (big or
unknown deltas) or metadata query + downloads (small ones). A window's invoices, their ``invoice.fetched`` outbox
rows and the advanced checkpoint commit in ONE transaction, so a crash anywhere re-fetches the window and the
unique (client, KSeF number) key makes storing exactly-once.

Every invoice's bytes are checked against KSeF's ``invoiceHash`` (base64 SHA-256) before anything is stored. A
mismatch is recorded as a rejection and the checkpoint is held at that invoice's permanent-storage date, so the
next run fetches it again (a transfer fault heals); after ``hash_mismatch_retries`` runs it is given up and stays
listed. A document we cannot parse is recorded the same way (retrying cannot change KSeF's copy).

Exports in flight are recorded (reference, start, window, AES key) before they are polled: a restart resumes the
same export instead of paying for another. The watchdog abandons an export still at status 100 after
``export_stuck_after_s`` (KSeF allows at most 10 running exports per context, 21182) and the window is retried
on the next run. When the rate-limit budget has no slot soon (``BudgetExhausted``) or KSeF's circuit is open
(``CircuitOpen``) the run reschedules its subject.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, Tracer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ksef_gateway.budget.service import BudgetUnavailable
from ksef_gateway.ksef.client import open_export_package
from ksef_gateway.ksef.crypto import SymmetricKey
from ksef_gateway.ksef.errors import KsefError, KsefRateLimited
from ksef_gateway.ksef.models import ExportHandle, ExportStatus
from ksef_gateway.purchases import service as purchases
from ksef_gateway.sessions.service import ContextNotOwned, NoCredential
from ksef_gateway.settings import SyncSettings
from ksef_gateway.sync import repository
from ksef_gateway.sync.domain import (
    EXPORT_BEYOND_HWM,
    EXPORT_DONE,
    EXPORT_RUNNING,
    FROM_AFTER_HWM,
    METADATA_PAGE_SIZE,
    TOO_MANY_EXPORTS,
    Checked,
    DueSubject,
    Fetched,
    Method,
    NoProgress,
    SubjectType,
    SyncPolicy,
    Window,
    WindowResult,
    check_invoices,
    choose_method,
    dedupe,
    export_poll_delay,
    has_more,
    initial_checkpoint,
    metadata_is_small,
    month_close_deadline,
    next_checkpoint,
    next_run_after_failure,
    next_window,
    parse_instant,
)
from ksef_gateway.sync.ksef import NO_HINTS, BudgetHints, SyncKsef
from platform_common.contracts.invoices import InvoiceFetched
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.outbox import Outbox, current_trace_context

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


_NO_EXPORT: dict[str, Any] = {
    "export_reference": None,
    "export_started_at": None,
    "export_window_start": None,
    "export_window_end": None,
    "export_key": None,
}


class ExportAbandoned(Exception):
    """The export cannot deliver (stuck at 100 past the watchdog, expired, failed): its window is retried later."""


@dataclass(frozen=True)
class ClientPreferences:
    """Per-client sync settings resolved against the defaults."""

    backfill_months: int
    month_close_day: int


@dataclass
class RunReport:
    client_nip: str
    subject_type: SubjectType
    stored: int = 0
    rejected: list[str] = field(default_factory=list)
    windows: int = 0
    error: str | None = None
    caught_up: bool = False
    # When the subject is due again (the scheduler sleeps until the earliest of these, not a fixed tick).
    next_run_at: datetime | None = None


@dataclass(frozen=True)
class DuePlan:
    """What a scheduler tick found: the subjects due now, and when the next of the others falls due."""

    due: list[DueSubject]
    next_at: datetime | None


class SyncEngine:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        ksef: SyncKsef,
        settings: SyncSettings,
        *,
        clock: Clock = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tracer: Tracer | None = None,
    ) -> None:
        self.sessions = sessionmaker
        self._outbox = outbox
        self._ksef = ksef
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        # Phase spans (sync.run > sync.export.wait, sync.download, sync.decrypt, sync.parse, sync.store) beside the
        # KSeF client's per-call spans: where a run's time goes. The runtime's tracer; a no-op one without it.
        self._tracer: Tracer = tracer or trace.NoOpTracer()
        # Per client: the budget hints of its current run (both subject types of a client share them).
        self._hints: dict[str, BudgetHints] = {}

    def now(self) -> datetime:
        return self._clock()

    def policy(self, prefs: ClientPreferences) -> SyncPolicy:
        return SyncPolicy(
            backfill_months=prefs.backfill_months,
            min_poll_interval=timedelta(seconds=self.settings.min_poll_interval_s),
            small_delta_max_invoices=self.settings.small_delta_max_invoices,
            small_delta_max_gap=timedelta(seconds=self.settings.small_delta_max_gap_s),
        )

    async def preferences(self, nip: str) -> ClientPreferences:
        async with self.sessions() as session:
            client = await repository.load_client(session, nip)
        return self.resolve(client)

    def hints(self, nip: str) -> BudgetHints:
        return self._hints.get(nip, NO_HINTS)

    def budget_hints(self, prefs: ClientPreferences, now: datetime) -> BudgetHints:
        """Clients closer to their month-close deadline get their KSeF calls first (issue: fair, deadline first)."""
        deadline = month_close_deadline(now, prefs.month_close_day)
        return BudgetHints(
            priority=max((deadline - now).total_seconds(), 0.0), max_wait_s=self.settings.budget_max_wait_s
        )

    def resolve(self, client: repository.ClientSync | None) -> ClientPreferences:
        return ClientPreferences(
            backfill_months=(
                client.backfill_months
                if client and client.backfill_months is not None
                else self.settings.backfill_months
            ),
            month_close_day=(
                client.month_close_day
                if client and client.month_close_day is not None
                else self.settings.default_month_close_day
            ),
        )

    async def due(self, pairs: Sequence[tuple[str, SubjectType]], now: datetime) -> list[DueSubject]:
        """The (client, subject) pairs among ``pairs`` whose next run is due, each with its month-close day; pairs
        seen for the first time get a state row and are due at once."""
        return (await self.plan(pairs, now)).due

    async def plan(self, pairs: Sequence[tuple[str, SubjectType]], now: datetime) -> DuePlan:
        """``due(pairs, now)``, and the earliest later ``next_run_at`` of these clients (``None``: none is set)."""
        wanted = set(pairs)
        nips = sorted({nip for nip, _ in pairs})
        async with self.sessions() as session, session.begin():
            await repository.ensure_states(session, pairs, now)
            clients = await repository.load_clients(session, nips)
            states = await repository.due_states(session, nips, now)
            next_at = await repository.next_run_after(session, nips, now)
        due = [
            DueSubject(
                state.client_nip,
                state.subject_type,
                state.next_run_at,
                self.resolve(clients.get(state.client_nip)).month_close_day,
            )
            for state in states
            if (state.client_nip, state.subject_type) in wanted
        ]
        return DuePlan(due, next_at)

    # -- one run ----------------------------------------------------------------------------------------------------

    async def run(self, nip: str, subject: SubjectType) -> RunReport:
        """Catch one (client, subject) up with KSeF's HWM; never raises for KSeF or data problems (they are
        recorded in the sync state and the subject is rescheduled)."""
        attributes = {"ksef.context_nip": nip, "sync.subject": subject.value}
        with self._tracer.start_as_current_span("sync.run", attributes=attributes) as span:
            report = await self._run(nip, subject)
            span.set_attribute("sync.stored", report.stored)
            span.set_attribute("sync.windows", report.windows)
            if report.error is not None:
                span.set_status(Status(StatusCode.ERROR, report.error[:200]))
            return report

    async def _run(self, nip: str, subject: SubjectType) -> RunReport:
        report = RunReport(nip, subject)
        started = self._clock()
        prefs = await self.preferences(nip)
        policy = self.policy(prefs)
        self._hints[nip] = self.budget_hints(prefs, started)
        async with self.sessions() as session, session.begin():
            await repository.ensure_states(session, [(nip, subject)], started)
            await repository.update_state(session, nip, subject, started, last_run_at=started)
            state = await repository.load_state(session, nip, subject)
            client = await repository.load_client(session, nip)
        assert state is not None
        fetch_request = client.fetch_requested_at if client else None
        try:
            await self._catch_up(state, policy, report)
        except (NoCredential, ContextNotOwned) as exc:
            # The vault or the lease changed under us; the scheduler stops offering this client if it stays so.
            report.next_run_at = await self._reschedule(
                nip, subject, timedelta(seconds=self.settings.retry_base_s), str(exc)
            )
            report.error = str(exc)
            return report
        except BudgetUnavailable as exc:
            # Not a failure of this client: the shared budget or KSeF itself is busy. Come back when a slot frees.
            report.next_run_at = await self._reschedule(
                nip, subject, timedelta(seconds=max(exc.retry_after_s, 1.0)), str(exc)
            )
            report.error = str(exc)
            return report
        except (KsefError, ExportAbandoned, NoProgress) as exc:
            report.next_run_at = await self._failed(nip, subject, state.consecutive_failures + 1, str(exc))
            report.error = str(exc)
            return report
        except Exception as exc:
            log.exception("purchase sync of %s %s failed", nip, subject.value)
            report.next_run_at = await self._failed(
                nip, subject, state.consecutive_failures + 1, f"internal error: {type(exc).__name__}"
            )
            report.error = f"internal error: {type(exc).__name__}"
            return report
        finished = self._clock()
        async with self.sessions() as session, session.begin():
            report.next_run_at = finished + policy.min_poll_interval
            values: dict[str, Any] = {
                "next_run_at": report.next_run_at,
                "consecutive_failures": 0,
                "last_delta": report.stored,
            }
            if report.caught_up:
                values["backfilled"] = True
            if report.rejected:
                values["last_error"] = f"{len(report.rejected)} invoice(s) rejected: {', '.join(report.rejected[:5])}"
                values["last_error_at"] = finished
            else:
                values["last_success_at"] = finished
                values["last_error"] = None
            await repository.update_state(session, nip, subject, finished, **values)
            if fetch_request is not None:
                await repository.clear_fetch_request(session, nip, fetch_request, finished)
        log.info(
            "purchase sync %s %s: %d new invoice(s) in %d window(s)%s",
            nip,
            subject.value,
            report.stored,
            report.windows,
            f", {len(report.rejected)} rejected" if report.rejected else "",
        )
        return report

    async def _catch_up(self, state: repository.SyncState, policy: SyncPolicy, report: RunReport) -> None:
        nip, subject = state.client_nip, state.subject_type
        checkpoint = state.checkpoint or initial_checkpoint(self._clock(), policy.backfill_months)
        backfilled = state.backfilled
        last_delta = state.last_delta
        if state.export_reference is not None:
            # A restart (or an earlier budget pause) left an export in flight: finish it before anything new.
            window = Window(state.export_window_start or checkpoint, state.export_window_end)
            handle = self._handle(state)
            started_at = state.export_started_at or self._clock()
            if handle is None:
                await self._forget_export(nip, subject, "its key was not kept")
            else:
                with self._tracer.start_as_current_span("sync.export.wait", attributes={"sync.resumed": True}):
                    status = await self._await_export(nip, subject, handle.reference_number, started_at)
                outcome = await self._finish_export(nip, subject, window, handle, status, report)
                if outcome is None:
                    return
                checkpoint, more = outcome
                if not more:
                    report.caught_up = True
                    return
        while True:
            now = self._clock()
            window = next_window(checkpoint, now)
            method = choose_method(policy, checkpoint=checkpoint, now=now, last_delta=last_delta, backfilled=backfilled)
            outcome = None
            if method is Method.METADATA:
                outcome = await self._via_metadata(nip, subject, window, policy, report)
            if outcome is None:
                outcome = await self._via_export(nip, subject, window, report)
            if outcome is None:  # nothing beyond the HWM yet
                report.caught_up = True
                return
            checkpoint, more = outcome
            report.windows += 1
            if not more:
                report.caught_up = True
                return
            # Continuing a truncated or split window is the same run, not a new poll.
            last_delta = None

    # -- metadata query + downloads ---------------------------------------------------------------------------------

    async def _via_metadata(
        self, nip: str, subject: SubjectType, window: Window, policy: SyncPolicy, report: RunReport
    ) -> tuple[datetime, bool] | None:
        try:
            page = await self._ksef.query_metadata(
                nip, window.filters(subject), page_offset=0, page_size=METADATA_PAGE_SIZE, hints=self.hints(nip)
            )
        except KsefError as exc:
            if FROM_AFTER_HWM in exc.codes:
                return window.start, False
            raise
        if not metadata_is_small(
            policy, count=len(page.invoices), has_more_pages=page.has_more, is_truncated=page.is_truncated
        ):
            return None  # bigger than a small delta: the caller exports this window instead
        numbers = [str(m["ksefNumber"]) for m in page.invoices]
        async with self.sessions() as session:
            already = await purchases.known_numbers(session, nip, numbers)
        by_number = {str(m["ksefNumber"]): m for m in page.invoices}
        fetched = []
        wanted = dedupe(numbers, already)
        with self._tracer.start_as_current_span("sync.download", attributes={"sync.invoices": len(wanted)}):
            for number in wanted:
                xml, header_hash = await self._ksef.download_invoice(nip, number, hints=self.hints(nip))
                metadata = by_number[number]
                if header_hash and header_hash != metadata.get("invoiceHash"):
                    # Both come from KSeF; trust the metadata, but a disagreement is worth a line in the log.
                    log.warning("x-ms-meta-hash of %s differs from its metadata invoiceHash", number)
                fetched.append(Fetched(number, xml, metadata, "download"))
        result = WindowResult(
            is_truncated=False,
            permanent_storage_hwm=parse_instant(page.permanent_storage_hwm_date),
            last_permanent_storage=None,
        )
        return await self._store_window(nip, subject, window, result, fetched, report)

    # -- export --------------------------------------------------------------------------------------------------

    async def _via_export(
        self, nip: str, subject: SubjectType, window: Window, report: RunReport
    ) -> tuple[datetime, bool] | None:
        with self._tracer.start_as_current_span("sync.export.wait"):
            started = await self._start_export(nip, subject, window)
            if started is None:
                return None
            handle, started_at = started
            status = await self._await_export(nip, subject, handle.reference_number, started_at)
        return await self._finish_export(nip, subject, window, handle, status, report)

    async def _start_export(
        self, nip: str, subject: SubjectType, window: Window
    ) -> tuple[ExportHandle, datetime] | None:
        """Start the window's export and record it (a restart resumes it); ``None`` when nothing lies beyond the HWM."""
        try:
            handle = await self._ksef.start_export(nip, window.filters(subject), hints=self.hints(nip))
        except KsefError as exc:
            if FROM_AFTER_HWM in exc.codes:
                return None
            if TOO_MANY_EXPORTS in exc.codes:
                raise KsefError(
                    "KSeF already runs 10 exports for this context (21182); the window is retried later",
                    http_status=exc.http_status,
                    codes=exc.codes,
                ) from exc
            raise
        started_at = self._clock()
        async with self.sessions() as session, session.begin():
            await repository.update_state(
                session,
                nip,
                subject,
                started_at,
                export_reference=handle.reference_number,
                export_started_at=started_at,
                export_window_start=window.start,
                export_window_end=window.end,
                export_key=handle.key.key + handle.key.iv,
            )
        return handle, started_at

    def _handle(self, state: repository.SyncState) -> ExportHandle | None:
        if state.export_reference is None or state.export_key is None or len(state.export_key) != 48:
            return None
        key = SymmetricKey(state.export_key[:32], state.export_key[32:])
        return ExportHandle(reference_number=state.export_reference, context_nip=state.client_nip, key=key)

    async def _forget_export(self, nip: str, subject: SubjectType, why: str) -> None:
        now = self._clock()
        async with self.sessions() as session, session.begin():
            state = await repository.load_state(session, nip, subject)
            if state is not None and state.export_reference is not None:
                log.warning("purchase sync %s %s: abandoning export %s: %s", nip, subject, state.export_reference, why)
            await repository.update_state(session, nip, subject, now, **_NO_EXPORT)

    async def _finish_export(
        self,
        nip: str,
        subject: SubjectType,
        window: Window,
        handle: ExportHandle,
        status: ExportStatus,
        report: RunReport,
    ) -> tuple[datetime, bool] | None:
        """Download the ready package (``status`` from ``_await_export``), open it and store its window. ``None``
        when KSeF said the range lies beyond the HWM (nothing new)."""
        if status.code == EXPORT_BEYOND_HWM:
            await self._forget_export(nip, subject, "range beyond the HWM (nothing new yet)")
            return None
        assert status.package is not None
        with self._tracer.start_as_current_span("sync.download", attributes={"sync.parts": len(status.package.parts)}):
            parts = await self._ksef.download_export_parts(nip, handle, status, hints=self.hints(nip))
        # Decrypting and unpacking a big package is CPU work: off the event loop, like parsing below.
        with self._tracer.start_as_current_span("sync.decrypt"):
            package = await asyncio.to_thread(open_export_package, handle, status, parts)
        result = WindowResult(
            is_truncated=status.package.is_truncated,
            permanent_storage_hwm=parse_instant(status.package.permanent_storage_hwm_date),
            last_permanent_storage=parse_instant(status.package.last_permanent_storage_date),
        )
        by_number = {str(m.get("ksefNumber")): m for m in package.metadata}
        fetched = [Fetched(number, xml, by_number.get(number, {}), "export") for number, xml in package.invoices]
        return await self._store_window(nip, subject, window, result, fetched, report)

    async def _await_export(self, nip: str, subject: SubjectType, reference: str, started_at: datetime) -> ExportStatus:
        stuck_after = timedelta(seconds=self.settings.export_stuck_after_s)
        polls = 0
        while True:
            polls += 1
            retry_after: float | None = None
            try:
                status = await self._ksef.export_status(nip, reference, hints=self.hints(nip))
            except KsefRateLimited as exc:
                # The status window of this context is full: KSeF says when to ask again (the budget blocks the
                # group until then too), and the export keeps running meanwhile, so this is not a failed run.
                status = None
                retry_after = exc.retry_after_s
            except KsefError as exc:
                if exc.http_status == 410:  # status retention passed (7 days): the export is gone
                    await self._forget_export(nip, subject, "KSeF no longer knows it (410)")
                    raise ExportAbandoned(f"export {reference} is gone (410); the window is retried") from exc
                raise
            if status is not None:
                if status.code == EXPORT_DONE and status.package is not None:
                    return status
                if status.code == EXPORT_BEYOND_HWM:
                    return status
                if status.code != EXPORT_RUNNING:
                    await self._forget_export(nip, subject, f"status {status.code}")
                    raise ExportAbandoned(
                        f"export {reference} ended with status {status.code} ({status.description}); "
                        "the window is retried"
                    )
                retry_after = status.retry_after_s
            waited = self._clock() - started_at
            if waited >= stuck_after:
                await self._forget_export(nip, subject, f"stuck at status 100 for {waited.total_seconds():.0f} s")
                raise ExportAbandoned(
                    f"export {reference} stuck at status 100 for {waited.total_seconds():.0f} s "
                    f"(watchdog {stuck_after.total_seconds():.0f} s); abandoned, the window is retried"
                )
            await self._sleep(
                export_poll_delay(
                    polls,
                    first_s=self.settings.export_poll_interval_s,
                    max_s=self.settings.export_poll_max_interval_s,
                    left_s=(stuck_after - waited).total_seconds(),
                    retry_after_s=retry_after,
                )
            )

    # -- storing a window -----------------------------------------------------------------------------------------

    async def _store_window(
        self,
        nip: str,
        subject: SubjectType,
        window: Window,
        result: WindowResult,
        fetched: Sequence[Fetched],
        report: RunReport,
    ) -> tuple[datetime, bool]:
        """Check and parse the window's new invoices, then store them with their events and advance the checkpoint,
        all in one transaction."""
        now = self._clock()
        checkpoint = next_checkpoint(window, result)
        trace_context = current_trace_context()  # the run's: each invoice.fetched event continues its trace
        async with self.sessions() as session:
            already = await purchases.known_numbers(session, nip, [f.ksef_number for f in fetched])
        fresh = set(dedupe([f.ksef_number for f in fetched], already))
        new_items = []
        for item in fetched:
            if item.ksef_number in fresh:
                fresh.discard(item.ksef_number)  # a package listing a number twice stores it once
                new_items.append(item)
        # Hashing and parsing a big window is CPU work of a second or more: off the event loop, so the API and
        # other clients' runs stay responsive (lxml releases the GIL while it parses), and before the transaction,
        # so no pooled connection is held while it runs.
        with self._tracer.start_as_current_span("sync.parse", attributes={"sync.invoices": len(new_items)}):
            checked = await asyncio.to_thread(check_invoices, nip, subject, new_items, now, trace_context)
        with self._tracer.start_as_current_span("sync.store", attributes={"sync.invoices": len(checked)}):
            return await self._commit_window(nip, subject, window, result, checkpoint, checked, now, report)

    async def _commit_window(
        self,
        nip: str,
        subject: SubjectType,
        window: Window,
        result: WindowResult,
        checkpoint: datetime,
        checked: Sequence[Checked],
        now: datetime,
        report: RunReport,
    ) -> tuple[datetime, bool]:
        hold_at: datetime | None = None
        stored: list[str] = []
        rows: list[dict[str, Any]] = []
        envelopes: list[Envelope] = []
        async with self.sessions() as session, session.begin():
            # Checked again inside the transaction: another run of this client (another subject type) may have
            # stored one of them since the read above, and the row must not be offered twice.
            meanwhile = await purchases.known_numbers(session, nip, [c.item.ksef_number for c in checked])
            for outcome in checked:
                item = outcome.item
                if item.ksef_number in meanwhile:
                    continue
                if outcome.row is None or outcome.envelope is None:
                    reason, detail = outcome.problem or ("malformed", "unreadable")
                    rejection = await repository.record_rejection(
                        session,
                        nip=nip,
                        ksef_number=item.ksef_number,
                        subject=subject,
                        reason=reason,
                        detail=detail,
                        now=now,
                        # Retrying cannot repair a document KSeF accepted; a transfer fault may heal.
                        max_attempts=self.settings.hash_mismatch_retries if reason == "hash_mismatch" else 1,
                    )
                    report.rejected.append(item.ksef_number)
                    log.warning(
                        "purchase sync %s %s: invoice %s rejected (%s, attempt %d): %s",
                        nip,
                        subject.value,
                        item.ksef_number,
                        reason,
                        rejection.attempts,
                        detail,
                    )
                    held = parse_instant(item.metadata.get("permanentStorageDate"))
                    if not rejection.given_up and held is not None:
                        hold_at = held if hold_at is None else min(hold_at, held)
                    continue
                rows.append(outcome.row)
                envelopes.append(outcome.envelope)
                stored.append(item.ksef_number)
            # One executemany each for the rows and their events (same order: an event follows its invoice).
            await purchases.store(session, rows)
            await self._outbox.add_many(session, envelopes, topic=InvoiceFetched.topic)
            await repository.clear_rejections(session, nip, stored)
            values: dict[str, Any] = dict(_NO_EXPORT)
            if hold_at is not None:
                # Everything before the held invoice is complete; it and what follows are fetched again next run.
                checkpoint = max(min(checkpoint, hold_at), window.start)
                values["hwm"] = checkpoint
            elif result.permanent_storage_hwm is not None:
                values["hwm"] = result.permanent_storage_hwm
            await repository.update_state(session, nip, subject, now, checkpoint=checkpoint, **values)
        report.stored += len(stored)
        more = has_more(window, result) and hold_at is None
        return checkpoint, more

    # -- bookkeeping ------------------------------------------------------------------------------------------

    async def _reschedule(self, nip: str, subject: SubjectType, delay: timedelta, why: str) -> datetime:
        now = self._clock()
        async with self.sessions() as session, session.begin():
            await repository.update_state(session, nip, subject, now, next_run_at=now + delay, last_error=why)
        return now + delay

    async def _failed(self, nip: str, subject: SubjectType, failures: int, error: str) -> datetime:
        now = self._clock()
        log.warning("purchase sync %s %s failed (%d in a row): %s", nip, subject.value, failures, error)
        next_run_at = next_run_after_failure(
            now,
            failures,
            base=timedelta(seconds=self.settings.retry_base_s),
            cap=timedelta(seconds=self.settings.retry_max_s),
        )
        async with self.sessions() as session, session.begin():
            await repository.update_state(
                session,
                nip,
                subject,
                now,
                next_run_at=next_run_at,
                last_error=error[:2000],
                last_error_at=now,
                consecutive_failures=failures,
            )
        return next_run_at
