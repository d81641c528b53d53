"""Password resets: the link travels sealed to notify-svc in an outbox event; auth-svc keeps only its hash."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from auth_svc.db import password_reset
from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()

NEW_PASSWORD = "a brand new passphrase"  # a test user's new password


class TestPasswordReset:
    async def test_reset_sets_the_password_lifts_the_lock_and_ends_sessions(self, h: AuthHarness) -> None:
        session_pair = (await h.login("c_member")).json()
        for _ in range(5):
            await h.login("c_member", password="wrong password!")
        unknown = await h.client.post("/password-reset", json={"email": "nobody@example.com"})
        known = await h.client.post("/password-reset", json={"email": h.world.emails["c_member"]})
        assert unknown.status_code == known.status_code == 202 and unknown.json() == known.json()

        (event,) = await h.events("user.password_reset_requested")
        token = h.link_token(event)
        assert "link" not in event["payload"] and token not in json.dumps(event)
        async with h.service.sessionmaker() as session:
            assert token not in str((await session.execute(select(password_reset))).one())

        done = await h.client.post("/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        assert done.status_code == 204
        assert (
            await h.client.post("/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        ).status_code == 400
        assert (await h.login("c_member")).status_code == 401
        assert (await h.login("c_member", password=NEW_PASSWORD)).status_code == 200
        refreshed = await h.client.post("/token/refresh", json={"refresh_token": session_pair["refresh_token"]})
        assert refreshed.status_code == 401

    async def test_expired_link(self, h: AuthHarness) -> None:
        await h.client.post("/password-reset", json={"email": h.world.emails["c_member"]})
        token = h.link_token((await h.events("user.password_reset_requested"))[-1])
        h.clock.advance(seconds=3601)
        response = await h.client.post("/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        assert response.status_code == 400
