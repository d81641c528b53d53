from pydantic import SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "ksef-gateway"
SCHEMA = "gateway"


class GatewaySettings(ServiceSettings):
    """Every variable is ``GATEWAY_<FIELD>``, nested with ``__``:
    ``GATEWAY_DB__URL``, ``GATEWAY_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("GATEWAY_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/gateway.db"))
