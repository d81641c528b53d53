from fastapi import FastAPI

from notify_svc.api import api_router
from notify_svc.db import messaging_tables, metadata
from notify_svc.messaging import subscriptions
from notify_svc.settings import SCHEMA, SERVICE_NAME, NotifySettings
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
    migrations="notify_svc:migrations",
    routers=(api_router,),
    subscriptions=subscriptions,
    description="E-mail and outbound webhooks to ERP systems.",
)


def create_app(
    settings: NotifySettings | None = None,
    *,
    bus: InProcessBus | None = None,
    telemetry: Telemetry | None = None,
    migrate_on_start: bool = False,
) -> FastAPI:
    return create_service_app(
        DEFINITION,
        settings or NotifySettings(),
        bus=bus,
        telemetry=telemetry,
        migrate_on_start=migrate_on_start,
    )


def run() -> None:
    service_cli(DEFINITION, NotifySettings, create_app, default_port=8005)
