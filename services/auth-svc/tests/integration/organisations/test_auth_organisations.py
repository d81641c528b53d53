from __future__ import annotations

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
