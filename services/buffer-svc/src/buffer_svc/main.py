from fastapi import FastAPI

from buffer_svc.api import api_router
from buffer_svc.db import messaging_tables, metadata
from buffer_svc.messaging import subscriptions
from buffer_svc.settings import SCHEMA, SERVICE_NAME, BufferSettings
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
    migrations="buffer_svc:migrations",
    routers=(api_router,),
    subscriptions=subscriptions,
    description="The purchase buffer per client and month: decisions, descriptions, archive, office import.",
)


def create_app(
    settings: BufferSettings | None = None,
    *,
    bus: InProcessBus | None = None,
    telemetry: Telemetry | None = None,
    migrate_on_start: bool = False,
) -> FastAPI:
    return create_service_app(
        DEFINITION,
        settings or BufferSettings(),
        bus=bus,
        telemetry=telemetry,
        migrate_on_start=migrate_on_start,
    )


def run() -> None:
    service_cli(DEFINITION, BufferSettings, create_app, default_port=8003)
