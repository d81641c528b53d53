"""Settings sections shared by every service.

Sections are plain ``BaseModel``s nested in one ``BaseSettings`` root per service (pydantic-settings
issue #279: nested ``BaseSettings`` do not inherit the root's prefix). A service declares
``model_config = service_config("AUTH_")`` and gets variables like ``AUTH_DB__URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from platform_common.auth.settings import AuthClientSettings
from platform_common.tasks import STOP_GRACE_S


class DatabaseSettings(BaseModel):
    # SQLite (aiosqlite) for the embedded mode, PostgreSQL (asyncpg) in production.
    url: SecretStr = SecretStr("sqlite+aiosqlite:///./.data/service.db")
    echo: bool = False
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=10.0, gt=0)

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_secret_value().startswith("sqlite")


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str | None = None
    request_timeout_ms: int = Field(default=15_000, ge=1_000)
    # Topics are created on start-up when missing (and with their dead-letter twin), so a fresh cluster works.
    create_topics: bool = True
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    # Consumers of a group that starts for the first time read from the beginning: nothing published before
    # the first deployment of a consumer is skipped.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)


class MessagingSettings(BaseModel):
    transport: Literal["kafka", "inprocess"] = "kafka"
    # A failing handler is retried this many times in total before its event is dead-lettered.
    max_attempts: int = Field(default=5, ge=1)
    retry_initial_backoff_s: float = Field(default=0.2, ge=0)
    retry_max_backoff_s: float = Field(default=10.0, ge=0)
    relay_batch_size: int = Field(default=200, ge=1)
    relay_poll_interval_s: float = Field(default=0.5, gt=0)
    # A stopping relay or consumer finishes the batch it is in (up to this long) instead of being cancelled in
    # the middle of it: a cancelled delivery can leave its handler's transaction open, and on SQLite an open write
    # transaction blocks every other writer of the file until the connection is collected.
    stop_grace_s: float = Field(default=STOP_GRACE_S, ge=0)
    # How many of the 16 outbox lanes one relay claims at a time (PostgreSQL); the rest stay for its peers.
    relay_lanes_per_claim: int = Field(default=4, ge=1, le=16)
    # Published outbox rows are kept this long (to investigate a delivery) and then deleted by the relay, so
    # the table, its WAL and its backups do not keep every event ever sent; 0 deletes a row once published.
    outbox_retention_s: float = Field(default=24 * 3600, ge=0)
    outbox_purge_interval_s: float = Field(default=600, gt=0)
    # Rows deleted per transaction, so a large backlog never holds a long lock or a huge WAL segment.
    outbox_purge_batch_size: int = Field(default=1000, ge=1)


class HttpClientSettings(BaseModel):
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=100, ge=1)
    # Idle connections kept for reuse. httpx's own default (20) is lost as soon as ``max_connections`` is given, and
    # an unbounded keep-alive pool costs every request a scan of all idle connections (httpcore checks each for
    # expiry with socket calls): with a pool grown to 100 this was most of the gateway's CPU per KSeF call. The
    # gateway never has more than ``budget.max_in_flight`` (8) KSeF calls open, so 10 idle connections suffice.
    max_keepalive_connections: int = Field(default=10, ge=0)


class HttpLimitsSettings(BaseModel):
    """What one request may carry, refused before it is read (``platform_common.limits``).

    A route that takes more (XML invoices, batches) declares its own body limit with ``limits.body_limit``.
    """

    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    max_query_bytes: int = Field(default=8 * 1024, ge=0)
    # Names and values together; 16 KiB is also h11's limit for a request head, so uvicorn's two HTTP
    # implementations (httptools has no such limit) refuse the same requests.
    max_header_bytes: int = Field(default=16 * 1024, ge=0)
    # Apache's LimitRequestFields default.
    max_headers: int = Field(default=100, ge=0)


class TelemetrySettings(BaseModel):
    # Off by default (and in tests). When on, the OTLP exporter reads the standard OTEL_* variables
    # (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES ...).
    enabled: bool = False
    log_level: str = "INFO"
    log_json: bool = True
    # GET /metrics (Prometheus text format): the service's RED metrics, messaging and its own gauges. The series
    # carry client NIPs, so the endpoint answers only a scraper presenting this bearer token (Prometheus'
    # ``authorization.credentials_file``); without one configured it answers 404.
    metrics: bool = True
    metrics_token: SecretStr | None = None


class ServiceSettings(BaseSettings):
    """Base of every service's root settings; subclasses set ``model_config`` with their own prefix."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    db: DatabaseSettings = DatabaseSettings()
    kafka: KafkaSettings = KafkaSettings()
    messaging: MessagingSettings = MessagingSettings()
    http: HttpClientSettings = HttpClientSettings()
    # Bounds of incoming requests: <PREFIX>HTTP_LIMITS__MAX_BODY_BYTES and so on.
    http_limits: HttpLimitsSettings = HttpLimitsSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    # How this service verifies callers (JWKS, API key introspection): <PREFIX>AUTH__JWKS_URL and so on.
    auth: AuthClientSettings = AuthClientSettings()
    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path(".data")
    # Comma-separated addresses/CIDRs of the reverse proxies (an ingress) whose X-Forwarded-For/-Proto are believed
    # by `<service> serve` (<PREFIX>TRUSTED_PROXIES). Empty: none, the TCP peer is the client.
    trusted_proxies: str = ""

    @model_validator(mode="after")
    def _refuse_sqlite_in_production(self) -> ServiceSettings:
        if self.environment == "production" and self.db.is_sqlite:
            raise ValueError("production needs PostgreSQL: set <PREFIX>DB__URL to a postgresql+asyncpg:// URL")
        return self


def service_config(env_prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=env_prefix, env_nested_delimiter="__", extra="ignore")
