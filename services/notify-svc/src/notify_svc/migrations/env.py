from notify_svc.db import metadata
from notify_svc.settings import NotifySettings
from platform_common.migrations import run_migrations

run_migrations(metadata, default_url=lambda: NotifySettings().db.url.get_secret_value())
