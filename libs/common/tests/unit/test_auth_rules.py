"""The every-endpoint-has-a-rule check."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles

from platform_common.app import create_service_app
from platform_common.auth import CurrentPrincipal, Principal, authenticated, internal, public, require
from platform_common.auth.rules import AuthRule, RuleKind, endpoints, mark
from platform_common.db import make_metadata
from platform_common.messaging.tables import add_messaging_tables
from platform_common.runtime import ServiceDefinition
from platform_common.settings import ServiceSettings
from platform_common.testing.auth import assert_every_route_has_a_rule


def covered_app() -> FastAPI:
    app = FastAPI()

    @app.get("/open", dependencies=[Depends(public("because"))])
    async def open_endpoint() -> None: ...

    @app.get("/me")
    async def me(p: CurrentPrincipal) -> None: ...

    @app.get("/clients/{nip}")
    async def client(
        nip: str, p: Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]
    ) -> None: ...

    @app.post("/internal/x", dependencies=[Depends(internal())])
    async def x() -> None: ...

    guarded = APIRouter(dependencies=[Depends(require("ops"))])

    @guarded.get("/ops/stats")
    async def stats() -> None: ...

    app.include_router(guarded)
    return app


def test_a_covered_app_passes_and_the_rules_are_listed() -> None:
    found = {e.path: e for e in assert_every_route_has_a_rule(covered_app())}
    assert [r.kind for r in found["/open"].rules] == [RuleKind.PUBLIC]
    assert found["/open"].rules[0].reason == "because"
    assert RuleKind.AUTHENTICATED in {r.kind for r in found["/me"].rules}
    assert str(found["/clients/{nip}"].rules[0]) == "requires buffer.read, client NIP from 'nip'"
    assert found["/internal/x"].rules[0].kind is RuleKind.INTERNAL
    assert found["/ops/stats"].rules[0].permission == "ops", "router-level dependencies count"
    assert found["/docs"].rules[0].kind is RuleKind.PUBLIC, "FastAPI's own docs routes are public"


def test_an_endpoint_without_a_rule_fails_by_name() -> None:
    app = covered_app()

    @app.get("/leaky")
    async def leaky() -> None: ...

    @app.get("/helper-is-not-a-rule")
    async def helper(value: Annotated[int, Depends(lambda: 1)]) -> None: ...

    with pytest.raises(AssertionError) as failure:
        assert_every_route_has_a_rule(app)
    message = str(failure.value)
    assert "GET /leaky (leaky)" in message
    assert "GET /helper-is-not-a-rule" in message
    assert "/me" not in message


def test_mounted_apps_are_walked_with_their_prefix() -> None:
    root = FastAPI()
    sub = FastAPI()

    @sub.get("/fine")
    async def fine(p: Annotated[Principal, Depends(authenticated)]) -> None: ...

    @sub.get("/bare")
    async def bare() -> None: ...

    root.mount("/svc", sub)
    with pytest.raises(AssertionError, match=r"GET /svc/bare \(bare\)"):
        assert_every_route_has_a_rule(root)


def test_opaque_routes_need_an_exemption(tmp_path: object) -> None:
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=str(tmp_path)))

    async def plain(_request: object) -> PlainTextResponse:
        return PlainTextResponse("x")

    app.add_route("/plain", plain)
    with pytest.raises(AssertionError, match="cannot carry dependencies") as failure:
        assert_every_route_has_a_rule(app)
    assert "/static/{path}" in str(failure.value) and "/plain" in str(failure.value)
    assert_every_route_has_a_rule(app, exempt={"/static/{path}": "public assets", "/plain": "test"})


def test_a_client_nip_param_the_endpoint_lacks_is_reported() -> None:
    app = FastAPI()

    @app.get("/clients/{client_nip}")
    async def typo(
        client_nip: str, p: Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]
    ) -> None: ...

    with pytest.raises(AssertionError, match="client_nip_param 'nip' is not a path or query parameter"):
        assert_every_route_has_a_rule(app)


def own_principal() -> str:
    return "me"


mark(own_principal, AuthRule(RuleKind.AUTHENTICATED))


def test_a_service_with_its_own_verification_marks_its_dependencies() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x(p: Annotated[str, Depends(own_principal)]) -> None: ...

    assert [e.rules for e in endpoints(app) if e.path == "/x"] == [(AuthRule(RuleKind.AUTHENTICATED),)]


def test_the_shared_health_endpoints_are_public(tmp_path: object) -> None:
    definition = ServiceDefinition(
        name="t-svc",
        schema="t",
        metadata=(metadata := make_metadata("t")),
        tables=add_messaging_tables(metadata),
        migrations="unused:migrations",
    )
    app = create_service_app(definition, ServiceSettings(messaging={"transport": "inprocess"}))
    found = {e.path: e for e in assert_every_route_has_a_rule(app)}
    assert found["/healthz"].rules[0].kind is RuleKind.PUBLIC
    assert found["/readyz"].rules[0].kind is RuleKind.PUBLIC


OPS_ENDPOINTS = {"/ops/messaging", "/ops/dead-letters", "/ops/dead-letters/{dead_letter_id}/replay"}


def test_every_service_app_has_the_messaging_endpoints_behind_the_ops_permission() -> None:
    definition = ServiceDefinition(
        name="t-svc",
        schema="t",
        metadata=(metadata := make_metadata("t")),
        tables=add_messaging_tables(metadata),
        migrations="unused:migrations",
    )
    app = create_service_app(definition, ServiceSettings(messaging={"transport": "inprocess"}))
    found = {e.path: e for e in assert_every_route_has_a_rule(app) if e.path in OPS_ENDPOINTS}
    assert found.keys() == OPS_ENDPOINTS
    for endpoint in found.values():
        assert AuthRule(RuleKind.PERMISSION, permission="ops") in endpoint.rules, endpoint


def test_a_service_with_its_own_verification_gives_its_own_operator_dependency() -> None:
    def own_ops() -> None: ...

    mark(own_ops, AuthRule(RuleKind.PERMISSION, permission="ops"))
    definition = ServiceDefinition(
        name="issuer",
        schema="t",
        metadata=(metadata := make_metadata("t")),
        tables=add_messaging_tables(metadata),
        migrations="unused:migrations",
        operator=own_ops,
    )
    app = create_service_app(definition, ServiceSettings(messaging={"transport": "inprocess"}))
    [messaging] = [e for e in endpoints(app) if e.path == "/ops/messaging"]
    assert messaging.rules == (AuthRule(RuleKind.PERMISSION, permission="ops"),)
