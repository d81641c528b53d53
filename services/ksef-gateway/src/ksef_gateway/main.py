from ksef_gateway.api import api_router
from ksef_gateway.db import messaging_tables, metadata
from ksef_gateway.messaging import subscriptions
from ksef_gateway.settings import SCHEMA, SERVICE_NAME, GatewaySettings
from ksef_gateway.wiring import Gateway
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="ksef_gateway:migrations",
    routers=(api_router,),
    subscriptions=subscriptions,
    components=lambda runtime: (Gateway.of(runtime),),
    description="The only component that talks to KSeF: credentials, sessions, purchase sync, sales sending.",
)

create_app = app_factory(DEFINITION, GatewaySettings)


def run() -> None:
    service_cli(DEFINITION, GatewaySettings, create_app, default_port=8002)
