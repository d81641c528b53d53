from fastapi import APIRouter

from ksef_gateway.communication.api import router as communication_router
from ksef_gateway.db import client_access, messaging_tables, metadata
from ksef_gateway.delegation.api import router as delegation_router
from ksef_gateway.delegation.consumers import subscriptions
from ksef_gateway.operations.api import router as operations_router
from ksef_gateway.outages.api import router as outages_router
from ksef_gateway.purchases.api import router as purchases_router
from ksef_gateway.sales.api import router as sales_router
from ksef_gateway.settings import SCHEMA, SERVICE_NAME, GatewaySettings
from ksef_gateway.sync.api import router as sync_router
from ksef_gateway.vault.api import router as vault_router
from ksef_gateway.wiring import Gateway
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

api_router = APIRouter()
for router in (
    vault_router,
    delegation_router,
    communication_router,
    sync_router,
    purchases_router,
    sales_router,
    outages_router,
    operations_router,
):
    api_router.include_router(router)

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="ksef_gateway:migrations",
    routers=(api_router,),
    # approval-svc's integration lifecycle starts and stops delegated access (delegation/consumers.py).
    subscriptions=subscriptions,
    components=lambda runtime: (Gateway.of(runtime),),
    client_access=client_access,
    description="The only component that talks to KSeF: credentials, sessions, purchase sync, sales sending.",
)

create_app = app_factory(DEFINITION, GatewaySettings)


def run() -> None:
    service_cli(DEFINITION, GatewaySettings, create_app, default_port=8002)
