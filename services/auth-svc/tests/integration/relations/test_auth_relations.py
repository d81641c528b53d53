from __future__ import annotations

import jwt
import pytest

from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


class TestRelations:
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
        # The token names no clients (it would outlive a revocation); the relation itself is asked on each request.
        token = jwt.decode(await h.token("a_admin"), options={"verify_signature": False})
        assert token["nips"] == ["*"]

        response = await h.client.put("/internal/relations", json=body, headers=await h.service_headers())
        assert response.status_code == 200 and response.json()["state"] == "active"

        unknown = {"office_id": str(h.world.orgs["B"]), "client_id": str(client), "state": "active"}
        assert (
            await h.client.put("/internal/relations", json=unknown, headers=await h.service_headers())
        ).status_code == 404
        # An office may end the relation itself, but never activate it.
        assert (await h.client.get(f"/organisations/{client}", headers=admin)).status_code == 200
        response = await h.client.delete(f"/organisations/{office}/clients/{client}", headers=admin)
        assert response.json()["state"] == "inactive"
        # The same token, the very next request: the company of an ended relation is closed to the office.
        assert (await h.client.get(f"/organisations/{client}", headers=admin)).status_code == 404
