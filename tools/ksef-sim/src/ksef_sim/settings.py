"""Simulator settings (env prefix ``KSEF_SIM_``).

Defaults mimic the Ministry's TEST environment; tests and benchmarks shorten the delays and relax the limits.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RateLimitMode(StrEnum):
    PRODUCTION = "production"  # the spec's default table (PROD = DEMO = TEST since 2.5.0)
    CUSTOM = "custom"  # values set through /testdata/rate-limits or /_sim
    OFF = "off"


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KSEF_SIM_", extra="ignore")

    # State file; ``None`` keeps everything in memory (unit tests).
    database_path: Path | None = Path(".data/ksef-sim.sqlite3")
    # Host every pre-signed URL (UPO, export parts, batch uploads) is built on, as the real service does with the
    # host that was called. ``None`` takes it from each request. Ends before ``/v2``.
    public_base_url: str | None = None
    environment_name: str = "TE"
    # The operator API (/_sim) always wants this bearer token. Unset: read from ``operator_token_file`` (default: next
    # to the state file), made and printed once when that file does not exist yet (``ksef_sim.operator_token``).
    operator_token: SecretStr | None = None
    operator_token_file: Path | None = None

    access_token_ttl_s: int = Field(default=900, gt=0)
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    authentication_token_ttl_s: int = Field(default=2700, gt=0)
    challenge_ttl_s: int = Field(default=600, gt=0)
    online_session_ttl_s: int = Field(default=12 * 3600, gt=0)
    presigned_url_ttl_s: int = Field(default=3600, gt=0)
    async_status_retention_s: int = Field(default=7 * 24 * 3600, gt=0)

    # Time from the auth submit (KSeF token or XAdES) until ``GET /auth/{ref}`` leaves 100 for the decided outcome;
    # TEST answers within a fraction of a second (REFERENCE.md §3.5), DEMO/PROD can take longer (OCSP/CRL checks).
    auth_processing_delay_s: float = Field(default=0.2, ge=0)
    # Time from receipt to a final invoice status in an online session, and the permanent-storage lag (acquisition →
    # permanent storage) with the indexing lag on top of it that makes ``permanentStorageHwmDate`` trail the newest
    # records.
    invoice_processing_delay_s: float = Field(default=0.0, ge=0)
    # Time a closed batch session stays at 150 before its package is processed and its invoices are final (§5): even
    # a small package is never processed at the instant of close.
    batch_processing_delay_s: float = Field(default=1.0, ge=0)
    permanent_storage_delay_s: float = Field(default=2.0, ge=0)
    permanent_storage_jitter_s: float = Field(default=3.0, ge=0)
    export_processing_delay_s: float = Field(default=0.0, ge=0)

    rate_limits: RateLimitMode = RateLimitMode.PRODUCTION
    # Export packages are split into parts of at most this many bytes (the real service: 50 MB).
    export_part_size: int = Field(default=50 * 1024 * 1024, gt=0)
    # Deterministic randomness for seeding and jitter; ``None`` = OS entropy.
    random_seed: int | None = None

    @field_validator("operator_token")
    @classmethod
    def _operator_token_is_strong(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("KSEF_SIM_OPERATOR_TOKEN must be at least 16 characters (or unset, to have one made)")
        return token
