"""The credential vault.

Revision ID: gateway_0003
Revises: gateway_0002
Create Date: 2026-12-01 07:00:00
"""

from collections.abc import Sequence

revision: str = "gateway_0003"
down_revision: str | None = "gateway_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
