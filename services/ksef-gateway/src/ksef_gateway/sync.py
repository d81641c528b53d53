"""Purchase-invoice sync: the engine that walks a client's HWM windows, and the scheduler that runs it.

``SyncEngine.run(nip, subject)`` is one run for one (client, subject type): from the stored checkpoint it takes
windows (``domain.sync``) until it has caught up with KSeF's permanent-storage HWM, fetching each by export (big or
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
on the next run.

``SyncScheduler`` runs due subjects of the contexts this replica leases (``ContextLeases``) among the clients the
vault knows (``Vault.active_contexts()``), nearest month-close deadline first, with bounded concurrency. When the
rate-limit budget has no slot soon (``BudgetExhausted``) or KSeF's circuit is open (``CircuitOpen``) the subject is
rescheduled and the worker moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ksef_gateway import purchases
from ksef_gateway.budget import BudgetUnavailable
from ksef_gateway.domain.fa_header import InvoiceHeader, InvoiceParseError, parse_invoice_header
from ksef_gateway.domain.sync import (
    DueSubject,
    Method,
    NoProgress,
    SubjectType,
    SyncPolicy,
    Window,
    WindowResult,
    choose_method,
    dedupe,
    earliest_fetch_now,
    enabled_subjects,
    has_more,
    initial_checkpoint,
    metadata_is_small,
    month_close_deadline,
    next_checkpoint,
    next_run_after_failure,
    next_window,
    order_due,
    parse_instant,
)
from ksef_gateway.ksef.crypto import SymmetricKey, sha256_b64
from ksef_gateway.ksef.errors import KsefError
from ksef_gateway.ksef.models import ExportedPackage, ExportHandle, ExportStatus, MetadataPage
from ksef_gateway.ownership import ContextLeases
from ksef_gateway.sessions import ContextNotOwned, NoCredential, SessionManager
from ksef_gateway.settings import SERVICE_NAME, SyncSettings
from ksef_gateway.vault import Vault
from platform_common.contracts.invoices import InvoiceFetched, Party
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.outbox import Outbox, current_trace_context

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

# KSeF export statuses (REFERENCE.md §9).
EXPORT_RUNNING, EXPORT_DONE, EXPORT_EXPIRED, EXPORT_KEY_ERROR, EXPORT_BEYOND_HWM = 100, 200, 210, 415, 420
# 400 21183: `from` is past the HWM (restrictToPermanentStorageHwmDate): nothing new yet.
FROM_AFTER_HWM = 21183
TOO_MANY_EXPORTS = 21182
METADATA_PAGE_SIZE = 250


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- what the engine needs from KSeF (implemented over A's SessionManager + KsefClient by GatewayKsef) --------------


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

    async def download_export_package(
        self, nip: str, handle: ExportHandle, status: ExportStatus, *, hints: BudgetHints = NO_HINTS
    ) -> ExportedPackage: ...


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


@dataclass(frozen=True)
class _Fetched:
    ksef_number: str
    xml: bytes
    metadata: dict[str, Any]
    via: str


@dataclass(frozen=True)
class _Checked:
    """A new invoice after its hash check and header parse: its row and event, or why it is rejected."""

    item: _Fetched
    row: dict[str, Any] | None = None
    envelope: Envelope | None = None
    problem: tuple[str, str] | None = None


class SyncEngine:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        ksef: SyncKsef,
        settings: SyncSettings,
        *,
        clock: Clock = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.sessions = sessionmaker
        self._outbox = outbox
        self._ksef = ksef
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
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
            client = await purchases.load_client(session, nip)
        return self.resolve(client)

    def hints(self, nip: str) -> BudgetHints:
        return self._hints.get(nip, NO_HINTS)

    def budget_hints(self, prefs: ClientPreferences, now: datetime) -> BudgetHints:
        """Clients closer to their month-close deadline get their KSeF calls first (issue: fair, deadline first)."""
        deadline = month_close_deadline(now, prefs.month_close_day)
        return BudgetHints(
            priority=max((deadline - now).total_seconds(), 0.0), max_wait_s=self.settings.budget_max_wait_s
        )

    def resolve(self, client: purchases.ClientSync | None) -> ClientPreferences:
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

    # -- one run ----------------------------------------------------------------------------------------------------

    async def run(self, nip: str, subject: SubjectType) -> RunReport:
        """Catch one (client, subject) up with KSeF's HWM; never raises for KSeF or data problems (they are
        recorded in the sync state and the subject is rescheduled)."""
        report = RunReport(nip, subject)
        started = self._clock()
        prefs = await self.preferences(nip)
        policy = self.policy(prefs)
        self._hints[nip] = self.budget_hints(prefs, started)
        async with self.sessions() as session, session.begin():
            await purchases.ensure_states(session, [(nip, subject)], started)
            await purchases.update_state(session, nip, subject, started, last_run_at=started)
            state = await purchases.load_state(session, nip, subject)
            client = await purchases.load_client(session, nip)
        assert state is not None
        fetch_request = client.fetch_requested_at if client else None
        try:
            await self._catch_up(state, policy, report)
        except (NoCredential, ContextNotOwned) as exc:
            # The vault or the lease changed under us; the scheduler stops offering this client if it stays so.
            await self._reschedule(nip, subject, timedelta(seconds=self.settings.retry_base_s), str(exc))
            report.error = str(exc)
            return report
        except BudgetUnavailable as exc:
            # Not a failure of this client: the shared budget or KSeF itself is busy. Come back when a slot frees.
            await self._reschedule(nip, subject, timedelta(seconds=max(exc.retry_after_s, 1.0)), str(exc))
            report.error = str(exc)
            return report
        except (KsefError, ExportAbandoned, NoProgress) as exc:
            await self._failed(nip, subject, state.consecutive_failures + 1, str(exc))
            report.error = str(exc)
            return report
        except Exception as exc:
            log.exception("purchase sync of %s %s failed", nip, subject.value)
            await self._failed(nip, subject, state.consecutive_failures + 1, f"internal error: {type(exc).__name__}")
            report.error = f"internal error: {type(exc).__name__}"
            return report
        finished = self._clock()
        async with self.sessions() as session, session.begin():
            values: dict[str, Any] = {
                "next_run_at": finished + policy.min_poll_interval,
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
            await purchases.update_state(session, nip, subject, finished, **values)
            if fetch_request is not None:
                await purchases.clear_fetch_request(session, nip, fetch_request, finished)
        log.info(
            "purchase sync %s %s: %d new invoice(s) in %d window(s)%s",
            nip,
            subject.value,
            report.stored,
            report.windows,
            f", {len(report.rejected)} rejected" if report.rejected else "",
        )
        return report

    async def _catch_up(self, state: purchases.SyncState, policy: SyncPolicy, report: RunReport) -> None:
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
                outcome = await self._finish_export(nip, subject, window, handle, started_at, report)
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
            already = await purchases.stored_numbers(session, nip, numbers)
        by_number = {str(m["ksefNumber"]): m for m in page.invoices}
        fetched = []
        for number in dedupe(numbers, already):
            xml, header_hash = await self._ksef.download_invoice(nip, number, hints=self.hints(nip))
            metadata = by_number[number]
            if header_hash and header_hash != metadata.get("invoiceHash"):
                # Both come from KSeF; trust the metadata, but a disagreement is worth a line in the log.
                log.warning("x-ms-meta-hash of %s differs from its metadata invoiceHash", number)
            fetched.append(_Fetched(number, xml, metadata, "download"))
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
            await purchases.update_state(
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
        return await self._finish_export(nip, subject, window, handle, started_at, report)

    def _handle(self, state: purchases.SyncState) -> ExportHandle | None:
        if state.export_reference is None or state.export_key is None or len(state.export_key) != 48:
            return None
        key = SymmetricKey(state.export_key[:32], state.export_key[32:])
        return ExportHandle(reference_number=state.export_reference, context_nip=state.client_nip, key=key)

    async def _forget_export(self, nip: str, subject: SubjectType, why: str) -> None:
        now = self._clock()
        async with self.sessions() as session, session.begin():
            state = await purchases.load_state(session, nip, subject)
            if state is not None and state.export_reference is not None:
                log.warning("purchase sync %s %s: abandoning export %s: %s", nip, subject, state.export_reference, why)
            await purchases.update_state(session, nip, subject, now, **_NO_EXPORT)

    async def _finish_export(
        self,
        nip: str,
        subject: SubjectType,
        window: Window,
        handle: ExportHandle,
        started_at: datetime,
        report: RunReport,
    ) -> tuple[datetime, bool] | None:
        """Poll until the package is ready (watchdog included), download it and store its window. ``None`` when
        KSeF says the range lies beyond the HWM (nothing new)."""
        status = await self._await_export(nip, subject, handle.reference_number, started_at)
        if status.code == EXPORT_BEYOND_HWM:
            await self._forget_export(nip, subject, "range beyond the HWM (nothing new yet)")
            return None
        package = await self._ksef.download_export_package(nip, handle, status, hints=self.hints(nip))
        assert status.package is not None
        result = WindowResult(
            is_truncated=status.package.is_truncated,
            permanent_storage_hwm=parse_instant(status.package.permanent_storage_hwm_date),
            last_permanent_storage=parse_instant(status.package.last_permanent_storage_date),
        )
        by_number = {str(m.get("ksefNumber")): m for m in package.metadata}
        fetched = [_Fetched(number, xml, by_number.get(number, {}), "export") for number, xml in package.invoices]
        return await self._store_window(nip, subject, window, result, fetched, report)

    async def _await_export(self, nip: str, subject: SubjectType, reference: str, started_at: datetime) -> ExportStatus:
        interval = self.settings.export_poll_interval_s
        stuck_after = timedelta(seconds=self.settings.export_stuck_after_s)
        while True:
            try:
                status = await self._ksef.export_status(nip, reference, hints=self.hints(nip))
            except KsefError as exc:
                if exc.http_status == 410:  # status retention passed (7 days): the export is gone
                    await self._forget_export(nip, subject, "KSeF no longer knows it (410)")
                    raise ExportAbandoned(f"export {reference} is gone (410); the window is retried") from exc
                raise
            if status.code == EXPORT_DONE and status.package is not None:
                return status
            if status.code == EXPORT_BEYOND_HWM:
                return status
            if status.code != EXPORT_RUNNING:
                await self._forget_export(nip, subject, f"status {status.code}")
                raise ExportAbandoned(
                    f"export {reference} ended with status {status.code} ({status.description}); the window is retried"
                )
            waited = self._clock() - started_at
            if waited >= stuck_after:
                await self._forget_export(nip, subject, f"stuck at status 100 for {waited.total_seconds():.0f} s")
                raise ExportAbandoned(
                    f"export {reference} stuck at status 100 for {waited.total_seconds():.0f} s "
                    f"(watchdog {stuck_after.total_seconds():.0f} s); abandoned, the window is retried"
                )
            await self._sleep(min(interval, max(0.0, (stuck_after - waited).total_seconds())) or interval)
            interval = min(interval * 1.5, self.settings.export_poll_max_interval_s)

    # -- storing a window -----------------------------------------------------------------------------------------

    async def _store_window(
        self,
        nip: str,
        subject: SubjectType,
        window: Window,
        result: WindowResult,
        fetched: Sequence[_Fetched],
        report: RunReport,
    ) -> tuple[datetime, bool]:
        """Store the window's new invoices with their events and advance the checkpoint, all in one transaction."""
        now = self._clock()
        checkpoint = next_checkpoint(window, result)
        hold_at: datetime | None = None
        stored: list[str] = []
        rows: list[dict[str, Any]] = []
        envelopes: list[Envelope] = []
        trace = current_trace_context()
        async with self.sessions() as session, session.begin():
            already = await purchases.stored_numbers(session, nip, [f.ksef_number for f in fetched])
            fresh = set(dedupe([f.ksef_number for f in fetched], already))
            new_items = []
            for item in fetched:
                if item.ksef_number in fresh:
                    fresh.discard(item.ksef_number)  # a package listing a number twice stores it once
                    new_items.append(item)
            # Hashing and parsing a big window is CPU work of a second or more: off the event loop, so the API and
            # other clients' runs stay responsive (lxml releases the GIL while it parses).
            checked = await asyncio.to_thread(self._check_all, nip, subject, new_items, now, trace)
            for outcome in checked:
                item = outcome.item
                if outcome.row is None or outcome.envelope is None:
                    reason, detail = outcome.problem or ("malformed", "unreadable")
                    rejection = await purchases.record_rejection(
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
            await purchases.insert_invoices(session, rows)
            await self._outbox.add_many(session, envelopes, topic=InvoiceFetched.topic)
            await purchases.clear_rejections(session, nip, stored)
            values: dict[str, Any] = dict(_NO_EXPORT)
            if hold_at is not None:
                # Everything before the held invoice is complete; it and what follows are fetched again next run.
                checkpoint = max(min(checkpoint, hold_at), window.start)
                values["hwm"] = checkpoint
            elif result.permanent_storage_hwm is not None:
                values["hwm"] = result.permanent_storage_hwm
            await purchases.update_state(session, nip, subject, now, checkpoint=checkpoint, **values)
        report.stored += len(stored)
        more = has_more(window, result) and hold_at is None
        return checkpoint, more

    def _check_all(
        self, nip: str, subject: SubjectType, items: Sequence[_Fetched], now: datetime, trace: dict[str, str]
    ) -> list[_Checked]:
        """Each new invoice's hash check (once) and header parse, then its row and event; no database access."""
        checked = []
        for item in items:
            problem = self._check(item)
            if problem is None:
                try:
                    header = parse_invoice_header(item.xml)
                except InvoiceParseError as exc:
                    problem = ("malformed", str(exc))
                else:
                    row, envelope = self._new_invoice(nip, subject, item, header, now, trace)
                    checked.append(_Checked(item, row, envelope))
                    continue
            checked.append(_Checked(item, problem=problem))
        return checked

    def _check(self, item: _Fetched) -> tuple[str, str] | None:
        expected = item.metadata.get("invoiceHash")
        if not expected:
            return ("malformed", "KSeF gave no metadata (invoiceHash) for this invoice")
        actual = sha256_b64(item.xml)
        if actual != expected:
            return (
                "hash_mismatch",
                f"SHA-256 of the {len(item.xml)} downloaded bytes is {actual}, KSeF's invoiceHash is {expected}",
            )
        return None

    def _new_invoice(
        self,
        nip: str,
        subject: SubjectType,
        item: _Fetched,
        header: InvoiceHeader,
        now: datetime,
        trace: dict[str, str],
    ) -> tuple[dict[str, Any], Envelope]:
        """The stored row of one new invoice and its ``invoice.fetched`` envelope (sharing the event id)."""
        meta = item.metadata
        acquisition = parse_instant(meta.get("acquisitionDate")) or parse_instant(meta.get("invoicingDate")) or now
        permanent = parse_instant(meta.get("permanentStorageDate"))
        event_id = uuid.uuid4()
        row = purchases.invoice_row(
            nip=nip,
            ksef_number=item.ksef_number,
            subject=subject,
            header=header,
            xml=item.xml,
            invoice_hash=str(meta["invoiceHash"]),
            acquisition_date=acquisition,
            permanent_storage_date=permanent,
            invoicing_date=parse_instant(meta.get("invoicingDate")),
            fetched_at=now,
            fetched_via=item.via,
            event_id=event_id,
        )
        event = InvoiceFetched(
            ksef_number=item.ksef_number,
            client_nip=nip,
            subject_role=subject.value,
            seller=Party(nip=header.seller_nip, name=header.seller_name),
            buyer=Party(nip=header.buyer.value if header.buyer.type == "Nip" else None, name=header.buyer_name),
            p_1=header.issue_date,
            p_2=header.invoice_number,
            net_amount=header.net_amount,
            vat_amount=header.vat_amount,
            gross_amount=header.gross_amount,
            currency=header.currency,
            invoice_type=header.invoice_type,
            corrected_ksef_number=header.corrected_ksef_number,
            corrected_invoice_number=header.corrected_invoice_number,
            acquisition_date=acquisition,
            permanent_storage_date=permanent,
            invoice_hash=str(meta["invoiceHash"]),
            xml_ref=xml_ref(nip, item.ksef_number),
        )
        envelope = Envelope.wrap(
            event,
            producer=SERVICE_NAME,
            client_nip=nip,
            trace=trace,
            event_id=event_id,
        )
        return row, envelope

    # -- bookkeeping ------------------------------------------------------------------------------------------

    async def _reschedule(self, nip: str, subject: SubjectType, delay: timedelta, why: str) -> None:
        now = self._clock()
        async with self.sessions() as session, session.begin():
            await purchases.update_state(session, nip, subject, now, next_run_at=now + delay, last_error=why)

    async def _failed(self, nip: str, subject: SubjectType, failures: int, error: str) -> None:
        now = self._clock()
        log.warning("purchase sync %s %s failed (%d in a row): %s", nip, subject.value, failures, error)
        async with self.sessions() as session, session.begin():
            await purchases.update_state(
                session,
                nip,
                subject,
                now,
                next_run_at=next_run_after_failure(
                    now,
                    failures,
                    base=timedelta(seconds=self.settings.retry_base_s),
                    cap=timedelta(seconds=self.settings.retry_max_s),
                ),
                last_error=error[:2000],
                last_error_at=now,
                consecutive_failures=failures,
            )


_NO_EXPORT: dict[str, Any] = {
    "export_reference": None,
    "export_started_at": None,
    "export_window_start": None,
    "export_window_end": None,
    "export_key": None,
}


def xml_ref(nip: str, ksef_number: str) -> str:
    """Where an authorised caller gets the raw XML (relative to the gateway's base URL)."""
    return f"/clients/{nip}/invoices/{ksef_number}/xml"


# --- the scheduler ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncTarget:
    """A client the vault holds a working credential for, with the subject types to sync."""

    client_nip: str
    subjects: tuple[SubjectType, ...]


class TargetSource(Protocol):
    async def targets(self) -> list[SyncTarget]:
        """The clients to sync whose context this replica holds."""


class SyncScheduler:
    """Runs due (client, subject) pairs, nearest month-close deadline first, at most ``max_concurrency`` at once."""

    def __init__(self, engine: SyncEngine, source: TargetSource, settings: SyncSettings, *, clock: Clock = _utcnow):
        self.engine = engine
        self._source = source
        self.settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: dict[tuple[str, SubjectType], asyncio.Task[RunReport]] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        if isinstance(source, LeasedVaultTargets):
            source.is_busy = self.is_busy  # a context is handed to another replica only between its runs

    async def start(self) -> None:
        if self.settings.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="purchase-sync-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        running = list(self._running.values())
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._running.clear()

    def wake(self) -> None:
        """Look for due work now (a "fetch now" request, a new credential)."""
        self._wake.set()

    async def credential_changed(self, nip: str) -> None:
        """A credential was added, replaced or removed: the set of clients to sync may have changed."""
        self.wake()

    def is_running(self, nip: str, subject: SubjectType) -> bool:
        return (nip, subject) in self._running

    def is_busy(self, nip: str) -> bool:
        """A run of any of the client's subjects is in flight (an export included: it runs inside the run)."""
        return any(running_nip == nip for running_nip, _ in self._running)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purchase sync scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.tick_interval_s)
            self._wake.clear()

    async def tick(self) -> list[asyncio.Task[RunReport]]:
        """Start every due subject that is not running yet; returns the tasks started (tests may await them)."""
        now = self._clock()
        targets = await self._source.targets()
        if not targets:
            return []
        pairs = [(t.client_nip, s) for t in targets for s in t.subjects]
        wanted = set(pairs)
        nips = sorted({t.client_nip for t in targets})
        async with self.engine.sessions() as session, session.begin():
            await purchases.ensure_states(session, pairs, now)
            clients = await purchases.load_clients(session, nips)
            states = await purchases.due_states(session, nips, now)
        due = [
            DueSubject(
                state.client_nip,
                state.subject_type,
                state.next_run_at,
                self.engine.resolve(clients.get(state.client_nip)).month_close_day,
            )
            for state in states
            if (state.client_nip, state.subject_type) in wanted
            and (state.client_nip, state.subject_type) not in self._running
        ]
        started = []
        for item in order_due(due, now):
            key = (item.client_nip, item.subject_type)
            task = asyncio.create_task(self._run(key), name=f"purchase-sync:{key[0]}:{key[1].value}")
            self._running[key] = task
            started.append(task)
        return started

    async def _run(self, key: tuple[str, SubjectType]) -> RunReport:
        try:
            async with self._slots:
                return await self.engine.run(*key)
        finally:
            self._running.pop(key, None)


# --- adapters over the other areas ------------------------------------------------------------------------------


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

    async def download_export_package(
        self, nip: str, handle: ExportHandle, status: ExportStatus, *, hints: BudgetHints = NO_HINTS
    ) -> ExportedPackage:
        client = await self._sessions.client_for(nip, priority=hints.priority, max_wait_s=hints.max_wait_s)
        return await client.download_export_package(
            handle, status, priority=hints.priority, max_wait_s=hints.max_wait_s
        )


class LeasedVaultTargets:
    """The vault's active contexts whose lease this replica holds, after moving it towards its fair share of them
    (``ContextLeases.balance``): each tick it takes free contexts while under the share and hands surplus over while
    above it, never a context with a run in flight (``is_busy``; the scheduler sets it to its own running runs)."""

    def __init__(self, vault: Vault, leases: ContextLeases | None) -> None:
        self._vault = vault
        self._leases = leases
        self.is_busy: Callable[[str], bool] = lambda nip: False

    async def targets(self) -> list[SyncTarget]:
        active = await self._vault.active_contexts()
        held = (
            await self._leases.balance([c.nip for c in active], busy=self.is_busy) if self._leases is not None else None
        )
        found = []
        for context in active:
            if held is not None and context.nip not in held:
                continue  # another replica drives this context
            subjects = enabled_subjects(
                {SubjectType.SUBJECT3: context.subject3, SubjectType.SUBJECT_AUTHORIZED: context.subject_authorized}
            )
            found.append(SyncTarget(context.nip, tuple(subjects)))
        return found


# --- "fetch now" ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchNowQueued:
    requested_at: datetime
    runs_at: dict[SubjectType, datetime]


async def request_fetch_now(
    session: AsyncSession,
    nip: str,
    *,
    subjects: Sequence[SubjectType],
    settings: SyncSettings,
    requested_by: str,
    now: datetime,
) -> FetchNowQueued:
    """Queue a run of every subject of ``nip``: as soon as the minimum poll interval since its last run allows (or at
    once with the operator override). The rate-limit budget still applies when it runs."""
    await purchases.upsert_client(session, nip, now, fetch_requested_at=now, fetch_requested_by=requested_by[:200])
    await purchases.ensure_states(session, [(nip, s) for s in subjects], now)
    policy = SyncPolicy(min_poll_interval=timedelta(seconds=settings.min_poll_interval_s))
    runs_at: dict[SubjectType, datetime] = {}
    for state in await purchases.load_states(session, nip):
        if state.subject_type not in subjects:
            continue
        earliest = earliest_fetch_now(now, state.last_run_at, policy, override=settings.fetch_now_ignores_min_interval)
        when = earliest if state.next_run_at is None else min(state.next_run_at, earliest)
        if state.next_run_at is None or when < state.next_run_at:
            await purchases.update_state(session, nip, state.subject_type, now, next_run_at=when)
        runs_at[state.subject_type] = max(when, now)
    return FetchNowQueued(now, runs_at)
