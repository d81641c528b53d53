from approval_svc.db import metadata
from approval_svc.settings import ApprovalSettings
from platform_common.migrations import run_migrations

run_migrations(metadata, default_url=lambda: ApprovalSettings().db.url.get_secret_value())
