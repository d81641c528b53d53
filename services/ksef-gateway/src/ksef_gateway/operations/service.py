"""Use cases of the operators' overview: a page of the clients the gateway knows, one client, the hourly KSeF calls.

Nothing here has a table of its own: every figure comes from the capability that owns it, through its service
(the sync's status as ``GET /clients/{nip}/sync`` shows it, the sales backlog, the communication log's counts, the
budget, the sessions, the context leases, KSeF's availability). What lives in memory (budget, KSeF sessions) is this
replica's view: it is complete for the contexts whose lease this replica holds (``held_by_this_replica``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ksef_gateway.budget.service import Budget, EndpointGroup, RateBudget
from ksef_gateway.communication.service import CommunicationLog, HourOfCalls
from ksef_gateway.delegation.service import Delegation
from ksef_gateway.ksef import OnlineSession
from ksef_gateway.operations.domain import (
    STUCK_AFTER,
    HourBudget,
    LastSync,
    hour_budget,
    last_sync,
    max_lag,
    merge_pages,
)
from ksef_gateway.outages.service import Availability
from ksef_gateway.ownership.service import ContextLeases
from ksef_gateway.sales.service import SalesBacklog, SalesInvoices
from ksef_gateway.sessions.service import OnlineSessions, SessionManager
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.sync.service import SyncService, SyncStatus
from ksef_gateway.vault.service import Vault
from platform_common.auth.clock import Clock, system_clock

# The groups KSeF counts per context (public calls are counted per IP, pre-signed part URLs not at all).
CONTEXT_GROUPS = tuple(g for g in EndpointGroup if g not in (EndpointGroup.PUBLIC, EndpointGroup.UNLIMITED))
_EMPTY_SALES = SalesBacklog({}, 0, None, 0, None, 0)


class UnknownClient(Exception):
    """No capability of the gateway knows the NIP."""


@dataclass(frozen=True)
class SubjectOverview:
    subject_type: SubjectType
    enabled: bool
    last_run_at: datetime | None
    last_sync: LastSync
    last_error: str | None
    consecutive_failures: int
    hwm: datetime | None
    lag: timedelta | None
    next_run_at: datetime | None


@dataclass(frozen=True)
class ExportOverview:
    subject_type: SubjectType
    reference_number: str
    started_at: datetime | None


@dataclass(frozen=True)
class OnlineSessionOverview:
    reference_number: str
    form_code: str
    valid_until: datetime


@dataclass(frozen=True)
class ClientOverview:
    client_nip: str
    held_by_this_replica: bool
    credential_active: bool
    subjects: list[SubjectOverview]
    max_lag: timedelta | None
    exports_in_flight: list[ExportOverview]
    ksef_calls_last_hour: int
    rate_limited_last_hour: int
    budget_this_hour: dict[str, HourBudget] | None  # None: the budget is off (nothing is limited)
    authenticated: bool
    online_sessions: list[OnlineSessionOverview]
    sales: SalesBacklog


@dataclass(frozen=True)
class OpenOutageOverview:
    kind: str
    source: str
    started_at: datetime
    message: str | None


@dataclass(frozen=True)
class KsefState:
    available: bool
    open_outages: list[OpenOutageOverview]


@dataclass(frozen=True)
class OverviewPage:
    as_of: datetime
    replica_id: str
    ksef: KsefState
    items: list[ClientOverview]
    next_cursor: str | None


@dataclass(frozen=True)
class ClientLevels:
    """What the gauges (``operations/gauges.py``) show of one client."""

    client_nip: str
    sync_lag: timedelta | None
    offline_queued: int
    offline_nearest_deadline: date | None
    stuck: int


# Clients read per query when the gauges are refreshed: an office's few hundred clients take a few pages.
LEVELS_PAGE = 500


class Operations:
    def __init__(
        self,
        *,
        replica_id: str,
        sync: SyncService,
        vault: Vault,
        delegation: Delegation,
        sales: SalesInvoices,
        communication_log: CommunicationLog,
        budget: Budget,
        sessions: SessionManager,
        online_sessions: OnlineSessions,
        leases: ContextLeases,
        availability: Availability,
        stuck_after: timedelta = STUCK_AFTER,
        clock: Clock = system_clock,
    ) -> None:
        self.replica_id = replica_id
        self._sync = sync
        self._vault = vault
        self._delegation = delegation
        self._sales = sales
        self._log = communication_log
        self._budget = budget
        self._sessions = sessions
        self._online = online_sessions
        self._leases = leases
        self._availability = availability
        self.stuck_after = stuck_after
        self.clock = clock

    async def page(self, *, after: str | None, limit: int) -> OverviewPage:
        """The clients known to any capability (a credential, delegated access, sync state, sales invoices), in NIP
        order after the cursor ``after``."""
        pages = [
            await self._vault.context_nips(after=after, limit=limit + 1),
            await self._delegation.client_nips(after=after, limit=limit + 1),
            await self._sync.known_nips(after=after, limit=limit + 1),
            await self._sales.client_nips(after=after, limit=limit + 1),
        ]
        nips, more = merge_pages(pages, limit)
        items = await self._overviews(nips)
        return OverviewPage(
            as_of=self.clock(),
            replica_id=self.replica_id,
            ksef=await self.ksef_state(),
            items=items,
            next_cursor=nips[-1] if more and nips else None,
        )

    async def levels(self) -> list[ClientLevels]:
        """Sync lag and sales backlog of every client the sync or the sales know (scraped as gauges)."""
        found: list[ClientLevels] = []
        after: str | None = None
        while True:
            pages = [
                await self._sync.known_nips(after=after, limit=LEVELS_PAGE + 1),
                await self._sales.client_nips(after=after, limit=LEVELS_PAGE + 1),
            ]
            nips, more = merge_pages(pages, LEVELS_PAGE)
            if not nips:
                return found
            statuses = await self._sync.statuses(nips)
            sales = await self._sales.backlogs(nips, stuck_after=self.stuck_after)
            for nip in nips:
                status = statuses.get(nip)
                backlog = sales.get(nip, _EMPTY_SALES)
                found.append(
                    ClientLevels(
                        client_nip=nip,
                        sync_lag=max_lag(s.lag for s in status.subjects if s.enabled) if status else None,
                        offline_queued=backlog.offline_queued,
                        offline_nearest_deadline=backlog.offline_nearest_deadline,
                        stuck=backlog.stuck,
                    )
                )
            if not more:
                return found
            after = nips[-1]

    async def client(self, nip: str) -> tuple[ClientOverview, KsefState]:
        (overview,) = await self._overviews([nip])
        known = (
            await self._sync.is_known(nip)
            or await self._delegation.access(nip) is not None
            or bool(overview.sales.by_status)
        )
        if not known:
            raise UnknownClient(nip)
        return overview, await self.ksef_state()

    async def ksef_calls(self, hours: int, *, context_nip: str | None) -> list[HourOfCalls]:
        return await self._log.hourly(hours, context_nip=context_nip)

    async def ksef_state(self) -> KsefState:
        # The stored outages, not this replica's cache: GET /ksef/availability answers from the same rows.
        open_ = [o for o in await self._availability.recent(days=1) if o["ended_at"] is None]
        return KsefState(
            available=not open_,
            open_outages=[
                OpenOutageOverview(
                    kind=str(o["kind"]),
                    source=str(o["source"]),
                    started_at=o["started_at"],  # type: ignore[arg-type]
                    message=o["message"],  # type: ignore[arg-type]
                )
                for o in open_
            ],
        )

    async def _overviews(self, nips: list[str]) -> list[ClientOverview]:
        if not nips:
            return []
        now = self.clock()
        statuses = await self._sync.statuses(nips)
        calls = await self._log.call_counts(nips, since=now - timedelta(hours=1))
        sales = await self._sales.backlogs(nips, stuck_after=self.stuck_after)
        online = self._online.open_sessions()
        return [
            self._overview(nip, statuses.get(nip), calls.get(nip, (0, 0)), sales.get(nip, _EMPTY_SALES), online)
            for nip in nips
        ]

    def _overview(
        self,
        nip: str,
        status: SyncStatus | None,
        calls: tuple[int, int],
        sales: SalesBacklog,
        online: list[OnlineSession],
    ) -> ClientOverview:
        subjects: list[SubjectOverview] = []
        exports: list[ExportOverview] = []
        for item in status.subjects if status is not None else []:
            state = item.state
            subjects.append(
                SubjectOverview(
                    subject_type=item.subject_type,
                    enabled=item.enabled,
                    last_run_at=state.last_run_at if state else None,
                    last_sync=last_sync(
                        running=item.running,
                        last_run_at=state.last_run_at if state else None,
                        last_success_at=state.last_success_at if state else None,
                        last_error=state.last_error if state else None,
                        last_error_at=state.last_error_at if state else None,
                        consecutive_failures=state.consecutive_failures if state else 0,
                    ),
                    last_error=state.last_error if state else None,
                    consecutive_failures=state.consecutive_failures if state else 0,
                    hwm=state.hwm if state else None,
                    lag=item.lag,
                    next_run_at=state.next_run_at if state else None,
                )
            )
            if state is not None and state.export_reference is not None:
                exports.append(ExportOverview(item.subject_type, state.export_reference, state.export_started_at))
        return ClientOverview(
            client_nip=nip,
            held_by_this_replica=self._leases.holds(nip),
            credential_active=status.credential_active if status is not None else False,
            subjects=subjects,
            max_lag=max_lag(s.lag for s in subjects),
            exports_in_flight=exports,
            ksef_calls_last_hour=calls[0],
            rate_limited_last_hour=calls[1],
            budget_this_hour=self._hour_budget(nip),
            authenticated=self._sessions.environment_of(nip) is not None,
            online_sessions=[
                OnlineSessionOverview(s.reference_number, s.form_code.system_code, s.valid_until)
                for s in online
                if s.context_nip == nip
            ],
            sales=sales,
        )

    def _hour_budget(self, nip: str) -> dict[str, HourBudget] | None:
        if not isinstance(self._budget, RateBudget):
            return None
        left = {group.value: hour_budget(self._budget.remaining(nip, group)) for group in CONTEXT_GROUPS}
        limited = {group: budget for group, budget in left.items() if budget is not None}
        return limited or None
