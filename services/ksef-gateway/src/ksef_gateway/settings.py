from pydantic import BaseModel, SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "ksef-gateway"
SCHEMA = "gateway"


class KsefSettings(BaseModel):
    """KSeF environments, the HTTP client, sessions and context ownership (``GATEWAY_KSEF__*``)."""


class VaultSettings(BaseModel):
    """The credential vault: master keys and rotation (``GATEWAY_VAULT__*``)."""


class BudgetSettings(BaseModel):
    """Rate-limit budget per (context, endpoint group) and the circuit breaker (``GATEWAY_BUDGET__*``)."""


class SyncSettings(BaseModel):
    """Purchase-invoice sync: cadence, backfill, watchdog (``GATEWAY_SYNC__*``)."""


class GatewaySettings(ServiceSettings):
    """Every variable is ``GATEWAY_<FIELD>``, nested with ``__``:
    ``GATEWAY_DB__URL``, ``GATEWAY_KAFKA__BOOTSTRAP_SERVERS``, ``GATEWAY_KSEF__ENVIRONMENT``."""

    model_config = service_config("GATEWAY_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/gateway.db"))
    ksef: KsefSettings = KsefSettings()
    vault: VaultSettings = VaultSettings()
    budget: BudgetSettings = BudgetSettings()
    sync: SyncSettings = SyncSettings()
