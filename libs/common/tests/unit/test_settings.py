from __future__ import annotations

import pydantic
import pytest

from platform_common.settings import ServiceSettings, service_config


class ExampleSettings(ServiceSettings):
    model_config = service_config("EXAMPLE_")


def test_nested_sections_read_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_DB__URL", "postgresql+asyncpg://u:p@127.0.0.1:5432/db")
    monkeypatch.setenv("EXAMPLE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("EXAMPLE_MESSAGING__MAX_ATTEMPTS", "9")
    monkeypatch.setenv("OTHER_DB__URL", "sqlite+aiosqlite:///ignored.db")

    s = ExampleSettings()

    assert s.db.url.get_secret_value() == "postgresql+asyncpg://u:p@127.0.0.1:5432/db"
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.messaging.max_attempts == 9


def test_the_database_url_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_DB__URL", "postgresql+asyncpg://u:hunter2@db/x")
    s = ExampleSettings()
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()


def test_production_refuses_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_ENVIRONMENT", "production")
    with pytest.raises(pydantic.ValidationError, match="production needs PostgreSQL"):
        ExampleSettings()


def test_invalid_values_fail_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_MESSAGING__TRANSPORT", "carrier-pigeon")
    with pytest.raises(pydantic.ValidationError):
        ExampleSettings()
