"""Offline sales invoices: mode, legal deadline and KOD II per invoice; the client's Offline certificate.

Revision ID: gateway_0009
Revises: gateway_0008
Create Date: 2026-12-06 23:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "gateway_0009"
down_revision: str | None = "gateway_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"
COLUMNS = ("offline_mode", "offline_deadline", "kod_ii_url")


def _altered_schema() -> str | None:
    # ALTER TABLE is rendered by Alembic itself, past the schema_translate_map that drops the schema on SQLite.
    return None if op.get_bind().dialect.name == "sqlite" else SCHEMA


def upgrade() -> None:
    # Plain ADD COLUMN of nullable columns: SQLite and PostgreSQL both change the table in place.
    for column in (
        sa.Column("offline_mode", sa.String(16), nullable=True),
        sa.Column("offline_deadline", sa.Date(), nullable=True),
        sa.Column("kod_ii_url", sa.Text(), nullable=True),
    ):
        op.add_column("sales_invoice", column, schema=_altered_schema())
    op.create_table(
        "offline_certificate",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("serial", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_data_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", name="pk_offline_certificate"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("offline_certificate", schema=SCHEMA)
    for name in reversed(COLUMNS):
        op.drop_column("sales_invoice", name, schema=_altered_schema())
