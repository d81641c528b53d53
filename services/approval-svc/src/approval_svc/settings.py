from pydantic import BaseModel, Field, SecretStr, field_validator

from platform_common.auth.settings import EMBEDDED_AUTH_URL
from platform_common.sealing import SealingError, check_public_key
from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "approval-svc"
SCHEMA = "approval"


class IntegrationSettings(BaseModel):
    # A consent link nobody followed stops working after this (the office renews the request).
    consent_link_ttl_s: float = Field(default=7 * 24 * 3600, gt=0)
    # The activation code mailed to the office's return address (the default: 72 h).
    activation_code_ttl_s: float = Field(default=72 * 3600, gt=0)
    # Wrong codes that lock the code; only a renewed request helps then.
    max_code_attempts: int = Field(default=5, ge=1)
    # How often unused links and codes past their expiry are marked expired (refusal at use does not wait for it).
    expiry_interval_s: float = Field(default=300, gt=0)


class ApprovalSettings(ServiceSettings):
    """Every variable is ``APPROVAL_<FIELD>``, nested with ``__``:
    ``APPROVAL_DB__URL``, ``APPROVAL_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("APPROVAL_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/approval.db"))
    integrations: IntegrationSettings = IntegrationSettings()
    # Where people reach approval-svc's pages: the consent and activation links in e-mails start with it.
    public_url: str = "http://127.0.0.1:8000/approval"
    # auth-svc's API, asked (with the caller's own credential) for the requesting office's name and NIP.
    auth_api_url: str = EMBEDDED_AUTH_URL
    # notify-svc's X25519 public key: consent links and activation codes travel sealed to it.
    notify_public_key: str | None = None

    @field_validator("notify_public_key")
    @classmethod
    def _sealable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_public_key(value)
            except SealingError as exc:
                raise ValueError(f"notify_public_key is not a sealing public key: {exc}") from None
        return value

    @field_validator("public_url", "auth_api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")
