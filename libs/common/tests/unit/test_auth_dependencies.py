"""The FastAPI dependencies end to end through an app: 401 / 403 / 404 / 503 as problem details."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy.exc import OperationalError

from platform_common.auth import (
    Authenticator,
    CurrentPrincipal,
    Principal,
    install_authenticator,
    install_client_access,
    internal,
    public,
    require,
)
from platform_common.auth.api_keys import parse_api_key
from platform_common.problems import install_problem_handlers
from platform_common.testing.auth import FakeClock, TokenFactory

C, D = "7777777702", "1112223303"
OFFICE = uuid.UUID("00000000-0000-4000-8000-0000000000aa")  # TokenFactory's default org


class OpenPairs:
    """A stand-in for a service's client-access projection: the (office, client) pairs active right now."""

    def __init__(self, *pairs: tuple[uuid.UUID, str]) -> None:
        self.pairs = set(pairs)
        self.down = False
        self.asked: list[tuple[uuid.UUID, str]] = []

    async def allows(self, office_id: uuid.UUID, client_nip: str) -> bool:
        self.asked.append((office_id, client_nip))
        if self.down:
            raise OperationalError("SELECT", {}, ConnectionRefusedError())
        return (office_id, client_nip) in self.pairs


Reader = Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]


def build_app(authenticator: Authenticator, gate: OpenPairs | None = None) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_authenticator(app, authenticator)
    if gate is not None:
        install_client_access(app, gate)
    router = APIRouter()

    @router.get("/open", dependencies=[Depends(public("test"))])
    async def open_endpoint() -> dict[str, str]:
        return {"ok": "yes"}

    @router.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return principal.summary()

    @router.get("/clients/{nip}/invoices")
    async def invoices(nip: str, principal: Reader) -> dict[str, str]:
        return {"nip": nip, "by": principal.id}

    @router.get("/search")
    async def search(principal: Reader, nip: str | None = None) -> dict[str, str | None]:
        return {"nip": nip}

    @router.post("/internal/ping")
    async def ping(principal: Annotated[Principal, Depends(internal())]) -> dict[str, str]:
        return {"caller": principal.id}

    app.include_router(router)
    return app


@pytest.fixture
def gate() -> OpenPairs:
    return OpenPairs((OFFICE, C), (OFFICE, D))


@pytest.fixture
async def client(authenticator: Authenticator, gate: OpenPairs) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(authenticator, gate))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestAuthentication:
    async def test_missing_credential_is_401_with_a_challenge(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/me")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"] == 'Bearer realm="ksef-hub"'
        assert r.json()["type"].endswith("/unauthenticated")

    @pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
    async def test_other_schemes_are_401(self, client: httpx.AsyncClient, header: str) -> None:
        r = await client.get("/me", headers={"Authorization": header})
        assert r.status_code == 401

    async def test_invalid_token_is_401_invalid_token(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        r = await client.get("/me", headers=bearer(tokens.forged()))
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.json()["type"].endswith("/invalid-credential")

    async def test_valid_token(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        r = await client.get("/me", headers=bearer(tokens.mint(sub="u-9", perms=["ksef.read"])))
        assert r.status_code == 200
        assert r.json()["id"] == "u-9"

    async def test_api_key_as_bearer_or_header(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        key = tokens.issue_api_key(sub="k-1", perms=["buffer.read"])
        assert (await client.get("/me", headers=bearer(key))).json()["ptype"] == "api_key"
        assert (await client.get("/me", headers={"X-API-Key": key})).json()["id"] == "k-1"

    async def test_public_needs_nothing(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/open")).status_code == 200

    async def test_auth_svc_down_is_503(self, tokens: TokenFactory, clock: FakeClock) -> None:
        def down(_request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        auth = Authenticator(tokens.settings(), service_name="t", clock=clock, transport=httpx.MockTransport(down))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(auth)), base_url="http://s") as c:
            r = await c.get("/me", headers=bearer(tokens.mint()))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"

    async def test_credentials_never_reach_the_logs(
        self, client: httpx.AsyncClient, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        token, forged, key = tokens.mint(), tokens.forged(), tokens.issue_api_key(perms=["x"])
        tokens.revoke_api_key(key)
        for credential in (token, forged, key, "khk_bad"):
            await client.get("/me", headers=bearer(credential))
        assert "authentication failed" in caplog.text
        for secret in (token, forged, key, parse_api_key(key).secret, token.split(".")[2]):
            assert secret not in caplog.text


class TestAuthorisation:
    async def test_permission_and_client(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        r = await client.get(f"/clients/{C}/invoices", headers=bearer(tokens.mint(perms=["buffer.read"], nips=[C])))
        assert r.status_code == 200

    async def test_missing_permission_is_403(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        r = await client.get(f"/clients/{C}/invoices", headers=bearer(tokens.mint(perms=["ksef.read"], nips=[C])))
        assert r.status_code == 403
        assert r.json()["permission"] == "buffer.read"
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]

    async def test_a_client_outside_the_token_is_404_even_without_the_permission(
        self, client: httpx.AsyncClient, tokens: TokenFactory
    ) -> None:
        for perms in (["buffer.read"], ["ksef.read"]):
            r = await client.get(f"/clients/{D}/invoices", headers=bearer(tokens.mint(perms=perms, nips=[C])))
            assert r.status_code == 404
            assert r.json()["type"].endswith("/not-found")

    async def test_star_reaches_every_client(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        r = await client.get(f"/clients/{D}/invoices", headers=bearer(tokens.mint(perms=["buffer.read"], nips=["*"])))
        assert r.status_code == 200

    async def test_the_client_nip_may_be_a_query_parameter(
        self, client: httpx.AsyncClient, tokens: TokenFactory
    ) -> None:
        headers = bearer(tokens.mint(perms=["buffer.read"], nips=[C]))
        assert (await client.get("/search", params={"nip": D}, headers=headers)).status_code == 404
        assert (await client.get("/search", params={"nip": C}, headers=headers)).status_code == 200
        assert (await client.get("/search", headers=headers)).status_code == 200

    async def test_api_key_scopes_apply(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        key = tokens.issue_api_key(perms=["buffer.read"], nips=[C])
        assert (await client.get(f"/clients/{C}/invoices", headers={"X-API-Key": key})).status_code == 200
        assert (await client.get(f"/clients/{D}/invoices", headers={"X-API-Key": key})).status_code == 404

    async def test_internal_is_for_service_tokens_only(self, client: httpx.AsyncClient, tokens: TokenFactory) -> None:
        service = tokens.mint(sub="buffer-svc", ptype="service", org=None, org_kind=None, perms=["internal"])
        user_with_internal = tokens.mint(perms=["internal", "ops"])
        assert (await client.post("/internal/ping", headers=bearer(service))).json() == {"caller": "buffer-svc"}
        assert (await client.post("/internal/ping", headers=bearer(user_with_internal))).status_code == 403
        assert (await client.post("/internal/ping")).status_code == 401


class TestLiveClientAccess:
    """An office's token names no clients; the live relation decides on every request."""

    async def test_an_office_reaches_a_client_only_while_the_relation_is_open(
        self, client: httpx.AsyncClient, tokens: TokenFactory, gate: OpenPairs
    ) -> None:
        headers = bearer(tokens.mint(perms=["buffer.read"], nips=["*"]))
        assert (await client.get(f"/clients/{C}/invoices", headers=headers)).status_code == 200
        gate.pairs.discard((OFFICE, C))  # the client revoked: the same token, the very next request
        r = await client.get(f"/clients/{C}/invoices", headers=headers)
        assert r.status_code == 404
        assert r.json()["type"].endswith("/not-found")
        assert (await client.get(f"/clients/{D}/invoices", headers=headers)).status_code == 200
        assert gate.asked[-1] == (OFFICE, D)

    async def test_another_office_is_not_let_in_by_a_pair_of_this_one(
        self, client: httpx.AsyncClient, tokens: TokenFactory
    ) -> None:
        other = str(uuid.uuid4())
        r = await client.get(
            f"/clients/{C}/invoices", headers=bearer(tokens.mint(org=other, perms=["buffer.read"], nips=["*"]))
        )
        assert r.status_code == 404

    async def test_a_query_parameter_nip_and_an_api_key_are_checked_live_too(
        self, client: httpx.AsyncClient, tokens: TokenFactory, gate: OpenPairs
    ) -> None:
        key = tokens.issue_api_key(perms=["buffer.read"], nips=["*"])
        gate.pairs.clear()
        assert (await client.get("/search", params={"nip": C}, headers={"X-API-Key": key})).status_code == 404
        assert (await client.get(f"/clients/{C}/invoices", headers={"X-API-Key": key})).status_code == 404

    async def test_the_relation_is_asked_before_the_permission(
        self, client: httpx.AsyncClient, tokens: TokenFactory, gate: OpenPairs
    ) -> None:
        gate.pairs.clear()
        r = await client.get(f"/clients/{C}/invoices", headers=bearer(tokens.mint(perms=["ksef.read"], nips=["*"])))
        assert r.status_code == 404  # not 403: a closed client must look like one that does not exist

    async def test_a_client_company_and_an_operator_are_not_asked(
        self, client: httpx.AsyncClient, tokens: TokenFactory, gate: OpenPairs
    ) -> None:
        gate.pairs.clear()
        company = tokens.mint(org=str(uuid.uuid4()), org_kind="client", perms=["buffer.read"], nips=[C])
        operator = tokens.mint(org=None, org_kind=None, perms=["buffer.read"], nips=["*"])
        assert (await client.get(f"/clients/{C}/invoices", headers=bearer(company))).status_code == 200
        assert (await client.get(f"/clients/{C}/invoices", headers=bearer(operator))).status_code == 200
        assert gate.asked == []

    async def test_the_projection_unreachable_is_503(
        self, client: httpx.AsyncClient, tokens: TokenFactory, gate: OpenPairs
    ) -> None:
        gate.down = True
        r = await client.get(f"/clients/{C}/invoices", headers=bearer(tokens.mint(perms=["buffer.read"], nips=["*"])))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert r.json()["type"].endswith("/access-unavailable")

    async def test_an_app_without_the_projection_refuses_offices(
        self, authenticator: Authenticator, tokens: TokenFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_app(authenticator)), base_url="http://s"
        ) as c:
            r = await c.get(f"/clients/{C}/invoices", headers=bearer(tokens.mint(perms=["buffer.read"], nips=["*"])))
        assert r.status_code == 404
        assert "no client-access projection" in caplog.text


def test_require_needs_a_permission_and_public_a_reason() -> None:
    with pytest.raises(ValueError, match="permission"):
        require("")
    with pytest.raises(ValueError, match="reason"):
        public("  ")
