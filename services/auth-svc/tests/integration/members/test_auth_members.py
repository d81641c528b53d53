from __future__ import annotations

import jwt
import pytest

from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


class TestMembers:
    async def test_accountant_limited_to_some_clients(self, h: AuthHarness) -> None:
        office = h.world.orgs["A"]
        admin = await h.headers("a_admin")
        user = h.world.users["a_accountant"]
        response = await h.client.patch(
            f"/organisations/{office}/members/{user}", json={"client_ids": [str(h.world.orgs["E"])]}, headers=admin
        )
        assert response.status_code == 200 and response.json()["client_ids"] == [str(h.world.orgs["E"])]
        accountant = await h.headers("a_accountant")
        clients = (await h.client.get(f"/organisations/{office}/clients", headers=accountant)).json()
        assert [c["nip"] for c in clients] == ["6791234506"]
        assert (await h.client.get(f"/organisations/{h.world.orgs['C']}", headers=accountant)).status_code == 404
        # The token narrows to E; that E is still pending every service asks live (platform_common.client_access).
        assert jwt.decode(await h.token("a_accountant"), options={"verify_signature": False})["nips"] == ["6791234506"]
        # A client id of another office is refused; a client restriction only fits accountants.
        response = await h.client.patch(
            f"/organisations/{office}/members/{user}", json={"client_ids": [str(h.world.orgs["D"])]}, headers=admin
        )
        assert response.status_code == 422
        response = await h.client.patch(
            f"/organisations/{office}/members/{h.world.users['a_admin']}", json={"client_ids": []}, headers=admin
        )
        assert response.status_code == 422
        response = await h.client.patch(
            f"/organisations/{office}/members/{user}", json={"client_ids": None}, headers=admin
        )
        assert response.json()["restricted"] is False

    async def test_roles_change_within_the_organisation_kind_and_an_admin_remains(self, h: AuthHarness) -> None:
        office = h.world.orgs["A"]
        admin = await h.headers("a_admin")
        user = h.world.users["a_accountant"]
        wrong = await h.client.patch(
            f"/organisations/{office}/members/{user}", json={"role": "client_owner"}, headers=admin
        )
        assert wrong.status_code == 422
        bogus = await h.client.patch(
            f"/organisations/{office}/members/{user}", json={"role": "superuser"}, headers=admin
        )
        assert bogus.status_code == 422
        last = await h.client.patch(
            f"/organisations/{office}/members/{h.world.users['a_admin']}",
            json={"role": "office_accountant"},
            headers=admin,
        )
        assert last.status_code == 409
        promoted = await h.client.patch(
            f"/organisations/{office}/members/{user}", json={"role": "office_admin"}, headers=admin
        )
        assert promoted.status_code == 200 and promoted.json()["role"] == "office_admin"
        audit = (await h.client.get(f"/organisations/{office}/audit?event=role.changed", headers=admin)).json()
        assert audit[0]["subject_id"] == str(user)
        assert audit[0]["details"] == {"previous": "office_accountant", "role": "office_admin"}
