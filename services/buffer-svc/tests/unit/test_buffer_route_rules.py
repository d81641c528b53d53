"""Every endpoint of buffer-svc has an explicit auth rule (require, internal, authenticated or public)."""

from __future__ import annotations

from pathlib import Path

from buffer_svc.main import create_app
from buffer_svc.settings import BufferSettings
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import assert_every_route_has_a_rule


def test_every_endpoint_has_an_auth_rule(tmp_path: Path) -> None:
    settings = BufferSettings(
        db=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"),
        messaging=MessagingSettings(transport="inprocess"),
    )
    assert_every_route_has_a_rule(create_app(settings))
