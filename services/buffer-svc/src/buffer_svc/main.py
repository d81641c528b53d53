from buffer_svc.db import client_access, messaging_tables, metadata
from buffer_svc.diagnostics import api as diagnostics
from buffer_svc.documents import api as documents
from buffer_svc.purchases import api as purchases
from buffer_svc.purchases import consumers as purchase_consumers
from buffer_svc.settings import SCHEMA, SERVICE_NAME, BufferSettings
from buffer_svc.wiring import GatewayClient
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="buffer_svc:migrations",
    routers=(diagnostics.router, purchases.router, documents.router),
    subscriptions=purchase_consumers.subscriptions,
    client_access=client_access,
    components=lambda runtime: (GatewayClient(runtime),),
    description="The purchase buffer per client and month: decisions, descriptions, archive, office import.",
)

create_app = app_factory(DEFINITION, BufferSettings)


def run() -> None:
    service_cli(DEFINITION, BufferSettings, create_app, default_port=8003)
