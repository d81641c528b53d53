"""No password, token, API key, secret or TOTP seed may reach a log line."""

from __future__ import annotations

import logging

import pyotp
import pytest

from auth_svc.testing import PASSWORD, SERVICE_SECRET, AuthHarness, harness_fixture
from platform_common.auth.api_keys import parse_api_key

pytestmark = pytest.mark.postgres
h = harness_fixture()


async def test_secret_values_never_appear_in_logs(h: AuthHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [PASSWORD, SERVICE_SECRET, "wrong password!"]

    await h.login("a_admin", password="wrong password!")
    pair = (await h.login("a_admin")).json()
    secrets += [pair["access_token"], pair["refresh_token"]]
    rotated = (await h.client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    secrets += [rotated["access_token"], rotated["refresh_token"]]
    await h.client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse: logged warning

    headers = {"Authorization": f"Bearer {rotated['access_token']}"}
    key = (
        await h.client.post(
            f"/organisations/{h.world.orgs['A']}/api-keys",
            json={"name": "erp", "perms": ["ksef.read"]},
            headers=headers,
        )
    ).json()["key"]
    secrets += [key, parse_api_key(key).secret]
    await h.client.get("/me", headers={"X-API-Key": key})
    service = await h.service_headers()
    secrets.append(service["Authorization"].removeprefix("Bearer "))
    await h.client.post("/internal/introspect", json={"api_key": key}, headers=service)

    headers = await h.headers("c_owner")
    seed = (await h.client.post("/me/totp", headers=headers)).json()["secret"]
    code = pyotp.TOTP(seed).at(h.clock())
    await h.client.post("/me/totp/confirm", json={"code": code}, headers=headers)
    secrets += [seed]
    await h.client.post("/password-reset", json={"email": h.world.emails["c_member"]})
    await h.client.post(
        f"/organisations/{h.world.orgs['C']}/members",
        json={"email": "new@example.com", "role": "client_member"},
        headers=headers,
    )
    for topic in ("user.password_reset_requested", "user.invited"):
        (event,) = await h.events(topic)
        secrets += [h.link_token(event), event["payload"]["sealed_link"]]
    for _ in range(5):
        await h.login("c_member", password="wrong password!")
    await h.client.post("/login", json={"email": "x@example.com", "password": "another secret value"})
    secrets.append("another secret value")

    text = "\n".join(
        [caplog.text]
        + [str(record.args) for record in caplog.records]
        + [repr(getattr(record, "msg", "")) for record in caplog.records]
    )
    assert caplog.records, "nothing was logged at all: the capture is not working"
    leaked = [s[:12] + "..." for s in secrets if s in text]
    assert not leaked, leaked
