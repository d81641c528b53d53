"""Webhooks to ERP systems: subscriptions (secrets encrypted), the public events received, deliveries ordered per
client, the attempt log; and the client-access projection that decides which office's subscriptions hear of a client.

Revision ID: notify_0005
Revises: notify_0004
Create Date: 2026-12-07 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from platform_common.migrations import create_client_access_v1, drop_client_access_v1

revision: str = "notify_0005"
down_revision: str | None = "notify_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "notify"
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_client_access_v1(SCHEMA)
    op.create_table(
        "webhook_subscription",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organisation_id", sa.Uuid(), nullable=False),
        sa.Column("organisation_kind", sa.String(16), nullable=False),
        sa.Column("organisation_nips", JSON, nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(200), nullable=True),
        sa.Column("event_types", JSON, nullable=False),
        sa.Column("client_nips", JSON, nullable=True),
        sa.Column("contact_email", sa.String(320), nullable=False),
        sa.Column("language", sa.String(2), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("previous_secret_sealed", sa.Text(), nullable=True),
        sa.Column("previous_secret_until", TS, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_at", TS, nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_subscription"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_subscription_organisation_id", "webhook_subscription", ["organisation_id"], schema=SCHEMA
    )
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("event_version", sa.Integer(), nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("client_nip", sa.String(10), nullable=True),
        sa.Column("office_id", sa.Uuid(), nullable=True),
        sa.Column("organisation_id", sa.Uuid(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("test", sa.Boolean(), nullable=False, server_default=sa.text("false")),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_event"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_event_event_type_occurred_at", "webhook_event", ["event_type", "occurred_at"], schema=SCHEMA
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("ordering_key", sa.String(10), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("window_attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("window_started_at", TS, nullable=True),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_webhook_delivery"),
        sa.UniqueConstraint("id", name="uq_webhook_delivery_id"),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            [f"{SCHEMA}.webhook_subscription.id"],
            name="fk_webhook_delivery_subscription_id_webhook_subscription",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            [f"{SCHEMA}.webhook_event.id"],
            name="fk_webhook_delivery_event_id_webhook_event",
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_delivery_subscription_id_ordering_key_status_seq",
        "webhook_delivery",
        ["subscription_id", "ordering_key", "status", "seq"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_delivery_status_next_attempt_at", "webhook_delivery", ["status", "next_attempt_at"], schema=SCHEMA
    )
    op.create_index(
        "ix_webhook_delivery_subscription_id_event_id",
        "webhook_delivery",
        ["subscription_id", "event_id"],
        unique=True,
        schema=SCHEMA,
    )
    op.create_table(
        "webhook_attempt",
        sa.Column("delivery_seq", SEQ, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("delivery_seq", "attempt", name="pk_webhook_attempt"),
        sa.ForeignKeyConstraint(
            ["delivery_seq"],
            [f"{SCHEMA}.webhook_delivery.seq"],
            name="fk_webhook_attempt_delivery_seq_webhook_delivery",
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_webhook_attempt_subscription_id_at", "webhook_attempt", ["subscription_id", "at"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("webhook_attempt", schema=SCHEMA)
    op.drop_table("webhook_delivery", schema=SCHEMA)
    op.drop_table("webhook_event", schema=SCHEMA)
    op.drop_table("webhook_subscription", schema=SCHEMA)
    drop_client_access_v1(SCHEMA)
