from platform_common.migrations import run_migrations

from auth_svc.db import metadata
from auth_svc.settings import AuthSettings

run_migrations(metadata, default_url=lambda: AuthSettings().db.url.get_secret_value())
