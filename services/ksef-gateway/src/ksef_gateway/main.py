from fastapi import FastAPI

from ksef_gateway.api import api_router
from ksef_gateway.db import messaging_tables, metadata
from ksef_gateway.messaging import subscriptions
from ksef_gateway.settings import SCHEMA, SERVICE_NAME, GatewaySettings
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
    migrations="ksef_gateway:migrations",
    routers=(api_router,),
    subscriptions=subscriptions,
    description="The only component that talks to KSeF: credentials, sessions, purchase sync, sales sending.",
)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    bus: InProcessBus | None = None,
    telemetry: Telemetry | None = None,
    migrate_on_start: bool = False,
) -> FastAPI:
    return create_service_app(
        DEFINITION,
        settings or GatewaySettings(),
        bus=bus,
        telemetry=telemetry,
        migrate_on_start=migrate_on_start,
    )


def run() -> None:
    service_cli(DEFINITION, GatewaySettings, create_app, default_port=8002)
