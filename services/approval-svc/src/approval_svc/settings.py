from pydantic import SecretStr

from platform_common.settings import DatabaseSettings, ServiceSettings, service_config

SERVICE_NAME = "approval-svc"
SCHEMA = "approval"


class ApprovalSettings(ServiceSettings):
    """Every variable is ``APPROVAL_<FIELD>``, nested with ``__``:
    ``APPROVAL_DB__URL``, ``APPROVAL_KAFKA__BOOTSTRAP_SERVERS``."""

    model_config = service_config("APPROVAL_")

    db: DatabaseSettings = DatabaseSettings(url=SecretStr("sqlite+aiosqlite:///./.data/approval.db"))
