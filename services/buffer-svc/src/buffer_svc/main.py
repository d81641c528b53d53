from buffer_svc.api import api_router
from buffer_svc.db import messaging_tables, metadata
from buffer_svc.messaging import subscriptions
from buffer_svc.settings import SCHEMA, SERVICE_NAME, BufferSettings
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

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

create_app = app_factory(DEFINITION, BufferSettings)


def run() -> None:
    service_cli(DEFINITION, BufferSettings, create_app, default_port=8003)
