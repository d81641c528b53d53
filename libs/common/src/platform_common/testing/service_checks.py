"""Checks every service runs on itself: migrations round trip, health and readiness, problem details."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from platform_common.app import AppFactory
from platform_common.migrations import downgrade, schema_drift, upgrade
from platform_common.runtime import ServiceDefinition
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings, ServiceSettings


async def _table_names(url: str, schema: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names(schema=None if sqlite else schema)))
    finally:
        await engine.dispose()


async def assert_migrations_round_trip(definition: ServiceDefinition, url: str) -> None:
    """Empty -> head -> no drift from the models -> base -> empty again."""
    await asyncio.to_thread(upgrade, definition.migrations, url, definition.schema)
    model_tables = {t.name for t in definition.metadata.sorted_tables}
    after_upgrade = await _table_names(url, definition.schema)
    assert model_tables <= after_upgrade, f"missing after upgrade: {model_tables - after_upgrade}"
    drift = await schema_drift(url, definition.metadata)
    assert drift == [], f"models and migrations differ: {drift}"

    await asyncio.to_thread(downgrade, definition.migrations, url, definition.schema)
    after_downgrade = await _table_names(url, definition.schema)
    assert after_downgrade <= {"alembic_version"}, f"left behind by downgrade: {after_downgrade}"
    # And up again: a downgrade must leave a database the migrations can rebuild.
    await asyncio.to_thread(upgrade, definition.migrations, url, definition.schema)
    assert model_tables <= await _table_names(url, definition.schema)


def service_settings(settings_cls: type[ServiceSettings], url: str, kafka_bootstrap: str | None) -> ServiceSettings:
    transport = "kafka" if kafka_bootstrap else "inprocess"
    return settings_cls(
        db=DatabaseSettings(url=url),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap or "127.0.0.1:1"),
        messaging=MessagingSettings(transport=transport),
    )


async def assert_service_is_healthy(create_app: AppFactory, settings: ServiceSettings) -> dict[str, Any]:
    """Start the app (migrating first), then check /healthz, /readyz and a problem-details 404."""
    app = create_app(settings, migrate_on_start=True)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            live = await client.get("/healthz")
            assert live.status_code == 200, live.text
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            body: dict[str, Any] = ready.json()
            assert body["checks"] == {"database": "ok", "transport": "ok", "outbox_relay": "ok"}
            missing = await client.get("/no-such-endpoint")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"
            assert missing.json()["status"] == 404
    return body
