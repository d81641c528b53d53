from approval_svc.db import messaging_tables, metadata
from approval_svc.settings import SCHEMA, SERVICE_NAME, ApprovalSettings
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="approval_svc:migrations",
    description="Office-client consent and activation-code handshake, integration state, month approval.",
)

create_app = app_factory(DEFINITION, ApprovalSettings)


def run() -> None:
    service_cli(DEFINITION, ApprovalSettings, create_app, default_port=8004)
