"""Delegated access: the office certificate per office NIP and the delegated access record per client.

Revision ID: gateway_0006
Revises: gateway_0005
Create Date: 2026-12-05 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "gateway_0006"
down_revision: str | None = "gateway_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "office_certificate",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("office_nip", sa.String(10), nullable=False),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("certificate_fingerprint", sa.String(64), nullable=False),
        sa.Column("certificate_subject", sa.String(500), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_data_key", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_office_certificate"),
        sa.UniqueConstraint("office_nip", name="uq_office_certificate_office_nip"),
        schema=SCHEMA,
    )
    op.create_table(
        "delegated_access",
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("office_nip", sa.String(10), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("send_sales", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("ksef_code", sa.Integer(), nullable=True),
        sa.Column("permissions", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("check_error", sa.Text(), nullable=True),
        sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", name="pk_delegated_access"),
        schema=SCHEMA,
    )
    op.create_index("ix_delegated_access_next_check_at", "delegated_access", ["next_check_at"], schema=SCHEMA)
    op.create_index("ix_delegated_access_office_nip", "delegated_access", ["office_nip"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_delegated_access_office_nip", "delegated_access", schema=SCHEMA)
    op.drop_index("ix_delegated_access_next_check_at", "delegated_access", schema=SCHEMA)
    op.drop_table("delegated_access", schema=SCHEMA)
    op.drop_table("office_certificate", schema=SCHEMA)
