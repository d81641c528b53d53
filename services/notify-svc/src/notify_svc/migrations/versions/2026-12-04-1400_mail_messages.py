"""E-mails to send: one row per invitation or password-reset event, its link still sealed.

Revision ID: notify_0002
Revises: notify_0001
Create Date: 2026-12-04 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "notify_0002"
down_revision: str | None = "notify_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notify"


def upgrade() -> None:
    op.create_table(
        "mail_message",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("sealed_link", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mail_message"),
        schema=SCHEMA,
    )
    op.create_index("ix_mail_message_status_created_at", "mail_message", ["status", "created_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_mail_message_status_created_at", "mail_message", schema=SCHEMA)
    op.drop_table("mail_message", schema=SCHEMA)
