"""Purchase invoices and per-client sync state.

Revision ID: gateway_0004
Revises: gateway_0003
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "gateway_0004"
down_revision: str | None = "gateway_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "purchase_invoice",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("ksef_number", sa.String(36), nullable=False),
        sa.Column("subject_type", sa.String(20), nullable=False),
        sa.Column("form", sa.String(16), nullable=False),
        sa.Column("invoice_number", sa.String(256), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("seller_nip", sa.String(20), nullable=False),
        sa.Column("seller_name", sa.String(512), nullable=True),
        sa.Column("buyer_identifier_type", sa.String(16), nullable=False),
        sa.Column("buyer_identifier", sa.String(64), nullable=True),
        sa.Column("buyer_name", sa.String(512), nullable=True),
        sa.Column("third_subjects", _JSON, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("net_amount", sa.Numeric(18, 2), nullable=False),
        sa.Column("vat_amount", sa.Numeric(18, 2), nullable=False),
        sa.Column("gross_amount", sa.Numeric(18, 2), nullable=False),
        sa.Column("vat_amount_pln", sa.Numeric(18, 2), nullable=False),
        sa.Column("invoice_type", sa.String(8), nullable=False),
        sa.Column("corrected_ksef_number", sa.String(36), nullable=True),
        sa.Column("corrected_invoice_number", sa.String(256), nullable=True),
        sa.Column("corrected_invoices", _JSON, nullable=False),
        sa.Column("invoice_hash", sa.String(44), nullable=False),
        sa.Column("xml", sa.LargeBinary(), nullable=False),
        sa.Column("xml_size", sa.Integer(), nullable=False),
        sa.Column("acquisition_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("permanent_storage_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invoicing_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_via", sa.String(16), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", "ksef_number", name="pk_purchase_invoice"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_purchase_invoice_client_nip_acquisition_date_ksef_number",
        "purchase_invoice",
        ["client_nip", "acquisition_date", "ksef_number"],
        schema=SCHEMA,
    )
    op.create_table(
        "sync_client",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("month_close_day", sa.Integer(), nullable=True),
        sa.Column("backfill_months", sa.Integer(), nullable=True),
        sa.Column("fetch_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fetch_requested_by", sa.String(200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", name="pk_sync_client"),
        schema=SCHEMA,
    )
    op.create_table(
        "sync_state",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("subject_type", sa.String(20), nullable=False),
        sa.Column("checkpoint", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hwm", sa.DateTime(timezone=True), nullable=True),
        sa.Column("backfilled", sa.Boolean(), nullable=False),
        sa.Column("last_delta", sa.Integer(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("export_reference", sa.String(36), nullable=True),
        sa.Column("export_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_key", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", "subject_type", name="pk_sync_state"),
        schema=SCHEMA,
    )
    op.create_index("ix_sync_state_next_run_at", "sync_state", ["next_run_at"], schema=SCHEMA)
    op.create_table(
        "sync_rejection",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("ksef_number", sa.String(36), nullable=False),
        sa.Column("subject_type", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("given_up", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", "ksef_number", name="pk_sync_rejection"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("sync_rejection", schema=SCHEMA)
    op.drop_index("ix_sync_state_next_run_at", "sync_state", schema=SCHEMA)
    op.drop_table("sync_state", schema=SCHEMA)
    op.drop_table("sync_client", schema=SCHEMA)
    op.drop_index("ix_purchase_invoice_client_nip_acquisition_date_ksef_number", "purchase_invoice", schema=SCHEMA)
    op.drop_table("purchase_invoice", schema=SCHEMA)
