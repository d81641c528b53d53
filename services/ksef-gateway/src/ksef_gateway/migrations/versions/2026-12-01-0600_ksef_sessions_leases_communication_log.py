"""KSeF sessions, context leases and the communication log.

Revision ID: gateway_0002
Revises: gateway_0001
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "gateway_0002"
down_revision: str | None = "gateway_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    op.create_table(
        "context_lease",
        sa.Column("context_nip", sa.String(10), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("context_nip", name="pk_context_lease"),
        schema=SCHEMA,
    )
    op.create_index("ix_context_lease_holder", "context_lease", ["holder"], schema=SCHEMA)
    op.create_table(
        "communication_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("context_nip", sa.String(10), nullable=True),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("reference_numbers", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("error_codes", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("replica_id", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_communication_log"),
        schema=SCHEMA,
    )
    op.create_index("ix_communication_log_context_nip_id", "communication_log", ["context_nip", "id"], schema=SCHEMA)
    op.create_index("ix_communication_log_at", "communication_log", ["at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_index("ix_communication_log_at", "communication_log", schema=SCHEMA)
    op.drop_index("ix_communication_log_context_nip_id", "communication_log", schema=SCHEMA)
    op.drop_table("communication_log", schema=SCHEMA)
    op.drop_index("ix_context_lease_holder", "context_lease", schema=SCHEMA)
    op.drop_table("context_lease", schema=SCHEMA)
