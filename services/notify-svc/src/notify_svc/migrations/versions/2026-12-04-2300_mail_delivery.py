"""Sending e-mail over SMTP: per mail its language, attempts and next attempt time, last error, sent time; and
what its template shows (``details``); and ``mail_attempt``, the delivery log of every attempt.

Revision ID: notify_0003
Revises: notify_0002
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "notify_0003"
down_revision: str | None = "notify_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notify"


COLUMNS = (
    sa.Column("language", sa.String(2), nullable=False, server_default=sa.text("'pl'")),
    sa.Column("details", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
)


def _altered_schema() -> str | None:
    # ALTER TABLE is rendered by Alembic itself, past the schema_translate_map that drops the schema on SQLite.
    return None if op.get_bind().dialect.name == "sqlite" else SCHEMA


def upgrade() -> None:
    # Plain ADD COLUMN with constant defaults: SQLite and PostgreSQL both change the table in place.
    for column in COLUMNS:
        op.add_column("mail_message", column, schema=_altered_schema())
    op.create_index(
        "ix_mail_message_status_next_attempt_at", "mail_message", ["status", "next_attempt_at"], schema=SCHEMA
    )
    op.create_table(
        "mail_attempt",
        sa.Column("mail_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["mail_id"],
            [f"{SCHEMA}.mail_message.id"],
            name=op.f("fk_mail_attempt_mail_id_mail_message"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mail_id", "attempt", name="pk_mail_attempt"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("mail_attempt", schema=SCHEMA)
    op.drop_index("ix_mail_message_status_next_attempt_at", "mail_message", schema=SCHEMA)
    for column in reversed(COLUMNS):
        op.drop_column("mail_message", column.name, schema=_altered_schema())
