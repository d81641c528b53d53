"""Office-client integrations: the consent and activation-code handshake and the lifecycle after it.

Revision ID: approval_0002
Revises: approval_0001
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "approval_0002"
down_revision: str | None = "approval_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "approval"


def upgrade() -> None:
    op.create_table(
        "integration",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("office_id", sa.Uuid(), nullable=False),
        sa.Column("office_nip", sa.String(10), nullable=False),
        sa.Column("office_name", sa.String(200), nullable=False),
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("client_name", sa.String(200), nullable=True),
        sa.Column("client_email", sa.String(320), nullable=False),
        sa.Column("client_language", sa.String(2), nullable=False),
        sa.Column("return_email", sa.String(320), nullable=False),
        sa.Column("return_language", sa.String(2), nullable=False),
        sa.Column("send_sales", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("access_mode", sa.String(8), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("consented_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consented_by", sa.String(320), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("activated_by", sa.String(64), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(320), nullable=True),
        sa.Column("suspended_by_side", sa.String(8), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consent_token_hash", sa.String(64), nullable=True),
        sa.Column("consent_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_salt", sa.String(32), nullable=True),
        sa.Column("code_hash", sa.String(64), nullable=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_attempts", sa.Integer(), nullable=False),
        sa.Column("access_status", sa.String(12), nullable=True),
        sa.Column("access_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("access_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_integration"),
        sa.UniqueConstraint("office_id", "client_nip", name="uq_integration_office_id_client_nip"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_integration_consent_token_hash", "integration", ["consent_token_hash"], unique=True, schema=SCHEMA
    )
    op.create_index("ix_integration_client_nip", "integration", ["client_nip"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_integration_client_nip", "integration", schema=SCHEMA)
    op.drop_index("ix_integration_consent_token_hash", "integration", schema=SCHEMA)
    op.drop_table("integration", schema=SCHEMA)
