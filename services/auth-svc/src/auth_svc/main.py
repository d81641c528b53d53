import sys
from collections.abc import Sequence

from auth_svc.accounts import api as accounts
from auth_svc.api_keys import api as api_keys
from auth_svc.audit import api as audit
from auth_svc.db import messaging_tables, metadata
from auth_svc.dependencies import require_ops
from auth_svc.members import api as members
from auth_svc.organisations import api as organisations
from auth_svc.relations import api as relations
from auth_svc.relations import consumers as relation_consumers
from auth_svc.sessions import api as sessions
from auth_svc.settings import SCHEMA, SERVICE_NAME, AuthSettings
from auth_svc.signing_keys import api as signing_keys
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.messaging.dispatch import Subscription
from platform_common.messaging.transport import KafkaTransport
from platform_common.runtime import ServiceDefinition, ServiceRuntime


def subscriptions(runtime: ServiceRuntime) -> Sequence[Subscription]:
    """Called once before the transport starts: also the place to declare the topics auth-svc produces to."""
    if isinstance(runtime.transport, KafkaTransport):
        runtime.transport.declare_topics(UserInvited.topic, PasswordResetRequested.topic)
    return relation_consumers.subscriptions(runtime)


DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="auth_svc:migrations",
    routers=(
        sessions.router,
        signing_keys.router,
        accounts.router,
        organisations.router,
        relations.router,
        members.router,
        api_keys.router,
        audit.router,
    ),
    subscriptions=subscriptions,
    # The issuer checks credentials itself, the shared /ops endpoints included.
    operator=require_ops,
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
