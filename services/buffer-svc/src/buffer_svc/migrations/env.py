from buffer_svc.db import metadata
from buffer_svc.settings import BufferSettings
from platform_common.migrations import run_migrations

run_migrations(metadata, default_url=lambda: BufferSettings().db.url.get_secret_value())
