from auth_svc.db import metadata
from auth_svc.settings import AuthSettings
from platform_common.migrations import run_migrations

run_migrations(metadata, default_url=lambda: AuthSettings().db.url.get_secret_value())
