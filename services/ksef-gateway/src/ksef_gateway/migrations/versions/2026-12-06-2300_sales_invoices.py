"""Sales invoices sent to KSeF and their history.

Revision ID: gateway_0008
Revises: gateway_0007
Create Date: 2026-12-06 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "gateway_0008"
down_revision: str | None = "gateway_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sales_invoice",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_fingerprint", sa.String(64), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("xml", sa.LargeBinary(), nullable=False),
        sa.Column("invoice_hash", sa.String(44), nullable=False),
        sa.Column("invoice_number", sa.String(256), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("seller_nip", sa.String(10), nullable=False),
        sa.Column("buyer_nip", sa.String(10), nullable=True),
        sa.Column("invoice_type", sa.String(8), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("gross_amount", sa.Numeric(18, 2), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("session_reference", sa.String(64), nullable=True),
        sa.Column("invoice_reference", sa.String(64), nullable=True),
        sa.Column("ksef_number", sa.String(36), nullable=True),
        sa.Column("acquisition_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("upo", sa.LargeBinary(), nullable=True),
        sa.Column("ksef_code", sa.Integer(), nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sales_invoice"),
        sa.UniqueConstraint("client_nip", "idempotency_key", name="uq_sales_invoice_client_nip_idempotency_key"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_sales_invoice_status_next_attempt_at", "sales_invoice", ["status", "next_attempt_at"], schema=SCHEMA
    )
    op.create_index(
        "ix_sales_invoice_client_nip_invoice_hash", "sales_invoice", ["client_nip", "invoice_hash"], schema=SCHEMA
    )
    op.create_index(
        "ix_sales_invoice_client_nip_created_at_id", "sales_invoice", ["client_nip", "created_at", "id"], schema=SCHEMA
    )
    op.create_table(
        "sales_invoice_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("invoice_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sales_invoice_history"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_sales_invoice_history_invoice_id_id", "sales_invoice_history", ["invoice_id", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("ix_sales_invoice_history_invoice_id_id", "sales_invoice_history", schema=SCHEMA)
    op.drop_table("sales_invoice_history", schema=SCHEMA)
    op.drop_index("ix_sales_invoice_client_nip_created_at_id", "sales_invoice", schema=SCHEMA)
    op.drop_index("ix_sales_invoice_client_nip_invoice_hash", "sales_invoice", schema=SCHEMA)
    op.drop_index("ix_sales_invoice_status_next_attempt_at", "sales_invoice", schema=SCHEMA)
    op.drop_table("sales_invoice", schema=SCHEMA)
