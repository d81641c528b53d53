"""Every endpoint of auth-svc has an explicit auth rule, and the open ones are exactly the deliberate list.

auth-svc verifies credentials itself (it is the issuer), but its dependencies carry the same markers as
``platform_common.auth``'s, so the shared check applies to it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from auth_svc.main import create_app
from auth_svc.testing import settings_for_tests
from platform_common.auth.rules import Endpoint, RuleKind
from platform_common.testing.auth import assert_every_route_has_a_rule

# Authenticated by what the body carries (or nothing secret to protect); anything else open is a bug.
PUBLIC = {
    ("POST", "/login"),
    ("POST", "/token/refresh"),
    ("POST", "/logout"),
    ("POST", "/oauth/token"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/invitations/accept"),
    ("POST", "/password-reset"),
    ("POST", "/password-reset/confirm"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),  # admitted by the scrape token the handler checks (platform_common.metrics)
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(settings_for_tests(f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"))


def _routes(found: list[Endpoint]) -> dict[tuple[str, str], Endpoint]:
    return {(m, e.path): e for e in found for m in e.methods if m != "HEAD"}


class TestRouteRules:
    def test_every_endpoint_has_an_auth_rule(self, app: FastAPI) -> None:
        assert_every_route_has_a_rule(app)

    def test_only_the_deliberate_endpoints_are_public(self, app: FastAPI) -> None:
        routes = _routes(assert_every_route_has_a_rule(app))
        open_ = {key for key, e in routes.items() if all(r.kind is RuleKind.PUBLIC for r in e.rules)}
        assert open_ == PUBLIC
        # A public marker next to a credential rule would be a contradiction: one or the other.
        mixed = [key for key, e in routes.items() if len({r.kind is RuleKind.PUBLIC for r in e.rules}) > 1]
        assert not mixed

    def test_internal_and_operator_endpoints_say_so(self, app: FastAPI) -> None:
        routes = _routes(assert_every_route_has_a_rule(app))
        internal = {k for k in routes if k[1].startswith("/internal/")}
        admin = {k for k in routes if k[1].startswith("/admin/")}
        assert internal == {("POST", "/internal/introspect"), ("PUT", "/internal/relations")}
        assert admin == {("GET", "/admin/signing-keys"), ("POST", "/admin/signing-keys/rotate")}
        for key in internal:
            assert RuleKind.INTERNAL in {r.kind for r in routes[key].rules}, key
        for key in admin:
            assert any(r.kind is RuleKind.PERMISSION and r.permission == "ops" for r in routes[key].rules), key
