"""The gateway's composition root: the long-lived parts every use case shares, one set per runtime.

One shared ``httpx.AsyncClient`` for all KSeF traffic (connection reuse, our own retries and tracing), one
rate-limit budget per process (KSeF counts per context and IP, and a context has one owner at a time),
the session manager, the credential vault and the sync scheduler. ``Gateway.of(runtime)`` returns the
instance the runtime started; API dependencies and consumers reach everything through it.
"""

from __future__ import annotations

import weakref
from datetime import timedelta

import httpx
from cryptography import x509

from ksef_gateway.budget.service import Budget, RateBudget
from ksef_gateway.communication.service import CommunicationLog
from ksef_gateway.delegation.checker import DelegationChecker
from ksef_gateway.delegation.service import DelegatingCredentials, Delegation, SyncContexts
from ksef_gateway.ksef import KsefClients
from ksef_gateway.ksef.client import GATEWAY_PRODUCT
from ksef_gateway.ksef.environments import Environment, base_url
from ksef_gateway.operations.gauges import register_gauges
from ksef_gateway.operations.service import Operations
from ksef_gateway.outages.latarnia import HttpLatarnia, latarnia_url
from ksef_gateway.outages.monitor import AvailabilityMonitor
from ksef_gateway.outages.service import Availability
from ksef_gateway.ownership.service import ContextLeases
from ksef_gateway.purchases.service import Invoices
from ksef_gateway.sales.domain import PollSchedule
from ksef_gateway.sales.ksef import GatewaySendingKsef
from ksef_gateway.sales.periodic import SalesPeriodic
from ksef_gateway.sales.qr import qr_base_url
from ksef_gateway.sales.sender import SalesSender
from ksef_gateway.sales.service import SalesInvoices
from ksef_gateway.sales.upo import load_trust_anchors
from ksef_gateway.sessions.service import OnlineSessions, SessionManager
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.sync.engine import SyncEngine
from ksef_gateway.sync.ksef import GatewayKsef
from ksef_gateway.sync.scheduler import LeasedVaultTargets, SyncScheduler
from ksef_gateway.sync.service import SyncService
from ksef_gateway.vault.keys import load_keyring
from ksef_gateway.vault.offline import OfflineCertificates
from ksef_gateway.vault.service import Vault
from platform_common.runtime import ServiceRuntime

_INSTANCES: weakref.WeakKeyDictionary[ServiceRuntime, Gateway] = weakref.WeakKeyDictionary()


class Gateway:
    def __init__(self, runtime: ServiceRuntime) -> None:
        assert isinstance(runtime.settings, GatewaySettings)
        self.runtime = runtime
        self.settings: GatewaySettings = runtime.settings
        # Each area adds its parts here (KSeF clients and sessions, budget, vault, sync scheduler) and starts
        # and stops them below, in dependency order.
        ksef, http = self.settings.ksef, self.settings.http
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(http.read_timeout_s, connect=http.connect_timeout_s),
            limits=httpx.Limits(
                max_connections=http.max_connections, max_keepalive_connections=http.max_keepalive_connections
            ),
            headers={"User-Agent": f"{GATEWAY_PRODUCT} (replica {ksef.replica_id})"},
        )
        self.budget: Budget = RateBudget(self.settings.budget)
        self.communication_log = CommunicationLog(runtime.db, ksef.replica_id)
        self.ksef = KsefClients(
            self.http,
            settings=ksef,
            budget=self.budget,
            tracer=runtime.telemetry.tracer("ksef_hub.ksef-gateway.ksef"),
            observer=self.communication_log,
            meter=runtime.telemetry.meter_provider.get_meter("ksef_hub.ksef-gateway.ksef"),
        )
        self.leases = ContextLeases(
            runtime.db, ksef.replica_id, ttl_s=ksef.lease_ttl_s, renew_interval_s=ksef.lease_renew_interval_s
        )
        keyring = load_keyring(
            self.settings.vault, environment=self.settings.environment, data_dir=self.settings.data_dir
        )
        self.vault = Vault(
            runtime.db, keyring, self.ksef, settings=self.settings.vault, default_environment=ksef.environment
        )
        # Delegated access: the office's certificate in a client's context after the client's grant in KSeF; the
        # session manager asks it first and falls back to the client's own credential in the vault.
        self.delegation = Delegation(
            runtime.db,
            runtime.outbox,
            keyring,
            self.ksef,
            self.leases,
            self.settings.delegation,
            default_environment=ksef.environment,
            validation_timeout_s=self.settings.vault.validation_timeout_s,
        )
        self.delegation_checker = DelegationChecker(self.delegation)
        self.sessions = SessionManager(
            self.ksef,
            DelegatingCredentials(self.vault, self.delegation),
            self.leases,
            refresh_margin_s=ksef.refresh_margin_s,
        )
        self.sessions.on_refused(self.delegation.refused)
        self.delegation.on_access_changed(self.sessions.invalidate)
        self.vault.on_credential_changed(self.sessions.invalidate)
        self.online_sessions = OnlineSessions(
            self.sessions, idle_s=ksef.online_session_idle_s, sweep_interval_s=ksef.online_session_sweep_interval_s
        )
        # Purchase sync: the engine stores invoices with their invoice.fetched events; the scheduler runs it for the
        # vault's clients whose context this replica leases.
        self.sync_engine = SyncEngine(
            runtime.db.sessionmaker,
            runtime.outbox,
            GatewayKsef(self.sessions),
            self.settings.sync,
            tracer=runtime.telemetry.tracer("ksef_hub.ksef-gateway.sync"),
        )
        self.sync = SyncScheduler(
            self.sync_engine,
            LeasedVaultTargets(SyncContexts(self.vault, self.delegation), self.leases),
            self.settings.sync,
        )
        self.vault.on_credential_changed(self.sync.credential_changed)
        self.delegation.on_access_changed(self.sync.credential_changed)
        self.sync_service = SyncService(self.sync_engine, self.sync, self.vault, self.budget)
        self.invoices = Invoices(runtime.db.sessionmaker, self.sync_service.is_known)
        # Sales: submissions are stored queued and wake the sender, which sends for the contexts leased here.
        # KSeF availability: Latarnia and our probes record outages; submissions made while KSeF is down are
        # issued offline, and the sender waits for the end.
        outages = self.settings.outages
        self.availability = Availability(
            runtime.db,
            runtime.outbox,
            probe=self._probe_ksef,
            threshold=outages.failure_threshold,
            breaker_cooldown_s=self.settings.budget.circuit_cooldown_s,
        )
        self.availability_monitor = AvailabilityMonitor(
            self.availability,
            HttpLatarnia(latarnia_url(ksef.environment, ksef.sim_base_url), self.http) if outages.latarnia else None,
            interval_s=outages.check_interval_s,
        )
        sales = self.settings.sales
        self._upo_anchors: list[x509.Certificate] | None = None
        self.offline_certificates = OfflineCertificates(runtime.db, keyring)
        self.sales = SalesInvoices(
            runtime.db,
            runtime.outbox,
            self.offline_certificates,
            self.availability,
            qr_base=qr_base_url(ksef.environment, sales.sim_qr_base_url),
        )
        self.availability.on_change(self.sales.queued.set)
        self.sales_periodic = SalesPeriodic(
            self.sales,
            warn_before=timedelta(hours=sales.deadline_warn_before_h),
            interval_s=sales.deadline_check_interval_s,
        )
        self.sales_sender = SalesSender(
            runtime.db,
            runtime.outbox,
            GatewaySendingKsef(self.sessions, self.online_sessions),
            holds=self.leases.holds,
            wake=self.sales.queued,
            paused=lambda: self.availability.down,
            report=self.availability.report,
            upo_trust=self._upo_trust,
            tick_s=sales.tick_interval_s,
            max_contexts=sales.max_contexts,
            # SQLite takes one writer at a time: parallel steps of one context would only queue on its lock.
            per_context=sales.per_context if runtime.db.engine.dialect.name != "sqlite" else 1,
            poll=PollSchedule(first_s=sales.poll_first_s, max_s=sales.poll_max_s),
            batch_threshold=sales.batch_threshold,
        )

        # The operators' overview reads every capability above through its service; it starts nothing itself.
        self.operations = Operations(
            replica_id=ksef.replica_id,
            sync=self.sync_service,
            vault=self.vault,
            delegation=self.delegation,
            sales=self.sales,
            communication_log=self.communication_log,
            budget=self.budget,
            sessions=self.sessions,
            online_sessions=self.online_sessions,
            leases=self.leases,
            availability=self.availability,
        )
        register_gauges(runtime.gauges, self.operations)

    async def start(self) -> None:
        ksef = self.settings.ksef
        await self.leases.start()
        await self.communication_log.start(
            retention=timedelta(days=ksef.communication_log_retention_days),
            interval_s=ksef.communication_log_purge_interval_s,
        )
        await self.vault.start()
        await self.online_sessions.start()
        if self.settings.delegation.enabled:
            await self.delegation_checker.start()
        await self.sync.start()
        if self.settings.outages.enabled:
            await self.availability_monitor.start()
        if self.settings.sales.enabled:
            await self.sales_sender.start()
            await self.sales_periodic.start()

    async def stop(self) -> None:
        # Reverse order: online sessions close through live tokens, leases are released for the peers, and the
        # shared HTTP client goes last.
        await self.sales_periodic.stop()
        await self.sales_sender.stop()
        await self.availability_monitor.stop()
        await self.sync.stop()
        await self.delegation_checker.stop()
        await self.online_sessions.stop()
        await self.sessions.close()
        await self.vault.stop()
        await self.leases.stop()
        await self.communication_log.stop()
        if isinstance(self.budget, RateBudget):
            await self.budget.aclose()  # its wake-up timers; nothing takes a slot any more
        await self.http.aclose()

    async def _upo_trust(self) -> list[x509.Certificate]:
        """The UPO trust anchors: configured, or for the simulator its published CA (read once it answers)."""
        if self._upo_anchors is None:
            ksef = self.settings.ksef
            if ksef.upo_trust_anchors_pem:
                self._upo_anchors = load_trust_anchors(ksef.upo_trust_anchors_pem.encode())
            elif ksef.environment is Environment.SIM:
                root = latarnia_url(Environment.SIM, ksef.sim_base_url)
                try:
                    response = await self.http.get(f"{root}/_sim/trust/upo-ca.pem", timeout=10.0)
                except httpx.HTTPError:
                    return []
                if response.status_code != 200:
                    return []
                self._upo_anchors = load_trust_anchors(response.content)
            else:
                self._upo_anchors = []
        return self._upo_anchors

    async def _probe_ksef(self) -> bool:
        """Does KSeF answer? Its public-key list is public and cheap; any answer below 500 means it is up."""
        ksef = self.settings.ksef
        url = f"{base_url(ksef.environment, ksef.sim_base_url)}/security/public-key-certificates"
        try:
            response = await self.http.get(url, timeout=10.0)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Gateway:
        gateway = _INSTANCES.get(runtime)
        if gateway is None:
            gateway = _INSTANCES[runtime] = cls(runtime)
        return gateway
