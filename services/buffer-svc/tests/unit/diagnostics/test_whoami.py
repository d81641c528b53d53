"""``GET /clients/{nip}/whoami`` through the shared verification, against a fake auth-svc (TokenFactory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from buffer_svc.main import create_app
from buffer_svc.settings import BufferSettings
from platform_common.auth import Authenticator
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

C, D = "7777777702", "1112223303"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, TokenFactory]]:
    clock = FakeClock()
    tokens = TokenFactory(clock=clock)
    settings = BufferSettings(
        db=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
    )
    app = create_app(settings, migrate_on_start=True)
    authenticator: Authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = clock, tokens.transport()
    async with LifespanManager(app):
        await open_clients(app, C)  # the office of the tokens below works for C, not for D
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://buffer") as c:
            yield c, tokens


async def test_answers_who_the_caller_is_for_the_client(client: tuple[httpx.AsyncClient, TokenFactory]) -> None:
    c, tokens = client
    token = tokens.mint(sub="u-1", roles=["client_owner"], perms=["buffer.read", "ksef.send"], nips=[C])
    r = await c.get(f"/clients/{C}/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "client_nip": C,
        "caller": {
            "id": "u-1",
            "ptype": "user",
            "org": "00000000-0000-4000-8000-0000000000aa",
            "org_kind": "office",
            "roles": ["client_owner"],
            "perms": ["buffer.read"],
            "nips": [C],
        },
    }


@pytest.mark.parametrize(
    ("perms", "nips", "status"),
    [
        (["buffer.read"], [C], 200),
        (["buffer.read"], ["*"], 200),
        (["ksef.read"], [C], 403),
        (["buffer.read"], [D], 404),
        (["ksef.read"], [D], 404),
    ],
)
async def test_rules(
    client: tuple[httpx.AsyncClient, TokenFactory], perms: list[str], nips: list[str], status: int
) -> None:
    c, tokens = client
    token = tokens.mint(perms=perms, nips=nips)
    assert (await c.get(f"/clients/{C}/whoami", headers={"Authorization": f"Bearer {token}"})).status_code == status


async def test_without_credentials_401(client: tuple[httpx.AsyncClient, TokenFactory]) -> None:
    c, _tokens = client
    r = await c.get(f"/clients/{C}/whoami")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
