from fastapi import FastAPI

from auth_svc.api import api_router
from auth_svc.db import messaging_tables, metadata
from auth_svc.messaging import subscriptions
from auth_svc.settings import SCHEMA, SERVICE_NAME, AuthSettings
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
    migrations="auth_svc:migrations",
    routers=(api_router,),
    subscriptions=subscriptions,
    description="Organisations, users, roles, API keys and the JWTs every service verifies.",
)


def create_app(
    settings: AuthSettings | None = None,
    *,
    bus: InProcessBus | None = None,
    telemetry: Telemetry | None = None,
    migrate_on_start: bool = False,
) -> FastAPI:
    return create_service_app(
        DEFINITION,
        settings or AuthSettings(),
        bus=bus,
        telemetry=telemetry,
        migrate_on_start=migrate_on_start,
    )


def run() -> None:
    service_cli(DEFINITION, AuthSettings, create_app, default_port=8001)
