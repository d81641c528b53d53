from __future__ import annotations

import jwt
import pyotp
import pytest

from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


class TestTotp:
    async def test_enrol_confirm_login_with_code_and_disable(self, h: AuthHarness) -> None:
        headers = await h.headers("c_owner")
        enrol = await h.client.post("/me/totp", headers=headers)
        assert enrol.status_code == 200
        secret = enrol.json()["secret"]
        assert enrol.json()["otpauth_uri"].startswith("otpauth://totp/")
        totp = pyotp.TOTP(secret)

        wrong = await h.client.post("/me/totp/confirm", json={"code": "000000"}, headers=headers)
        assert wrong.status_code == 422
        ok = await h.client.post("/me/totp/confirm", json={"code": totp.at(h.clock())}, headers=headers)
        assert ok.status_code == 204
        assert (await h.client.post("/me/totp", headers=headers)).status_code == 409

        needs = await h.login("c_owner")
        assert needs.status_code == 401 and needs.json()["type"].endswith("/otp-required")
        # The code used to confirm is spent: a replay inside its window is refused.
        assert (await h.login("c_owner", otp=totp.at(h.clock()))).status_code == 401
        h.clock.advance(seconds=30)
        login = await h.login("c_owner", otp=totp.at(h.clock()))
        assert login.status_code == 200
        assert jwt.decode(login.json()["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]
        assert (await h.login("c_owner", otp=totp.at(h.clock()))).status_code == 401  # used

        h.clock.advance(seconds=30)
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        disabled = await h.client.post("/me/totp/disable", json={"code": totp.at(h.clock())}, headers=headers)
        assert disabled.status_code == 204
        assert (await h.login("c_owner")).status_code == 200
        me = (await h.client.get("/me", headers=headers)).json()
        assert me["totp_enabled"] is False

    async def test_wrong_codes_count_towards_the_lock(self, h: AuthHarness) -> None:
        headers = await h.headers("c_member")
        secret = (await h.client.post("/me/totp", headers=headers)).json()["secret"]
        await h.client.post("/me/totp/confirm", json={"code": pyotp.TOTP(secret).at(h.clock())}, headers=headers)
        for _ in range(5):
            assert (await h.login("c_member", otp="123456")).status_code == 401
        h.clock.advance(seconds=30)
        assert (await h.login("c_member", otp=pyotp.TOTP(secret).at(h.clock()))).status_code == 401  # locked

    async def test_api_keys_have_no_account(self, h: AuthHarness) -> None:
        created = await h.client.post(
            f"/organisations/{h.world.orgs['C']}/api-keys",
            json={"name": "k", "perms": ["ksef.read"]},
            headers=await h.headers("c_owner"),
        )
        key = created.json()["key"]
        assert (await h.client.post("/me/totp", headers={"X-API-Key": key})).status_code == 403
        assert (await h.client.get("/me", headers={"X-API-Key": key})).status_code == 403
