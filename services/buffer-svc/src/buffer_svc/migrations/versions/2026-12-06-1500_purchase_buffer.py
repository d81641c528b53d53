"""The purchase buffer: entries, month locks, the communication log and the access ledger.

Revision ID: buffer_0003
Revises: buffer_0002
Create Date: 2026-12-06 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from platform_common.db import UtcDateTime
from platform_common.messaging.tables import Json, SequenceId

revision: str = "buffer_0003"
down_revision: str | None = "buffer_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "buffer"


def upgrade() -> None:
    op.create_table(
        "access_ledger",
        sa.Column("id", SequenceId, autoincrement=True, nullable=False),
        sa.Column("client_nip", sa.String(length=10), nullable=False),
        sa.Column("principal_id", sa.String(length=64), nullable=False),
        sa.Column("principal_type", sa.String(length=8), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("org_kind", sa.String(length=8), nullable=True),
        sa.Column("action", sa.String(length=24), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_ledger")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_access_ledger_client_nip_id"), "access_ledger", ["client_nip", "id"], unique=False, schema=SCHEMA
    )
    op.create_table(
        "communication_log",
        sa.Column("id", SequenceId, autoincrement=True, nullable=False),
        sa.Column("client_nip", sa.String(length=10), nullable=False),
        sa.Column("entry_id", sa.Uuid(), nullable=True),
        sa.Column("ksef_number", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("actor_side", sa.String(length=8), nullable=True),
        sa.Column("detail", Json, nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_communication_log")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_communication_log_client_nip_id"),
        "communication_log",
        ["client_nip", "id"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_communication_log_entry_id_id"), "communication_log", ["entry_id", "id"], unique=False, schema=SCHEMA
    )
    op.create_table(
        "month_lock",
        sa.Column("client_nip", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
        sa.Column("changed_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("client_nip", "period", name=op.f("pk_month_lock")),
        schema=SCHEMA,
    )
    op.create_table(
        "purchase_entry",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("client_nip", sa.String(length=10), nullable=False),
        sa.Column("ksef_number", sa.String(length=36), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("subject_role", sa.String(length=20), nullable=False),
        sa.Column("seller_nip", sa.String(length=20), nullable=True),
        sa.Column("seller_name", sa.String(length=512), nullable=True),
        sa.Column("invoice_number", sa.String(length=256), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("acquisition_date", UtcDateTime(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("net_amount", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("vat_amount", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("gross_amount", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("vat_amount_pln", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("invoice_type", sa.String(length=8), nullable=False),
        sa.Column("corrected_ksef_number", sa.String(length=64), nullable=True),
        sa.Column("corrected_invoice_number", sa.String(length=256), nullable=True),
        sa.Column("invoice_hash", sa.String(length=44), nullable=False),
        sa.Column("xml_ref", sa.String(length=200), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("late_arrival", sa.Boolean(), nullable=False),
        sa.Column("decision", sa.String(length=12), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decided_by_side", sa.String(length=8), nullable=True),
        sa.Column("imported_at", UtcDateTime(), nullable=True),
        sa.Column("imported_by", sa.String(length=64), nullable=True),
        sa.Column("archived_at", UtcDateTime(), nullable=True),
        sa.Column("archived_by", sa.String(length=64), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_entry")),
        sa.UniqueConstraint("client_nip", "ksef_number", name=op.f("uq_purchase_entry_client_nip_ksef_number")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_purchase_entry_client_nip_acquisition_date_id"),
        "purchase_entry",
        ["client_nip", "acquisition_date", "id"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_purchase_entry_client_nip_period_issue_date_id"),
        "purchase_entry",
        ["client_nip", "period", "issue_date", "id"],
        unique=False,
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_purchase_entry_client_nip_seller_nip_decided_at"),
        "purchase_entry",
        ["client_nip", "seller_nip", "decided_at"],
        unique=False,
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("ix_purchase_entry_client_nip_seller_nip_decided_at", table_name="purchase_entry", schema=SCHEMA)
    op.drop_index("ix_purchase_entry_client_nip_period_issue_date_id", table_name="purchase_entry", schema=SCHEMA)
    op.drop_index("ix_purchase_entry_client_nip_acquisition_date_id", table_name="purchase_entry", schema=SCHEMA)
    op.drop_table("purchase_entry", schema=SCHEMA)
    op.drop_table("month_lock", schema=SCHEMA)
    op.drop_index("ix_communication_log_entry_id_id", table_name="communication_log", schema=SCHEMA)
    op.drop_index("ix_communication_log_client_nip_id", table_name="communication_log", schema=SCHEMA)
    op.drop_table("communication_log", schema=SCHEMA)
    op.drop_index("ix_access_ledger_client_nip_id", table_name="access_ledger", schema=SCHEMA)
    op.drop_table("access_ledger", schema=SCHEMA)
