from __future__ import annotations

import base64
import binascii

from pydantic import BaseModel, Field, SecretStr, model_validator

from platform_common.sealing import SealingError, check_public_key
from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "auth-svc"
SCHEMA = "auth"


class PasswordHashSettings(BaseModel):
    """argon2id cost parameters (RFC 9106 "second recommended option" by default); tests lower them."""

    time_cost: int = Field(default=3, ge=1)
    memory_cost_kib: int = Field(default=65_536, ge=8)
    parallelism: int = Field(default=4, ge=1)


class AuthSettings(ServiceSettings):
    """Every variable is ``AUTH_<FIELD>``, nested with ``__``:
    ``AUTH_DB__URL``, ``AUTH_ACCESS_TOKEN_TTL_S``, ``AUTH_SERVICE_CREDENTIALS='{"buffer-svc": "..."}'``."""

    model_config = service_config("AUTH_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/auth.db"))

    issuer: str = "ksef-hub-auth"
    audience: str = "ksef-hub"
    access_token_ttl_s: int = Field(default=900, ge=30)
    refresh_token_ttl_s: int = Field(default=14 * 24 * 3600, ge=60)
    service_token_ttl_s: int = Field(default=900, ge=30)
    # How long a replica may keep using its cached current signing key after another replica rotated;
    # a retired key stays in the JWKS for access_token_ttl_s + this, so every token it signed still verifies.
    signing_key_cache_s: int = Field(default=60, ge=0)

    # Base64 of 32 random bytes: the AES-256-GCM key that encrypts signing keys and TOTP seeds at rest.
    # Required in production; development and tests fall back to a fixed, publicly known key.
    secrets_key: SecretStr | None = None

    # Client credentials of the other services: {"buffer-svc": "<secret>", ...}; extra permissions per service.
    service_credentials: dict[str, SecretStr] = Field(default_factory=dict)
    service_permissions: dict[str, list[str]] = Field(default_factory=dict)

    password_hash: PasswordHashSettings = PasswordHashSettings()
    password_min_length: int = Field(default=12, ge=8)

    # Account lock after this many failed logins in a row; it lasts lockout_duration_s (0 = until an admin unlocks).
    lockout_threshold: int = Field(default=5, ge=1)
    lockout_duration_s: int = Field(default=900, ge=0)
    # Login attempts per (e-mail, client IP) in a fixed window; beyond that 429 with Retry-After.
    login_rate_limit: int = Field(default=10, ge=1)
    login_rate_window_s: int = Field(default=300, ge=1)

    invitation_ttl_s: int = Field(default=72 * 3600, ge=60)
    password_reset_ttl_s: int = Field(default=3600, ge=60)
    # Links in invitation and password-reset e-mails start with this (the web UI or the service root).
    link_base_url: str = "http://127.0.0.1:8000/auth"
    # notify-svc's X25519 public key (``platform_common.sealing``): the links travel sealed to it, so the outbox
    # and the topics never hold a usable link. Public, so not a secret; without it no invitation or reset link
    # can be sent (those requests answer 503).
    notify_public_key: str | None = None

    totp_issuer: str = "KSeF Hub"
    # API keys' last_used_at is written at most this often per key (a write on every request would be wasteful).
    api_key_touch_interval_s: int = Field(default=60, ge=0)

    @model_validator(mode="after")
    def _check_secrets(self) -> AuthSettings:
        if self.secrets_key is not None:
            try:
                raw = base64.b64decode(self.secrets_key.get_secret_value(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("AUTH_SECRETS_KEY must be base64 of 32 bytes") from None
            if len(raw) != 32:
                raise ValueError("AUTH_SECRETS_KEY must be base64 of 32 bytes")
        elif self.environment == "production":
            raise ValueError("production needs AUTH_SECRETS_KEY (base64 of 32 random bytes)")
        if self.notify_public_key is not None:
            try:
                check_public_key(self.notify_public_key)
            except SealingError:
                raise ValueError("AUTH_NOTIFY_PUBLIC_KEY must be an X25519 public key (urlsafe base64)") from None
        return self
