from pydantic import SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "notify-svc"
SCHEMA = "notify"


class NotifySettings(ServiceSettings):
    """Every variable is ``NOTIFY_<FIELD>``, nested with ``__``:
    ``NOTIFY_DB__URL``, ``NOTIFY_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("NOTIFY_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/notify.db"))
