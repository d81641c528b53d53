from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from ksef_gateway.budget.domain import PRODUCTION_LIMITS, Limits, limit_table
from ksef_gateway.ksef.environments import Environment
from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "ksef-gateway"
SCHEMA = "gateway"


def _default_replica_id() -> str:
    # A pod's host name is unique in its deployment; the pid separates several gateways on one machine.
    return f"{socket.gethostname()}-{os.getpid()}"


class KsefSettings(BaseModel):
    """KSeF environments, the HTTP client, sessions and context ownership (``GATEWAY_KSEF__*``)."""

    # The environment new credentials use unless they name one; the embedded mode talks to its simulator.
    environment: Environment = Environment.SIM
    sim_base_url: str = "http://127.0.0.1:8000/ksef-sim/v2"
    # The CA certificates (PEM) a UPO's XAdES signature must chain to; a UPO that does not verify is not stored as
    # a receipt. Unset for the simulator: its CA is read from the simulator (GET /_sim/trust/upo-ca.pem). The
    # official environments need the Ministry's UPO signing CA here.
    upo_trust_anchors_pem: str | None = None
    # Names this replica in context leases and in the User-Agent KSeF sees (both must differ per replica).
    replica_id: str = Field(default_factory=_default_replica_id, min_length=1, max_length=200)

    # Retries of idempotent calls on 5xx and transport errors, with full-jitter exponential backoff.
    max_retries: int = Field(default=3, ge=0)
    retry_initial_backoff_s: float = Field(default=0.5, ge=0)
    retry_max_backoff_s: float = Field(default=8.0, ge=0)
    # The Ministry's public-key certificates are re-read this often (and at once after error 21470).
    public_keys_ttl_s: float = Field(default=6 * 3600, gt=0)

    # Authentication: GET /auth/{ref} may stay at 100 while DEMO/PROD check OCSP/CRL (REFERENCE.md §3.5).
    auth_poll_interval_s: float = Field(default=0.5, gt=0)
    auth_poll_max_interval_s: float = Field(default=3.0, gt=0)
    auth_timeout_s: float = Field(default=120.0, gt=0)
    # An access token (~15 min) is refreshed this long before it expires; the refresh token (7 days) too.
    refresh_margin_s: float = Field(default=120.0, ge=0)

    # Online sessions (12 h on KSeF) are reused per (context, form) and closed after this much idleness.
    online_session_idle_s: float = Field(default=600.0, gt=0)
    online_session_sweep_interval_s: float = Field(default=30.0, gt=0)

    # Context ownership: a lease per NIP, renewed every renew interval, lost when not renewed for the TTL.
    lease_ttl_s: float = Field(default=60.0, gt=0)
    lease_renew_interval_s: float = Field(default=20.0, gt=0)

    communication_log_retention_days: float = Field(default=90.0, gt=0)
    communication_log_purge_interval_s: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> KsefSettings:
        if self.lease_renew_interval_s >= self.lease_ttl_s:
            raise ValueError(
                "lease_renew_interval_s must be shorter than lease_ttl_s, or leases lapse between renewals"
            )
        return self


class VaultSettings(BaseModel):
    """The credential vault: master keys and rotation (``GATEWAY_VAULT__*``).

    ``GATEWAY_VAULT__MASTER_KEYS='{"2026-12": "<base64 of 32 random bytes>"}'`` and
    ``GATEWAY_VAULT__ACTIVE_KEY_ID=2026-12``. To rotate: add a new key, make it active, keep the old one, run
    ``POST /ops/vault/rotate``, and remove the old key once ``GET /ops/vault`` shows no credential uses it.
    Or ``GATEWAY_VAULT__MASTER_KEYS_FILE=/run/secrets/vault-keys.json``: a mounted file holding the same JSON map,
    readable by its owner only. Without configured keys (never in production) a key is generated into
    ``<data_dir>/<key_file>`` (0600). Precedence and file checks: ``ksef_gateway.vault.keys``.
    """

    master_keys: dict[str, SecretStr] = {}
    master_keys_file: Path | None = None
    # May be left out when exactly one key is configured.
    active_key_id: str | None = None
    key_file: str = "ksef-gateway-vault-keys.json"
    # A credential under validation gets this long to authenticate in KSeF before the setup answers 503.
    validation_timeout_s: float = Field(default=150.0, gt=0)

    @model_validator(mode="after")
    def _active_key_is_configured(self) -> VaultSettings:
        if self.master_keys:
            if self.active_key_id is None and len(self.master_keys) > 1:
                raise ValueError("several master keys are configured: set GATEWAY_VAULT__ACTIVE_KEY_ID")
            if self.active_key_id is not None and self.active_key_id not in self.master_keys:
                raise ValueError("GATEWAY_VAULT__ACTIVE_KEY_ID names a key that GATEWAY_VAULT__MASTER_KEYS lacks")
            if self.master_keys_file is not None:
                raise ValueError("set GATEWAY_VAULT__MASTER_KEYS or GATEWAY_VAULT__MASTER_KEYS_FILE, not both")
        elif self.active_key_id is not None and self.master_keys_file is None:
            raise ValueError("GATEWAY_VAULT__ACTIVE_KEY_ID is set but GATEWAY_VAULT__MASTER_KEYS is empty")
        return self


class GroupLimits(BaseModel):
    """Requests allowed per 1 s / 60 s / 60 min for one endpoint group (KSeF's numbers, before the margin)."""

    per_second: int = Field(ge=0)
    per_minute: int = Field(ge=0)
    per_hour: int = Field(ge=0)


class BudgetSettings(BaseModel):
    """Rate-limit budget per (context, endpoint group) and the circuit breaker (``GATEWAY_BUDGET__*``).

    See ``ksef_gateway.budget.service`` for how the pieces work together.
    """

    mode: Literal["production", "custom", "off"] = Field(
        "production",
        description="`production`: KSeF's published limits (REFERENCE.md §13). `custom`: those with `limits` on "
        "top (e.g. what `POST /testdata/rate-limits` set on TEST). `off`: nothing is limited or delayed "
        "(benchmarks against a simulator with limits off); the circuit breaker is off too.",
    )
    limits: dict[str, GroupLimits] = Field(
        default_factory=dict,
        description="Per-group overrides for `custom` mode, keyed by the `GET /rate-limits` group name "
        '(e.g. `{"invoiceMetadata": {"per_second": 2, "per_minute": 4, "per_hour": 20}}`).',
    )
    restart_quiet_s: float = Field(
        1.0,
        ge=0.0,
        description="A new budget (a start or restart) admits no call for this long: calls of the previous life it "
        "cannot see may still fill KSeF's 1 s windows.",
    )
    usable_fraction: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Share of each KSeF window the gateway uses (floor, at least 1). The rest is headroom for "
        "other software using the same context and IP, and for KSeF's own counting quirks.",
    )
    max_in_flight: int = Field(
        8, ge=1, description="Calls in flight at once per KSeF environment, shared fairly across contexts."
    )
    priority_band_s: float = Field(
        3600.0,
        ge=0.0,
        description="Callers pass seconds to their month-close deadline as priority; deadlines within the same "
        "band count as equal so round-robin across contexts decides between them. 0 = strict order.",
    )
    backoff_base_s: float = Field(
        1.0, gt=0.0, description="First delay after a 429 without Retry-After, and the 5xx full-jitter base."
    )
    backoff_max_s: float = Field(60.0, gt=0.0, description="Cap of the exponential backoffs.")
    circuit_failure_threshold: int = Field(
        5, ge=1, description="Consecutive failures (5xx, 503 outage, transport error) that open the circuit."
    )
    circuit_cooldown_s: float = Field(
        30.0, gt=0.0, description="How long an open circuit fails calls fast before letting one probe through."
    )

    @field_validator("limits")
    @classmethod
    def _known_groups(cls, value: dict[str, GroupLimits]) -> dict[str, GroupLimits]:
        unknown = set(value) - set(PRODUCTION_LIMITS)
        if unknown:
            raise ValueError(
                f"unknown endpoint groups {sorted(unknown)}; known: {', '.join(sorted(PRODUCTION_LIMITS))}"
            )
        return value

    def limit_table(self) -> dict[str, Limits] | None:
        """The usable limits per group (``None`` in ``off`` mode)."""
        overrides = {g: Limits(v.per_second, v.per_minute, v.per_hour) for g, v in self.limits.items()}
        return limit_table(self.mode, overrides, self.usable_fraction)


class SyncSettings(BaseModel):
    """Purchase-invoice sync: cadence, backfill, watchdog (``GATEWAY_SYNC__*``). Rules in ``sync/domain.py``."""

    enabled: bool = Field(default=True, description="Run the sync scheduler in this process.")
    backfill_months: int = Field(
        default=3, ge=0, le=120, description="How far back a client's first sync reaches (settable per client)."
    )
    min_poll_interval_s: float = Field(
        default=900.0,
        ge=0,
        description="A subject type is polled at most this often (KSeF's PROD guidance: 15 minutes, REFERENCE.md §9).",
    )
    fetch_now_ignores_min_interval: bool = Field(
        default=False,
        description="Operator override: `fetch now` runs at once instead of waiting for the minimum poll interval. "
        "KSeF's rate limits still apply through the budget. Meant for the simulator and TEST.",
    )
    small_delta_max_invoices: int = Field(
        default=10, ge=0, description="Up to this many new invoices are fetched by metadata query + download."
    )
    small_delta_max_gap_s: float = Field(
        default=7200.0, ge=0, description="A checkpoint older than this is always synced by export."
    )
    default_month_close_day: int = Field(default=20, ge=1, le=31)
    tick_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest the scheduler sleeps between looks for due work. Not what starts runs: a new credential "
        "and `fetch now` wake it at once, and it sleeps only until the next known due time; this fallback notices "
        "what no event announces (contexts handed over by another replica, lease balancing).",
    )
    max_concurrency: int = Field(
        default=64,
        ge=1,
        description="Subjects synced at once by this replica (across contexts; one run per subject at a time). Not "
        "the throttle: KSeF calls are paced by the rate budget (per-context windows, `budget.max_in_flight` calls "
        "per environment, round-robin across contexts, `budget_max_wait_s`) and database work by its pool "
        "(`db.pool_size` + `db.max_overflow`; no connection is held while a run waits for KSeF or parses). What "
        "it bounds is memory: a run holds one window's package (an export of up to 10 000 invoices) at a time.",
    )
    budget_max_wait_s: float = Field(
        default=5.0, ge=0, description="Longest a sync waits for a rate-limit slot before moving to another client."
    )
    export_poll_interval_s: float = Field(
        default=0.05,
        gt=0,
        description="First wait before asking again about an export at status 100; it doubles per poll up to "
        "`export_poll_max_interval_s`. A `Retry-After` on the status answer (or its 429) replaces it.",
    )
    export_poll_max_interval_s: float = Field(default=15.0, gt=0, description="Cap of the export status waits.")
    export_stuck_after_s: float = Field(
        default=1800.0,
        gt=0,
        description="Watchdog: an export still at status 100 after this long is abandoned and its window retried.",
    )
    retry_base_s: float = Field(default=60.0, gt=0, description="First delay after a failed run (then doubling).")
    retry_max_s: float = Field(default=3600.0, gt=0)
    hash_mismatch_retries: int = Field(
        default=3,
        ge=1,
        description="Runs that re-fetch an invoice whose bytes do not match KSeF's hash before it is given up "
        "(kept in the rejection list) and the checkpoint moves past it.",
    )


class DelegationSettings(BaseModel):
    """KSeF access by delegation: the office's certificate used in a client's context after the client's grant."""

    enabled: bool = Field(default=True, description="Run the delegated-access checker in this process.")
    check_interval_s: float = Field(
        default=900.0,
        gt=0,
        description="How often a delegated client's grant is re-checked in KSeF (a fresh authentication with the "
        "office's certificate in the client's context; it counts against that context's budget).",
    )
    retry_after_s: float = Field(
        default=60.0, gt=0, description="Next try after a check KSeF could not answer (outage, 429, budget)."
    )


class SalesSettings(BaseModel):
    """Sales invoices sent to KSeF (``GATEWAY_SALES__*``). Rules in ``sales/domain.py``."""

    enabled: bool = Field(default=True, description="Run the sales sender in this process.")
    tick_interval_s: float = Field(
        default=1.0, gt=0, description="The sender looks for work at least this often (a submission wakes it at once)."
    )
    max_contexts: int = Field(default=16, ge=1, description="Client contexts sent for at the same time.")
    per_context: int = Field(
        default=4, ge=1, le=32, description="Sends (and status looks) in flight at once within one client context."
    )
    poll_first_s: float = Field(default=0.2, gt=0, description="First look at an invoice's status after sending.")
    poll_max_s: float = Field(default=10.0, gt=0, description="Longest pause between two looks at one invoice.")
    batch_threshold: int = Field(
        default=100,
        ge=2,
        description="A client context with at least this many queued invoices due at once sends them in a KSeF batch "
        "session (REFERENCE.md §5) instead of one by one through its online session (sales/batch.py).",
    )
    deadline_warn_before_h: float = Field(
        default=24.0, ge=0, description="An offline invoice's deadline alert fires this long before its last day ends."
    )
    deadline_check_interval_s: float = Field(
        default=60.0, gt=0, description="How often offline deadlines are recomputed and their alerts looked for."
    )
    sim_qr_base_url: str = Field(
        default="https://qr-test.ksef.mf.gov.pl",
        description="QR verification host written into KOD I for the simulator environment (the real environments "
        "use theirs, REFERENCE.md §1).",
    )


class OutageSettings(BaseModel):
    """KSeF availability (``GATEWAY_OUTAGES__*``): Latarnia followed, KSeF probed (rules: ``outages/domain.py``)."""

    enabled: bool = Field(default=True, description="Follow Latarnia and probe KSeF in this process.")
    check_interval_s: float = Field(
        default=30.0, gt=0, description="How often Latarnia is read and, while KSeF looks down, KSeF is probed."
    )
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive failed KSeF calls (5xx, no answer) that open an UNREACHABLE outage."
    )
    latarnia: bool = Field(default=True, description="Read Latarnia's status (REFERENCE.md §1).")


class GatewaySettings(ServiceSettings):
    """Every variable is ``GATEWAY_<FIELD>``, nested with ``__``:
    ``GATEWAY_DB__URL``, ``GATEWAY_KAFKA__BOOTSTRAP_SERVERS``, ``GATEWAY_KSEF__ENVIRONMENT``."""

    model_config = service_config("GATEWAY_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/gateway.db"))
    ksef: KsefSettings = KsefSettings()
    vault: VaultSettings = VaultSettings()
    budget: BudgetSettings = BudgetSettings()
    sync: SyncSettings = SyncSettings()
    delegation: DelegationSettings = DelegationSettings()
    sales: SalesSettings = SalesSettings()
    outages: OutageSettings = OutageSettings()
