"""Mail without a link: a notice (the client refused consent) has neither a sealed link nor an expiry.

Revision ID: notify_0004
Revises: notify_0003
Create Date: 2026-12-06 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "notify_0004"
down_revision: str | None = "notify_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notify"


def _altered_schema() -> str | None:
    return None if op.get_bind().dialect.name == "sqlite" else SCHEMA


def upgrade() -> None:
    # On SQLite the batch copies the table into a new one. The migration connection has foreign keys off (SQLite's
    # default; only the services' own engines turn them on), so dropping the old table does not cascade into the
    # delivery log that refers to it.
    with op.batch_alter_table("mail_message", schema=_altered_schema()) as batch:
        batch.alter_column("sealed_link", existing_type=sa.Text(), nullable=True)
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=True)


def downgrade() -> None:
    # The old schema has no room for a notice: they (and their delivery log) go.
    table = "mail_message" if op.get_bind().dialect.name == "sqlite" else f"{SCHEMA}.mail_message"
    attempts = "mail_attempt" if op.get_bind().dialect.name == "sqlite" else f"{SCHEMA}.mail_attempt"
    op.execute(f"DELETE FROM {attempts} WHERE mail_id IN (SELECT id FROM {table} WHERE sealed_link IS NULL)")  # noqa: S608
    op.execute(f"DELETE FROM {table} WHERE sealed_link IS NULL")  # noqa: S608
    with op.batch_alter_table("mail_message", schema=_altered_schema()) as batch:
        batch.alter_column("sealed_link", existing_type=sa.Text(), nullable=False)
        batch.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)
