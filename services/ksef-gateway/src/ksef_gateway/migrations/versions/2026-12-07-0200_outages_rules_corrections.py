"""KSeF outages; auto-send rules; technical corrections, deadline alerts and held invoices on sales invoices.

Revision ID: gateway_0010
Revises: gateway_0009
Create Date: 2026-12-07 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "gateway_0010"
down_revision: str | None = "gateway_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
COLUMNS = (
    sa.Column("corrects_invoice_id", sa.Uuid(), nullable=True),
    sa.Column("hash_of_corrected_invoice", sa.String(44), nullable=True),
    sa.Column("deadline_warned_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deadline_missed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("held_by_rule", sa.String(120), nullable=True),
)


def _altered_schema() -> str | None:
    # ALTER TABLE is rendered by Alembic itself, past the schema_translate_map that drops the schema on SQLite.
    return None if op.get_bind().dialect.name == "sqlite" else SCHEMA


def upgrade() -> None:
    # Plain ADD COLUMN of nullable columns: SQLite and PostgreSQL both change the table in place.
    for column in COLUMNS:
        op.add_column("sales_invoice", column.copy(), schema=_altered_schema())
    op.create_table(
        "sales_auto_send",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("rules", JSON, nullable=False),
        sa.Column("last_backfill_month", sa.String(7), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", name="pk_sales_auto_send"),
        schema=SCHEMA,
    )
    op.create_table(
        "ksef_outage",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("latarnia_event_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("open_slot", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ksef_outage"),
        sa.UniqueConstraint("open_slot", name="uq_ksef_outage_open_slot"),
        schema=SCHEMA,
    )
    op.create_index("ix_ksef_outage_started_at", "ksef_outage", ["started_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_ksef_outage_started_at", table_name="ksef_outage", schema=SCHEMA)
    op.drop_table("ksef_outage", schema=SCHEMA)
    op.drop_table("sales_auto_send", schema=SCHEMA)
    for column in reversed(COLUMNS):
        op.drop_column("sales_invoice", column.name, schema=_altered_schema())
