"""approval-svc on the platform: its migrations and its health, on SQLite in-process and PostgreSQL with Kafka."""

import pytest

from approval_svc.main import DEFINITION, create_app
from approval_svc.settings import ApprovalSettings
from platform_common.testing.service_checks import (
    assert_migrations_round_trip,
    assert_service_is_healthy,
    service_settings,
)


async def test_migrations_upgrade_from_empty_and_downgrade_back(db_url: str) -> None:
    await assert_migrations_round_trip(DEFINITION, db_url)


async def test_ready_embedded_on_sqlite(sqlite_url: str) -> None:
    await assert_service_is_healthy(create_app, service_settings(ApprovalSettings, sqlite_url, None))


@pytest.mark.postgres
@pytest.mark.kafka
async def test_ready_distributed_on_postgres_and_kafka(pg_url: str, kafka_bootstrap: str) -> None:
    await assert_service_is_healthy(create_app, service_settings(ApprovalSettings, pg_url, kafka_bootstrap))
