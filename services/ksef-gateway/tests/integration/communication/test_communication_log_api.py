"""``GET /clients/{nip}/communication-log``: paged newest first, ``ksef.read`` for the client's own NIP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from ksef_gateway.ksef.client import CallRecord
from ksef_gateway.main import create_app
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.wiring import Gateway
from platform_common.auth import Authenticator
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import FakeClock, TokenFactory, open_clients

CLIENT, OTHER = "5265877635", "7352765225"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, TokenFactory, Gateway]]:
    clock = FakeClock()
    tokens = TokenFactory(clock=clock)
    settings = GatewaySettings(
        db=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}"),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
        data_dir=tmp_path,
    )
    app = create_app(settings, migrate_on_start=True)
    async with LifespanManager(app):
        await open_clients(app, CLIENT, OTHER)
        authenticator: Authenticator = app.state.authenticator
        authenticator.clock, authenticator.transport = clock, tokens.transport()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client, tokens, Gateway.of(app.state.runtime)
        await authenticator.aclose()


def record(nip: str, n: int) -> CallRecord:
    return CallRecord(
        environment="sim",
        context_nip=nip,
        operation="invoices.export" if n % 2 else "auth.refresh",
        http_status=400 if n == 3 else 200,
        outcome="failed" if n == 3 else "ok",
        reference_numbers=(f"20261201-EH-00000000{n:02d}-0000000000-00",),
        error_codes=(21182,) if n == 3 else (),
        description="Osiągnięto limit trwających eksportów." if n == 3 else None,
        duration_ms=10 + n,
        attempts=1,
        at=datetime(2026, 12, 1, 12, tzinfo=UTC) + timedelta(minutes=n),
    )


async def test_pages_newest_first_for_readers_of_that_client(
    api: tuple[httpx.AsyncClient, TokenFactory, Gateway],
) -> None:
    client, tokens, gateway = api
    for n in range(5):
        await gateway.communication_log.record(record(CLIENT, n))
    await gateway.communication_log.record(record(OTHER, 9))
    headers = {"Authorization": f"Bearer {tokens.mint(perms=['ksef.read'], nips=[CLIENT])}"}

    first = await client.get(f"/clients/{CLIENT}/communication-log", params={"limit": 3}, headers=headers)

    assert first.status_code == 200, first.text
    body = first.json()
    assert [i["duration_ms"] for i in body["items"]] == [14, 13, 12]
    failed = body["items"][1]
    assert (failed["operation"], failed["outcome"], failed["http_status"], failed["error_codes"]) == (
        "invoices.export",
        "failed",
        400,
        [21182],
    )
    assert failed["reference_numbers"] == ["20261201-EH-0000000003-0000000000-00"]
    rest = await client.get(
        f"/clients/{CLIENT}/communication-log",
        params={"limit": 3, "before_id": body["next_before_id"]},
        headers=headers,
    )
    assert [i["duration_ms"] for i in rest.json()["items"]] == [11, 10]
    assert rest.json()["next_before_id"] is None


@pytest.mark.parametrize(("perms", "nips", "status"), [(["buffer.read"], [CLIENT], 403), (["ksef.read"], [OTHER], 404)])
async def test_others_are_refused(
    api: tuple[httpx.AsyncClient, TokenFactory, Gateway], perms: list[str], nips: list[str], status: int
) -> None:
    client, tokens, _ = api
    headers = {"Authorization": f"Bearer {tokens.mint(perms=perms, nips=nips)}"}
    response = await client.get(f"/clients/{CLIENT}/communication-log", headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
