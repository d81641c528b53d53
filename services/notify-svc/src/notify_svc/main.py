import sys

from notify_svc.catalogue import api as catalogue_api
from notify_svc.db import client_access, messaging_tables, metadata
from notify_svc.mail import consumers as mail
from notify_svc.settings import SCHEMA, SERVICE_NAME, NotifySettings
from notify_svc.webhooks import api as webhooks_api
from notify_svc.webhooks import consumers as webhooks
from notify_svc.wiring import mail_sender, webhook_sender
from platform_common.app import app_factory
from platform_common.cli import service_cli
from platform_common.runtime import ServiceDefinition
from platform_common.sealing import generate_keypair

DEFINITION = ServiceDefinition(
    name=SERVICE_NAME,
    schema=SCHEMA,
    metadata=metadata,
    tables=messaging_tables,
    migrations="notify_svc:migrations",
    routers=(webhooks_api.router, webhooks_api.ops_router, catalogue_api.router),
    subscriptions=lambda runtime: (*mail.subscriptions(runtime), *webhooks.subscriptions(runtime)),
    components=lambda runtime: (mail_sender(runtime), webhook_sender(runtime)),
    client_access=client_access,
    description="E-mail and outbound webhooks to ERP systems.",
)

create_app = app_factory(DEFINITION, NotifySettings)


def seal_keygen() -> None:
    """Print a fresh sealing key pair: the private half for notify-svc, the public half for auth-svc."""
    private_key, public_key = generate_keypair()
    print(f"NOTIFY_SEAL_PRIVATE_KEY={private_key}")
    print(f"AUTH_NOTIFY_PUBLIC_KEY={public_key}")


def run(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["seal-keygen"]:
        seal_keygen()
        return
    service_cli(DEFINITION, NotifySettings, create_app, default_port=8005, argv=args)
