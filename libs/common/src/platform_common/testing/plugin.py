"""Fixtures for the real PostgreSQL and Kafka that ``scripts/infra.sh`` starts (``make test`` does it).

Tests that need them fail loudly when they are not configured: a suite that silently skips its integration
tests would pass while testing nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from platform_common.testing.pg import temporary_database

PG_ENV = "KSEF_HUB_TEST_PG_DSN"
KAFKA_ENV = "KSEF_HUB_TEST_KAFKA_BOOTSTRAP"


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set. Start the test infrastructure with `scripts/infra.sh up` and "
            f'`eval "$(scripts/infra.sh env)"`, or run `make test`, which does both.',
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def pg_admin_url() -> URL:
    return make_url(_required_env(PG_ENV))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _required_env(KAFKA_ENV)


@pytest.fixture
def pg_url(pg_admin_url: URL) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    Synchronous on purpose, so any test or fixture, sync or async, can depend on it or request it with
    ``getfixturevalue``.
    """
    with temporary_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("pg_url"))
