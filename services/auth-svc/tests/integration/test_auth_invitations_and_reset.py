"""Invitations and password resets: the link travels in an outbox event; auth-svc keeps only its hash."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from sqlalchemy import select

from auth_svc.db import invitation, messaging_tables, password_reset
from auth_svc.testing import PASSWORD, AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()

NEW_PASSWORD = "a brand new passphrase"


async def _events(h: AuthHarness, topic: str) -> list[dict[str, Any]]:
    outbox = messaging_tables.outbox
    async with h.service._sessionmaker() as session:
        rows = (
            await session.execute(select(outbox.c.payload).where(outbox.c.topic == topic).order_by(outbox.c.seq))
        ).all()
    return [json.loads(r.payload) for r in rows]


def _token(link: str) -> str:
    return parse_qs(urlparse(link).query)["token"][0]


class TestInvitations:
    async def test_invite_accept_login_and_single_use(self, h: AuthHarness) -> None:
        office = h.world.orgs["A"]
        admin = await h.headers("a_admin")
        response = await h.client.post(
            f"/organisations/{office}/members",
            json={
                "email": "New.Person@Example.com",
                "role": "office_accountant",
                "client_ids": [str(h.world.orgs["C"])],
            },
            headers=admin,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert (
            set(created) == {"id", "email", "role", "expires_at", "created_at"}
            and created["email"] == "new.person@example.com"
        )

        (event,) = await _events(h, "user.invited")
        assert event["type"] == "user.invited" and event["tenant"] == str(office)
        assert (
            event["payload"]["email"] == "new.person@example.com"
            and event["payload"]["organisation_name"] == "Office A"
        )
        token = _token(event["payload"]["link"])
        async with h.service._sessionmaker() as session:
            stored = (await session.execute(select(invitation))).one()
        assert token not in str(stored)
        listed = (await h.client.get(f"/organisations/{office}/invitations", headers=admin)).json()
        assert [i["email"] for i in listed] == ["new.person@example.com"]

        short = await h.client.post("/invitations/accept", json={"token": token, "password": "short"})
        assert short.status_code == 422
        accepted = await h.client.post("/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["organisation_id"] == str(office) and accepted.json()["role"] == "office_accountant"
        again = await h.client.post("/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
        assert again.status_code == 400

        login = await h.client.post("/login", json={"email": "new.person@example.com", "password": NEW_PASSWORD})
        assert login.status_code == 200
        members = (await h.client.get(f"/organisations/{office}/members", headers=admin)).json()
        new = next(m for m in members if m["email"] == "new.person@example.com")
        assert new["restricted"] is True and new["client_ids"] == [str(h.world.orgs["C"])]

    async def test_existing_user_joins_with_their_password_and_expired_links_fail(self, h: AuthHarness) -> None:
        owner = await h.headers("c_owner")
        client = h.world.orgs["C"]
        email = h.world.emails["a_admin"]
        assert (
            await h.client.post(
                f"/organisations/{client}/members", json={"email": email, "role": "office_admin"}, headers=owner
            )
        ).status_code == 422
        response = await h.client.post(
            f"/organisations/{client}/members", json={"email": email, "role": "client_member"}, headers=owner
        )
        assert response.status_code == 201
        token = _token((await _events(h, "user.invited"))[-1]["payload"]["link"])
        wrong = await h.client.post("/invitations/accept", json={"token": token, "password": "not theirs at all"})
        assert wrong.status_code == 401
        ok = await h.client.post("/invitations/accept", json={"token": token, "password": PASSWORD})
        assert ok.status_code == 200 and ok.json()["role"] == "client_member"
        duplicate = await h.client.post(
            f"/organisations/{client}/members", json={"email": email, "role": "client_member"}, headers=owner
        )
        assert duplicate.status_code == 409

        await h.client.post(
            f"/organisations/{client}/members",
            json={"email": "late@example.com", "role": "client_member"},
            headers=owner,
        )
        token = _token((await _events(h, "user.invited"))[-1]["payload"]["link"])
        h.clock.advance(seconds=72 * 3600 + 1)
        expired = await h.client.post("/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
        assert expired.status_code == 400

    async def test_revoked_invitation(self, h: AuthHarness) -> None:
        admin = await h.headers("a_admin")
        office = h.world.orgs["A"]
        created = (
            await h.client.post(
                f"/organisations/{office}/members",
                json={"email": "x@example.com", "role": "office_admin"},
                headers=admin,
            )
        ).json()
        token = _token((await _events(h, "user.invited"))[-1]["payload"]["link"])
        assert (
            await h.client.delete(f"/organisations/{office}/invitations/{created['id']}", headers=admin)
        ).status_code == 204
        assert (
            await h.client.post("/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
        ).status_code == 400


class TestPasswordReset:
    async def test_reset_sets_the_password_lifts_the_lock_and_ends_sessions(self, h: AuthHarness) -> None:
        session_pair = (await h.login("c_member")).json()
        for _ in range(5):
            await h.login("c_member", password="wrong password!")
        unknown = await h.client.post("/password-reset", json={"email": "nobody@example.com"})
        known = await h.client.post("/password-reset", json={"email": h.world.emails["c_member"]})
        assert unknown.status_code == known.status_code == 202 and unknown.json() == known.json()

        (event,) = await _events(h, "user.password_reset_requested")
        token = _token(event["payload"]["link"])
        async with h.service._sessionmaker() as session:
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
        token = _token((await _events(h, "user.password_reset_requested"))[-1]["payload"]["link"])
        h.clock.advance(seconds=3601)
        response = await h.client.post("/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        assert response.status_code == 400
