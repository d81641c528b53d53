from __future__ import annotations

import jwt
import pytest

from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


class TestOrganisations:
    async def test_invalid_nip_is_a_clear_422(self, h: AuthHarness) -> None:
        admin = await h.headers("a_admin")
        response = await h.client.post(
            f"/organisations/{h.world.orgs['A']}/clients", json={"nip": "5260250217", "name": "Bad"}, headers=admin
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"].endswith("/invalid-nip") and body["title"] == "Invalid NIP" and "checksum" in body["detail"]
        ops = await h.headers("ops")
        response = await h.client.post(
            "/organisations", json={"kind": "client", "nip": "123", "name": "X"}, headers=ops
        )
        assert response.status_code == 422 and response.json()["type"].endswith("/invalid-nip")
        response = await h.client.post("/organisations", json={"kind": "client", "name": "X"}, headers=ops)
        assert response.status_code == 422

    async def test_one_company_is_a_client_of_several_offices(self, h: AuthHarness) -> None:
        # B takes on C (already A's client): the same organisation, a second relation, pending.
        response = await h.client.post(
            f"/organisations/{h.world.orgs['B']}/clients",
            json={"nip": "777-777-77-02", "name": "Another name for C"},
            headers=await h.headers("b_admin"),
        )
        assert response.status_code == 201, response.text
        assert response.json()["client_id"] == str(h.world.orgs["C"]) and response.json()["state"] == "pending"
        again = await h.client.post(
            f"/organisations/{h.world.orgs['B']}/clients",
            json={"nip": "7777777702", "name": "C"},
            headers=await h.headers("b_admin"),
        )
        assert again.status_code == 409

    async def test_the_approval_service_activates_a_relation(self, h: AuthHarness) -> None:
        office, client = h.world.orgs["A"], h.world.orgs["E"]
        body = {"office_id": str(office), "client_nip": "6791234506", "state": "active"}
        admin = await h.headers("a_admin")
        assert (await h.client.put("/internal/relations", json=body, headers=admin)).status_code == 403
        token = jwt.decode(await h.token("a_admin"), options={"verify_signature": False})
        assert token["nips"] == ["7777777702"]

        response = await h.client.put("/internal/relations", json=body, headers=await h.service_headers())
        assert response.status_code == 200 and response.json()["state"] == "active"
        token = jwt.decode(await h.token("a_admin"), options={"verify_signature": False})
        assert token["nips"] == ["6791234506", "7777777702"]

        unknown = {"office_id": str(h.world.orgs["B"]), "client_id": str(client), "state": "active"}
        assert (
            await h.client.put("/internal/relations", json=unknown, headers=await h.service_headers())
        ).status_code == 404
        # An office may end the relation itself, but never activate it.
        response = await h.client.delete(f"/organisations/{office}/clients/{client}", headers=admin)
        assert response.json()["state"] == "inactive"

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
        # E is still pending, so the token reaches no client yet.
        assert jwt.decode(await h.token("a_accountant"), options={"verify_signature": False})["nips"] == []
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
