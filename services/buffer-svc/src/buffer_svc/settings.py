from pydantic import SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "buffer-svc"
SCHEMA = "buffer"


class BufferSettings(ServiceSettings):
    """Every variable is ``BUFFER_<FIELD>``, nested with ``__``:
    ``BUFFER_DB__URL``, ``BUFFER_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("BUFFER_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/buffer.db"))
