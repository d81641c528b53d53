"""The client-access projection: which office may read which client now, followed from integration.changed.

Revision ID: buffer_0002
Revises: buffer_0001
Create Date: 2026-12-05 17:00:00
"""

from collections.abc import Sequence

from platform_common.migrations import create_client_access_v1, drop_client_access_v1

revision: str = "buffer_0002"
down_revision: str | None = "buffer_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "buffer"


def upgrade() -> None:
    create_client_access_v1(SCHEMA)


def downgrade() -> None:
    drop_client_access_v1(SCHEMA)
