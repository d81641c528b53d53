"""The gateway's migrations build exactly the tables db.py describes, and tear them down again (SQLite and
PostgreSQL): the schema-drift check every service runs on itself."""

from __future__ import annotations

from ksef_gateway.main import DEFINITION
from platform_common.testing.service_checks import assert_migrations_round_trip


async def test_migrations_round_trip_without_drift(db_url: str) -> None:
    await assert_migrations_round_trip(DEFINITION, db_url)
