"""KSeF sessions, context leases and the communication log.

Revision ID: gateway_0002
Revises: gateway_0001
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

revision: str = "gateway_0002"
down_revision: str | None = "gateway_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "gateway"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
