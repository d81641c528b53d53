from pydantic import Field, SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "buffer-svc"
SCHEMA = "buffer"


class BufferSettings(ServiceSettings):
    """Every variable is ``BUFFER_<FIELD>``, nested with ``__``:
    ``BUFFER_DB__URL``, ``BUFFER_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("BUFFER_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/buffer.db"))
    # Where the invoices' XML is (ksef-gateway keeps every document KSeF hands over); fetched with this service's
    # client-credentials token for previews and ERP bundles.
    gateway_api_url: str = "http://127.0.0.1:8000/gateway"
    gateway_timeout_s: float = Field(default=10.0, gt=0, le=120)
