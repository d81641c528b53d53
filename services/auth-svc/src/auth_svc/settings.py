from pydantic import SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "auth-svc"
SCHEMA = "auth"


class AuthSettings(ServiceSettings):
    """Every variable is ``AUTH_<FIELD>``, nested with ``__``:
    ``AUTH_DB__URL``, ``AUTH_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("AUTH_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/auth.db"))
