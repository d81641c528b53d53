"""Month approval: the client's months and the projection of buffer-svc's entries; the client-access projection.

Revision ID: approval_0003
Revises: approval_0002
Create Date: 2026-12-06 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from platform_common.db import UtcDateTime
from platform_common.migrations import create_client_access_v1, drop_client_access_v1

revision: str = "approval_0003"
down_revision: str | None = "approval_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "approval"


def upgrade() -> None:
    create_client_access_v1(SCHEMA)
    op.create_table(
        "month",
        sa.Column("client_nip", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("approved_at", UtcDateTime(), nullable=True),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("unlocked_at", UtcDateTime(), nullable=True),
        sa.Column("unlocked_by", sa.String(length=64), nullable=True),
        sa.Column("late_arrivals", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", "period", name=op.f("pk_month")),
        schema=SCHEMA,
    )
    op.create_table(
        "month_entry",
        sa.Column("client_nip", sa.String(length=10), nullable=False),
        sa.Column("ksef_number", sa.String(length=36), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("decision", sa.String(length=12), nullable=False),
        sa.Column("imported", sa.Boolean(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_nip", "ksef_number", name=op.f("pk_month_entry")),
        schema=SCHEMA,
    )
    op.create_index(
        op.f("ix_month_entry_client_nip_period"), "month_entry", ["client_nip", "period"], unique=False, schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_index("ix_month_entry_client_nip_period", table_name="month_entry", schema=SCHEMA)
    op.drop_table("month_entry", schema=SCHEMA)
    op.drop_table("month", schema=SCHEMA)
    drop_client_access_v1(SCHEMA)
