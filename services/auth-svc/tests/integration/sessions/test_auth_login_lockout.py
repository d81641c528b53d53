from __future__ import annotations

from datetime import timedelta

import httpx
import jwt
from sqlalchemy import select

from auth_svc.db import login_throttle
from auth_svc.testing import PASSWORD, AuthHarness, harness_fixture

h_any = harness_fixture("h_any", databases="both")


def _problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


class TestLogin:
    async def test_tokens_follow_the_contract(self, h_any: AuthHarness) -> None:
        response = await h_any.login("a_accountant")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 900 and body["refresh_token"]
        header = jwt.get_unverified_header(body["access_token"])
        assert header["alg"] == "EdDSA" and header["typ"] == "JWT" and header["kid"]
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        w = h_any.world
        assert claims["iss"] == "ksef-hub-auth" and claims["aud"] == "ksef-hub"
        assert claims["sub"] == str(w.users["a_accountant"]) and claims["ptype"] == "user"
        assert claims["org"] == str(w.orgs["A"]) and claims["org_kind"] == "office"
        assert claims["roles"] == ["office_accountant"]
        assert set(claims["perms"]) == {"ksef.read", "ksef.send", "buffer.read", "buffer.decide", "buffer.import"}
        # No list of clients: which are active (C, not the pending E) every service asks live on each request.
        assert claims["nips"] == ["*"]
        assert claims["exp"] - claims["iat"] == 900 and claims["jti"] and claims["amr"] == ["pwd"]

    async def test_ops_and_client_claims(self, h_any: AuthHarness) -> None:
        ops = jwt.decode(await h_any.token("ops"), options={"verify_signature": False})
        assert ops["org"] is None and ops["org_kind"] is None and ops["nips"] == ["*"] and "ops" in ops["perms"]
        owner = jwt.decode(await h_any.token("c_owner"), options={"verify_signature": False})
        assert owner["org_kind"] == "client" and owner["nips"] == ["7777777702"]
        assert "month.approve" in owner["perms"] and "clients.manage" not in owner["perms"]

    async def test_wrong_password_and_unknown_email_look_the_same(self, h_any: AuthHarness) -> None:
        wrong = _problem(await h_any.login("a_admin", password="not the password"), 401)
        unknown = _problem(
            await h_any.client.post("/login", json={"email": "nobody@example.com", "password": "x"}), 401
        )
        assert {k: v for k, v in wrong.items() if k != "instance"} == {
            k: v for k, v in unknown.items() if k != "instance"
        }


class TestLockout:
    async def test_lock_after_five_failures_is_visible_and_an_admin_unlocks(self, h_any: AuthHarness) -> None:
        admin = await h_any.headers("a_admin")
        for _ in range(5):
            _problem(await h_any.login("a_accountant", password="wrong password!"), 401)
        # Locked: even the right password is refused, with the same answer as a wrong one.
        _problem(await h_any.login("a_accountant"), 401)

        org = h_any.world.orgs["A"]
        members = (await h_any.client.get(f"/organisations/{org}/members", headers=admin)).json()
        accountant = next(m for m in members if m["email"] == h_any.world.emails["a_accountant"])
        assert accountant["locked"] is True and accountant["failed_logins"] == 5 and accountant["locked_until"]

        audit = (await h_any.client.get(f"/organisations/{org}/audit", headers=admin)).json()
        events = [e["event"] for e in audit if e["subject_id"] == str(h_any.world.users["a_accountant"])]
        assert events.count("login.failed") == 6 and "user.locked" in events

        user_id = h_any.world.users["a_accountant"]
        unlocked = await h_any.client.post(f"/organisations/{org}/users/{user_id}/unlock", headers=admin)
        assert unlocked.status_code == 200 and unlocked.json()["locked"] is False
        assert (await h_any.login("a_accountant")).status_code == 200

    async def test_the_lock_runs_out(self, h_any: AuthHarness) -> None:
        for _ in range(5):
            await h_any.login("c_member", password="wrong password!")
        _problem(await h_any.login("c_member"), 401)
        h_any.clock.advance(seconds=901)
        assert (await h_any.login("c_member")).status_code == 200

    async def test_success_resets_the_counter(self, h_any: AuthHarness) -> None:
        for _ in range(4):
            await h_any.login("c_member", password="wrong password!")
        assert (await h_any.login("c_member")).status_code == 200
        for _ in range(4):
            await h_any.login("c_member", password="wrong password!")
        assert (await h_any.login("c_member")).status_code == 200


class TestRateLimit:
    async def test_per_email_and_ip(self, h_any: AuthHarness) -> None:
        for _ in range(10):
            await h_any.login("c_owner", password="wrong password!")
        limited = await h_any.login("c_owner")
        _problem(limited, 429)
        assert 0 < int(limited.headers["Retry-After"]) <= 300

        # Another address (same e-mail) is not throttled by this window; the account is locked though.
        other_ip = httpx.ASGITransport(app=h_any.app, client=("198.51.100.7", 1234))
        async with httpx.AsyncClient(transport=other_ip, base_url="http://auth") as other:
            response = await other.post("/login", json={"email": h_any.world.emails["d_owner"], "password": PASSWORD})
            assert response.status_code == 200
            response = await other.post("/login", json={"email": h_any.world.emails["c_owner"], "password": PASSWORD})
            assert response.status_code == 401  # five wrong passwords before locked it: rate limit did not apply

        h_any.clock.advance(seconds=301)
        assert (await h_any.login("c_owner")).status_code == 401  # the window is over; still locked

    async def test_expired_windows_are_purged(self, h_any: AuthHarness) -> None:
        async def windows() -> list[timedelta]:
            async with h_any.service.sessionmaker() as session:
                rows = (await session.execute(select(login_throttle.c.window_started_at))).scalars().all()
            return sorted(started - start for started in rows)

        start = h_any.clock.now
        for name in ("c_owner", "c_member", "d_owner"):
            await h_any.login(name, password="wrong password!")
        assert await windows() == [timedelta(0)] * 3
        h_any.clock.advance(seconds=200)
        await h_any.login("a_admin")
        assert len(await windows()) == 4, "no purge before a window has passed"
        h_any.clock.advance(seconds=100)
        await h_any.login("b_admin")
        # The three windows that ran out are gone; the running one and the new one stay.
        assert await windows() == [timedelta(seconds=200), timedelta(seconds=300)]
        # A purged key starts afresh, exactly as it would have with its stale row.
        for _ in range(10):
            _problem(await h_any.login("c_member", password="wrong password!"), 401)
        _problem(await h_any.login("c_member"), 429)
