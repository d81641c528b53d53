import sys

from auth_svc.api import api_router
from auth_svc.db import messaging_tables, metadata
from auth_svc.messaging import subscriptions
from auth_svc.settings import SCHEMA, SERVICE_NAME, AuthSettings
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition

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

create_app = app_factory(DEFINITION, AuthSettings)


def run(argv: list[str] | None = None) -> None:
    """``auth-svc serve | migrate | downgrade`` (shared by every service) and ``auth-svc bootstrap``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["bootstrap"]:
        from auth_svc.bootstrap import main

        main(args[1:])
        return
    service_cli(DEFINITION, AuthSettings, create_app, default_port=8001, argv=args)
