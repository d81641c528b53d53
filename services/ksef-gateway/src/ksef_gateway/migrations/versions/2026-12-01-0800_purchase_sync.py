"""Purchase invoices and per-client sync state.

Revision ID: gateway_0004
Revises: gateway_0003
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

revision: str = "gateway_0004"
down_revision: str | None = "gateway_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
