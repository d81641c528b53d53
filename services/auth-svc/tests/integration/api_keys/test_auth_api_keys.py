from __future__ import annotations

import pytest
from sqlalchemy import select

from auth_svc.crypto import token_hash
from auth_svc.db import api_key
from auth_svc.testing import AuthHarness, harness_fixture
from platform_common.auth.api_keys import format_api_key, parse_api_key

pytestmark = pytest.mark.postgres
h = harness_fixture()


async def _create(h: AuthHarness, who: str = "a_admin", org: str = "A", **body: object) -> dict[str, object]:
    payload = {"name": "ERP", "perms": ["ksef.read", "buffer.read"], **body}
    response = await h.client.post(
        f"/organisations/{h.world.orgs[org]}/api-keys", json=payload, headers=await h.headers(who)
    )
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


class TestApiKeys:
    async def test_shown_once_and_stored_hashed(self, h: AuthHarness) -> None:
        created = await _create(h)
        key = str(created["key"])
        key_id = str(created["id"])
        parsed = parse_api_key(key)
        assert parsed.key_id == key_id and key.startswith(f"khk_{key_id}_")
        listed = (
            await h.client.get(f"/organisations/{h.world.orgs['A']}/api-keys", headers=await h.headers("a_admin"))
        ).json()
        assert [k["id"] for k in listed] == [key_id]
        assert "key" not in listed[0] and parsed.secret not in str(listed)

        async with h.service.sessionmaker() as session:
            row = (await session.execute(select(api_key).where(api_key.c.id == key_id))).one()
        secret = parsed.secret
        assert row.secret_hash == token_hash(secret) and secret not in str(row)

    async def test_authenticates_records_last_use_and_revocation_is_immediate_here(self, h: AuthHarness) -> None:
        created = await _create(h)
        key = str(created["key"])
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            response = await h.client.get(f"/organisations/{h.world.orgs['A']}", headers=headers)
            assert response.status_code == 200
        admin = await h.headers("a_admin")
        listed = (await h.client.get(f"/organisations/{h.world.orgs['A']}/api-keys", headers=admin)).json()
        assert listed[0]["last_used_at"] is not None

        service = await h.service_headers()
        active = (await h.client.post("/internal/introspect", json={"api_key": key}, headers=service)).json()
        assert active == {
            "active": True,
            "sub": created["id"],
            "ptype": "api_key",
            "org": str(h.world.orgs["A"]),
            "org_kind": "office",
            "roles": [],
            "perms": ["buffer.read", "ksef.read"],
            # Every client of the office: which of them are active each service asks live, on every request.
            "nips": ["*"],
            "amr": [],
            "exp": None,
        }

        revoked = await h.client.delete(f"/organisations/{h.world.orgs['A']}/api-keys/{created['id']}", headers=admin)
        assert revoked.status_code == 204
        assert (await h.client.get("/me", headers={"X-API-Key": key})).status_code == 401
        assert (await h.client.post("/internal/introspect", json={"api_key": key}, headers=service)).json() == {
            "active": False
        }
        # A key whose secret part is wrong (with a checksum that fits) is not the key.
        other = parse_api_key(str((await _create(h))["key"]))
        forged = format_api_key(other.key_id, other.secret[:-1] + ("a" if other.secret[-1] != "a" else "b"))
        org = f"/organisations/{h.world.orgs['A']}"
        assert (await h.client.get(org, headers={"X-API-Key": forged})).status_code == 401
        assert (await h.client.get(org, headers={"X-API-Key": other.text})).status_code == 200

    async def test_scope_is_a_subset_of_the_creator(self, h: AuthHarness) -> None:
        org = h.world.orgs["C"]
        owner = await h.headers("c_owner")
        for perms in (["ops"], ["internal"], ["clients.manage"], []):
            response = await h.client.post(
                f"/organisations/{org}/api-keys", json={"name": "x", "perms": perms}, headers=owner
            )
            assert response.status_code == 422, perms
        response = await h.client.post(
            f"/organisations/{org}/api-keys",
            json={"name": "x", "perms": ["ksef.read"], "nips": ["1112223303"]},
            headers=owner,
        )
        assert response.status_code == 422
        created = await _create(h, "c_owner", "C", perms=["ksef.send"], nips=["7777777702"])
        service = await h.service_headers()
        info = (await h.client.post("/internal/introspect", json={"api_key": created["key"]}, headers=service)).json()
        assert info["perms"] == ["ksef.send"] and info["nips"] == ["7777777702"] and info["org_kind"] == "client"

    async def test_expiry_and_relation_state(self, h: AuthHarness) -> None:
        created = await _create(h, expires_at="2026-11-22T11:00:00Z")
        service = await h.service_headers()
        info = (await h.client.post("/internal/introspect", json={"api_key": created["key"]}, headers=service)).json()
        assert info["exp"] == 1795345200
        # The office's relation with C ends: the key loses C at once (here; the other services close it through
        # their projection of the integrations, platform_common.client_access).
        key = {"X-API-Key": str(created["key"])}
        client_org = f"/organisations/{h.world.orgs['C']}"
        assert (await h.client.get(client_org, headers=key)).status_code == 200
        admin = await h.headers("a_admin")
        ended = await h.client.delete(f"/organisations/{h.world.orgs['A']}/clients/{h.world.orgs['C']}", headers=admin)
        assert ended.status_code == 200 and ended.json()["state"] == "inactive"
        assert (await h.client.get(client_org, headers=key)).status_code == 404
        h.clock.advance(seconds=3601)
        service = await h.service_headers()
        info = (await h.client.post("/internal/introspect", json={"api_key": created["key"]}, headers=service)).json()
        assert info == {"active": False}

    async def test_keys_cannot_create_keys_and_ops_cannot_create_tenant_keys(self, h: AuthHarness) -> None:
        created = await _create(h, perms=["users.manage"])
        org = h.world.orgs["A"]
        response = await h.client.post(
            f"/organisations/{org}/api-keys",
            json={"name": "y", "perms": ["users.manage"]},
            headers={"X-API-Key": str(created["key"])},
        )
        assert response.status_code == 403
        response = await h.client.post(
            f"/organisations/{org}/api-keys", json={"name": "y", "perms": ["ksef.read"]}, headers=await h.headers("ops")
        )
        assert response.status_code == 403

    async def test_a_key_never_outgrows_its_creator(self, h: AuthHarness) -> None:
        org, creator, other = h.world.orgs["A"], h.world.users["a_admin"], h.world.users["a_accountant"]
        created = await _create(h, perms=["buffer.read", "clients.manage", "users.manage"])
        key = {"X-API-Key": str(created["key"])}
        service = await h.service_headers()

        async def introspect() -> dict[str, object]:
            response = await h.client.post("/internal/introspect", json={"api_key": created["key"]}, headers=service)
            assert response.status_code == 200, response.text
            answer: dict[str, object] = response.json()
            return answer

        assert (await h.client.get(f"/organisations/{org}/members", headers=key)).status_code == 200
        # A second admin (the promoted accountant, logging in anew) demotes the key's creator.
        admin = await h.headers("a_admin")
        promoted = await h.client.patch(
            f"/organisations/{org}/members/{other}", json={"role": "office_admin"}, headers=admin
        )
        assert promoted.status_code == 200, promoted.text
        second_admin = await h.headers("a_accountant")
        member = f"/organisations/{org}/members/{creator}"
        demoted = await h.client.patch(member, json={"role": "office_accountant"}, headers=second_admin)
        assert demoted.status_code == 200, demoted.text
        info = await introspect()
        assert info["active"] is True and info["perms"] == ["buffer.read"] and info["nips"] == ["*"]
        assert (await h.client.get(f"/organisations/{org}/members", headers=key)).status_code == 403

        # Limited to the pending client only, the creator reaches that client alone: so does the key (and the
        # pending relation opens nothing until it is active, which every service asks live).
        limited = await h.client.patch(member, json={"client_ids": [str(h.world.orgs["E"])]}, headers=second_admin)
        assert limited.status_code == 200, limited.text
        assert (await introspect())["nips"] == ["6791234506"]

        # The stored scope is intact: promoted back, the creator's key is whole again.
        restored = await h.client.patch(member, json={"role": "office_admin", "client_ids": None}, headers=second_admin)
        assert restored.status_code == 200, restored.text
        info = await introspect()
        assert info["perms"] == ["buffer.read", "clients.manage", "users.manage"] and info["nips"] == ["*"]

        # A creator who left the organisation leaves keys that open nothing.
        assert (await h.client.delete(member, headers=second_admin)).status_code == 204
        assert await introspect() == {"active": False}
        assert (await h.client.get(f"/organisations/{org}", headers=key)).status_code == 401
