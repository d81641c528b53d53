"""Office-client relations follow approval-svc's integration events: the integration id and last revision applied.

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-12-05 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "auth_0003"
down_revision: str | None = "auth_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "auth"


def _altered_schema() -> str | None:
    # ALTER TABLE is rendered by Alembic itself, past the schema_translate_map that drops the schema on SQLite.
    return None if op.get_bind().dialect.name == "sqlite" else SCHEMA


def upgrade() -> None:
    op.add_column("office_client", sa.Column("integration_id", sa.Uuid(), nullable=True), schema=_altered_schema())
    op.add_column(
        "office_client", sa.Column("integration_revision", sa.Integer(), nullable=True), schema=_altered_schema()
    )


def downgrade() -> None:
    op.drop_column("office_client", "integration_revision", schema=_altered_schema())
    op.drop_column("office_client", "integration_id", schema=_altered_schema())
