"""Every service on the platform: migrations round trip, and health on SQLite in-process and PostgreSQL + Kafka.

Driven by the embedded runner's service list, so a service added there is checked here too.
"""

from __future__ import annotations

import pytest

from ksef_hub.embedded import SERVICES, EmbeddedService
from platform_common.testing.service_checks import (
    assert_migrations_round_trip,
    assert_service_is_healthy,
    service_settings,
)

each_service = pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])


@each_service
async def test_migrations_upgrade_from_empty_and_downgrade_back(service: EmbeddedService, db_url: str) -> None:
    await assert_migrations_round_trip(service.definition, db_url)


@each_service
async def test_ready_embedded_on_sqlite(service: EmbeddedService, sqlite_url: str) -> None:
    await assert_service_is_healthy(service.create_app, service_settings(service.settings_cls, sqlite_url, None))


@each_service
@pytest.mark.postgres
@pytest.mark.kafka
async def test_ready_distributed_on_postgres_and_kafka(
    service: EmbeddedService, pg_url: str, kafka_bootstrap: str
) -> None:
    settings = service_settings(service.settings_cls, pg_url, kafka_bootstrap)
    await assert_service_is_healthy(service.create_app, settings)
