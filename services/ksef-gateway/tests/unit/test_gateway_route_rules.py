"""Every endpoint of ksef-gateway has an explicit auth rule (require, internal, authenticated or public)."""

from __future__ import annotations

from pathlib import Path

from ksef_gateway.main import create_app
from ksef_gateway.settings import GatewaySettings
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import assert_every_route_has_a_rule


def test_every_endpoint_has_an_auth_rule(tmp_path: Path) -> None:
    settings = GatewaySettings(
        db=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"),
        messaging=MessagingSettings(transport="inprocess"),
    )
    assert_every_route_has_a_rule(create_app(settings))
