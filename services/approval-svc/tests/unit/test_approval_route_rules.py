"""Every endpoint of approval-svc has an explicit auth rule (require, internal, authenticated or public)."""

from __future__ import annotations

from pathlib import Path

from approval_svc.main import create_app
from approval_svc.settings import ApprovalSettings
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import assert_every_route_has_a_rule


def test_every_endpoint_has_an_auth_rule(tmp_path: Path) -> None:
    settings = ApprovalSettings(
        db=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"),
        messaging=MessagingSettings(transport="inprocess"),
    )
    assert_every_route_has_a_rule(create_app(settings))
