from fastapi import FastAPI

from approval_svc.api import api_router
from approval_svc.db import messaging_tables, metadata
from approval_svc.messaging import subscriptions
from approval_svc.settings import SCHEMA, SERVICE_NAME, ApprovalSettings
from platform_common.app import create_service_app
from platform_common.cli import service_cli
from platform_common.messaging.transport import InProcessBus
from platform_common.runtime import ServiceDefinition
from platform_common.telemetry import Telemetry

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="approval_svc:migrations",
    routers=(api_router,),
    subscriptions=subscriptions,
    description="Office-client consent and activation-code handshake, integration state, month approval.",
)


def create_app(
    settings: ApprovalSettings | None = None,
    *,
    bus: InProcessBus | None = None,
    telemetry: Telemetry | None = None,
    migrate_on_start: bool = False,
) -> FastAPI:
    return create_service_app(
        DEFINITION,
        settings or ApprovalSettings(),
        bus=bus,
        telemetry=telemetry,
        migrate_on_start=migrate_on_start,
    )


def run() -> None:
    service_cli(DEFINITION, ApprovalSettings, create_app, default_port=8004)
