"""Invitations: the link travels sealed to notify-svc in an outbox event; auth-svc keeps only its hash."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from auth_svc.db import invitation
from auth_svc.testing import NOTIFY_PRIVATE_KEY, PASSWORD, AuthHarness, harness_fixture
from platform_common.contracts.users import UserInvited
from platform_common.sealing import SealingError, generate_keypair, unseal

pytestmark = pytest.mark.postgres
h = harness_fixture()

NEW_PASSWORD = "a brand new passphrase"  # a test user's new password


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

        (event,) = await h.events("user.invited")
        assert event["type"] == "user.invited" and event["tenant"] == str(office)
        assert (
            event["payload"]["email"] == "new.person@example.com"
            and event["payload"]["organisation_name"] == "Office A"
        )
        token = h.link_token(event)
        # Neither the outbox row nor the audit log holds a usable link: only notify-svc's key opens it.
        assert "link" not in event["payload"] and token not in json.dumps(event)
        with pytest.raises(SealingError):
            UserInvited.model_validate(event["payload"]).open_link(generate_keypair()[0])
        with pytest.raises(SealingError):
            unseal(NOTIFY_PRIVATE_KEY, event["payload"]["sealed_link"], info=b"user.password_reset_requested")
        audit = (await h.client.get(f"/organisations/{office}/audit", headers=admin)).json()
        assert token not in json.dumps(audit)
        async with h.service.sessionmaker() as session:
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
        token = h.link_token((await h.events("user.invited"))[-1])
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
        token = h.link_token((await h.events("user.invited"))[-1])
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
        token = h.link_token((await h.events("user.invited"))[-1])
        assert (
            await h.client.delete(f"/organisations/{office}/invitations/{created['id']}", headers=admin)
        ).status_code == 204
        assert (
            await h.client.post("/invitations/accept", json={"token": token, "password": NEW_PASSWORD})
        ).status_code == 400
