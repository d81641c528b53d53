from notify_svc.api import api_router
from notify_svc.db import messaging_tables, metadata
from notify_svc.messaging import subscriptions
from notify_svc.settings import SCHEMA, SERVICE_NAME, NotifySettings
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

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

create_app = app_factory(DEFINITION, NotifySettings)


def run() -> None:
    service_cli(DEFINITION, NotifySettings, create_app, default_port=8005)
