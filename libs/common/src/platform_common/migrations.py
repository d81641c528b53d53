"""Alembic, one migration tree per service, scoped to the service's schema; the same tree runs on SQLite.

A service's ``migrations/env.py`` is two lines: ``run_migrations(metadata, default_url=...)``. Migrations are a
separate step in production (``<service> migrate``, a Kubernetes Job); only the embedded runner migrates on
start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from platform_common.messaging.tables import OUTBOX_LANES


def alembic_config(script_location: str, url: str, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s")
    cfg.attributes["schema"] = schema
    return cfg


def upgrade(script_location: str, url: str, schema: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(script_location, url, schema), revision)


def downgrade(script_location: str, url: str, schema: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(script_location, url, schema), revision)


async def upgrade_async(script_location: str, url: str, schema: str) -> None:
    # env.py drives its own event loop, so it runs in a worker thread when called from async code.
    await asyncio.to_thread(upgrade, script_location, url, schema)


def _configure(connection: Connection, metadata: MetaData) -> dict[str, Any]:
    schema = metadata.schema
    if connection.dialect.name == "sqlite":
        connection = connection.execution_options(schema_translate_map={schema: None})
        return {"connection": connection, "target_metadata": metadata, "render_as_batch": True}

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table":
            return bool(obj.schema == schema)
        return True

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return name == schema if type_ == "schema" else True

    return {
        "connection": connection,
        "target_metadata": metadata,
        "version_table_schema": schema,
        "include_schemas": True,
        "include_object": include_object,
        "include_name": include_name,
    }


def _run_sync(connection: Connection, metadata: MetaData) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{metadata.schema}"'))
    opts = _configure(connection, metadata)
    context.configure(**opts)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(metadata: MetaData, *, default_url: Callable[[], str]) -> None:
    """Body of every service's env.py (online mode only: migrations always run against a database)."""
    url = context.config.get_main_option("sqlalchemy.url") or default_url()

    async def _main() -> None:
        engine = create_async_engine(make_url(url), poolclass=pool.NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_run_sync, metadata)
        finally:
            await engine.dispose()

    asyncio.run(_main())


async def schema_drift(url: str, metadata: MetaData) -> list[Any]:
    """Differences between the migrated database and the models (empty when migrations are complete)."""
    from alembic.autogenerate import compare_metadata

    def _compare(connection: Connection) -> list[Any]:
        target = metadata
        if connection.dialect.name == "sqlite":
            # SQLite reflects no schema: compare with the same tables moved out of the service's schema.
            target = MetaData(naming_convention=metadata.naming_convention)
            for table in metadata.tables.values():
                # Foreign keys follow their tables out of the schema too.
                table.to_metadata(
                    target,
                    schema=None,  # type: ignore[arg-type]  # None = no schema
                    referred_schema_fn=lambda *_: sa.schema.BLANK_SCHEMA,  # type: ignore[arg-type]
                )
        opts = _configure(connection, metadata)
        mc = MigrationContext.configure(
            connection=opts.pop("connection"), opts={k: v for k, v in opts.items() if k != "target_metadata"}
        )
        return list(compare_metadata(mc, target))

    engine = create_async_engine(make_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_compare)
    finally:
        await engine.dispose()


def create_messaging_tables_v1(schema: str) -> None:
    """Migration step shared by every service's first revision. Frozen: later changes get a new function."""
    from alembic import op
    from sqlalchemy.dialects.postgresql import JSONB

    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "outbox_message",
        sa.Column("seq", big_id, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("lane", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("headers", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox_message"),
        sa.UniqueConstraint("event_id", name="uq_outbox_message_event_id"),
        schema=schema,
    )
    op.create_index(
        "ix_outbox_message_pending",
        "outbox_message",
        ["lane", "seq"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    op.create_index("ix_outbox_message_published_at", "outbox_message", ["published_at"], schema=schema)
    lane_table = op.create_table(
        "outbox_lane",
        sa.Column("lane", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("lane", name="pk_outbox_lane"),
        schema=schema,
    )
    op.bulk_insert(lane_table, [{"lane": lane} for lane in range(OUTBOX_LANES)])
    op.create_table(
        "inbox_message",
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox_message"),
        schema=schema,
    )
    op.create_table(
        "dead_letter",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=True),
        sa.Column("message_key", sa.String(200), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letter"),
        schema=schema,
    )
    op.create_index(
        "uq_dead_letter_pending",
        "dead_letter",
        ["consumer", "event_id"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("replayed_at IS NULL"),
        sqlite_where=sa.text("replayed_at IS NULL"),
    )


def drop_messaging_tables_v1(schema: str) -> None:
    from alembic import op

    for table in ("dead_letter", "inbox_message", "outbox_lane", "outbox_message"):
        op.drop_table(table, schema=schema)


def create_client_access_v1(schema: str) -> None:
    """The client-access projection (``platform_common.client_access``) of a service. Frozen like the above."""
    from alembic import op

    op.create_table(
        "client_access",
        sa.Column("office_id", sa.Uuid(), nullable=False),
        sa.Column("client_nip", sa.String(10), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("office_id", "client_nip", name="pk_client_access"),
        schema=schema,
    )


def drop_client_access_v1(schema: str) -> None:
    from alembic import op

    op.drop_table("client_access", schema=schema)
