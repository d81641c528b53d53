"""Outbox, outbox lanes, inbox and dead letters.

Revision ID: notify_0001
Revises:
Create Date: 2026-11-22 05:00:00
"""

from collections.abc import Sequence

from platform_common.migrations import create_messaging_tables_v1, drop_messaging_tables_v1

revision: str = "notify_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notify"


def upgrade() -> None:
    create_messaging_tables_v1(SCHEMA)


def downgrade() -> None:
    drop_messaging_tables_v1(SCHEMA)
