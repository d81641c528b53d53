from ksef_gateway.db import metadata
from ksef_gateway.settings import GatewaySettings
from platform_common.migrations import run_migrations

run_migrations(metadata, default_url=lambda: GatewaySettings().db.url.get_secret_value())
