from fastapi import APIRouter

from approval_svc.db import client_access, messaging_tables, metadata
from approval_svc.integrations import consumers as integrations
from approval_svc.integrations.api import router as integrations_router
from approval_svc.integrations.pages import router as pages_router
from approval_svc.months import consumers as months
from approval_svc.months.api import router as months_router
from approval_svc.settings import SCHEMA, SERVICE_NAME, ApprovalSettings
from approval_svc.wiring import Approval
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

api_router = APIRouter()
for router in (integrations_router, pages_router, months_router):
    api_router.include_router(router)

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="approval_svc:migrations",
    routers=(api_router,),
    subscriptions=lambda runtime: (*integrations.subscriptions(runtime), *months.subscriptions(runtime)),
    client_access=client_access,
    components=lambda runtime: (Approval.of(runtime).offices, Approval.of(runtime).expiry),
    description="Office-client consent and activation-code handshake, integration state, month approval.",
)

create_app = app_factory(DEFINITION, ApprovalSettings)


def run() -> None:
    service_cli(DEFINITION, ApprovalSettings, create_app, default_port=8004)
