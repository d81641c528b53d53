from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from platform_common.sealing import SealingError, public_key_of, read_private_key_file
from platform_common.secret_box import check_key, development_key
from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "notify-svc"
SCHEMA = "notify"


class SmtpSettings(BaseModel):
    """The SMTP server mail goes out through (``NOTIFY_SMTP__*``). Defaults suit a catcher on loopback."""

    host: str = "127.0.0.1"
    port: int = Field(default=1025, ge=1, le=65535)
    # ``starttls``: plain connect then STARTTLS (port 587); ``tls``: implicit TLS (port 465); ``none``: loopback only.
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(default=15.0, gt=0)
    sender: str = Field(default="KSeF Hub <no-reply@ksef-hub.localhost>", description="The From header.")

    @model_validator(mode="after")
    def _no_password_in_the_clear(self) -> "SmtpSettings":
        if self.password is not None and self.security == "none" and self.host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("an SMTP password is sent only over TLS: set NOTIFY_SMTP__SECURITY to starttls or tls")
        return self


class MailDeliverySettings(BaseModel):
    """How pending mail is sent and retried (``NOTIFY_MAIL__*``)."""

    enabled: bool = Field(default=True, description="Run the sender in this process.")
    poll_interval_s: float = Field(
        default=5.0, gt=0, description="Longest sleep between looks for due mail (a queued mail wakes it at once)."
    )
    batch_size: int = Field(default=20, ge=1)
    # An attempt that dies with its process (no answer recorded) makes the mail due again after this long.
    lease_s: float = Field(default=120.0, gt=0)
    retry_base_s: float = Field(default=30.0, gt=0, description="First wait after a temporary failure, doubling.")
    retry_max_s: float = Field(default=3600.0, gt=0)
    give_up_after_s: float = Field(
        default=3 * 86400.0, gt=0, description="A mail still failing temporarily this long after it was queued fails."
    )
    default_language: Literal["pl", "en"] = "pl"


class WebhookSettings(BaseModel):
    """Outbound webhooks to ERP systems (``NOTIFY_WEBHOOKS__*``)."""

    enabled: bool = Field(default=True, description="Run the webhook sender in this process.")
    # Base64 of 32 random bytes: the AES-256-GCM key the subscriptions' signing secrets are stored under (they
    # must be read back to sign, so they cannot be hashed). Required in production; elsewhere a fixed, publicly
    # known development key is used.
    secrets_key: SecretStr | None = None
    # Where the ``links`` of a webhook point: the platform's public URL (the services' prefixes follow it).
    api_base_url: str = Field(default="http://127.0.0.1:8000", max_length=512)
    # Targets must be https, except in development and tests (loopback receivers).
    require_https: bool = True
    # CIDRs a target may resolve to although they are private, loopback, link-local...: empty in production; tests
    # allow 127.0.0.0/8 explicitly. Everything else internal is refused (SSRF), also after DNS.
    allowed_networks: list[str] = Field(default_factory=list)
    poll_interval_s: float = Field(default=5.0, gt=0, description="Longest sleep between looks for due deliveries.")
    concurrency: int = Field(default=32, ge=1, le=512, description="Deliveries in flight at once.")
    batch_size: int = Field(default=200, ge=1)
    # A claimed delivery whose process died is due again after this long (longer than one attempt can take).
    lease_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=15.0, gt=0)
    max_response_bytes: int = Field(default=64 * 1024, ge=1024)
    # Waits between attempts, the last one repeated: about three days in all (Standard Webhooks' recommendation
    # of exponential backoff); each is jittered by up to ``retry_jitter`` either way so that a receiver coming
    # back is not hit by every subscription at the same second.
    retry_delays_s: list[float] = Field(default_factory=lambda: [5.0, 60.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0])
    retry_jitter: float = Field(default=0.1, ge=0, lt=1)
    give_up_after_s: float = Field(default=3 * 86400.0, gt=0, description="Retry window of one delivery.")
    max_subscriptions_per_organisation: int = Field(default=200, ge=1)
    rotation_overlap_max_h: int = Field(default=168, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "WebhookSettings":
        if self.secrets_key is not None:
            check_key(self.secrets_key.get_secret_value(), name="NOTIFY_WEBHOOKS__SECRETS_KEY")
        if not self.retry_delays_s or any(d <= 0 for d in self.retry_delays_s):
            raise ValueError("NOTIFY_WEBHOOKS__RETRY_DELAYS_S needs at least one positive delay")
        return self

    def secret_box_key(self) -> str:
        return (
            self.secrets_key.get_secret_value()
            if self.secrets_key is not None
            else development_key("ksef-hub notify-svc development webhook secrets key")
        )


class NotifySettings(ServiceSettings):
    """Every variable is ``NOTIFY_<FIELD>``, nested with ``__``:
    ``NOTIFY_DB__URL``, ``NOTIFY_KAFKA__BOOTSTRAP_SERVERS``."""

    # A refused value is not echoed into the error (and so the logs): it may be the private key.
    model_config = SettingsConfigDict(**service_config("NOTIFY_"), hide_input_in_errors=True)

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/notify.db"))
    # The private half of the key auth-svc seals invitation and password-reset links to (its public half is
    # AUTH_NOTIFY_PUBLIC_KEY; `notify-svc seal-keygen` makes a pair). Either the key itself or a file holding
    # it that only its owner can read.
    seal_private_key: SecretStr | None = None
    seal_key_file: Path | None = None
    smtp: SmtpSettings = SmtpSettings()
    mail: MailDeliverySettings = MailDeliverySettings()
    webhooks: WebhookSettings = WebhookSettings()

    @model_validator(mode="after")
    def _check_seal_key(self) -> "NotifySettings":
        if self.seal_private_key is not None and self.seal_key_file is not None:
            raise ValueError("set NOTIFY_SEAL_PRIVATE_KEY or NOTIFY_SEAL_KEY_FILE, not both")
        # A configured key is checked now, not at the first invitation (and `migrate`, which needs no key, is not
        # refused for lacking one: the service refuses to start without it in production, see mail.consumers).
        self.seal_key()
        if self.environment == "production" and (self.webhooks.allowed_networks or not self.webhooks.require_https):
            raise ValueError("production delivers webhooks over https to public addresses only")
        return self

    def seal_key(self) -> SecretStr | None:
        """The private key that opens sealed links, or None when none is configured (outside production)."""
        try:
            if self.seal_key_file is not None:
                return SecretStr(read_private_key_file(self.seal_key_file))
            if self.seal_private_key is not None:
                public_key_of(self.seal_private_key.get_secret_value())
        except SealingError as exc:
            raise ValueError(f"unusable sealing key: {exc}") from None
        return self.seal_private_key
