"""Refresh rotation and reuse detection, key rotation seen through the JWKS, rejected tokens, service tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auth_svc.testing import SERVICE_CLIENT, SERVICE_SECRET, AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class TestRefresh:
    async def test_rotation_returns_a_new_pair_and_uses_up_the_old_token(self, h: AuthHarness) -> None:
        first = (await h.login("a_admin")).json()
        second = await h.client.post("/token/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200, second.text
        pair = second.json()
        assert pair["refresh_token"] != first["refresh_token"]
        me = await h.client.get("/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 200
        third = await h.client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})
        assert third.status_code == 200

    async def test_reuse_revokes_the_whole_family(self, h: AuthHarness) -> None:
        first = (await h.login("a_admin")).json()
        rotated = (await h.client.post("/token/refresh", json={"refresh_token": first["refresh_token"]})).json()
        # The old token comes back (stolen copy, or a replayed request): the family is revoked.
        reuse = await h.client.post("/token/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401 and reuse.headers["content-type"] == "application/problem+json"
        # ... including the legitimately rotated token.
        after = await h.client.post("/token/refresh", json={"refresh_token": rotated["refresh_token"]})
        assert after.status_code == 401
        # Another login (another family) is unaffected.
        other = (await h.login("a_admin")).json()
        assert (
            await h.client.post("/token/refresh", json={"refresh_token": other["refresh_token"]})
        ).status_code == 200

        admin = await h.headers("a_admin")
        audit = (await h.client.get(f"/organisations/{h.world.orgs['A']}/audit", headers=admin)).json()
        assert any(e["event"] == "refresh.reuse_detected" for e in audit)

    async def test_expired_refresh_token_and_logout(self, h: AuthHarness) -> None:
        pair = (await h.login("c_owner")).json()
        h.clock.advance(seconds=14 * 24 * 3600 + 1)
        assert (await h.client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401

        pair = (await h.login("c_owner")).json()
        assert (await h.client.post("/logout", json={"refresh_token": pair["refresh_token"]})).status_code == 204
        assert (await h.client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})).status_code == 401

    async def test_refresh_picks_up_membership_changes(self, h: AuthHarness) -> None:
        pair = (await h.login("a_accountant")).json()
        admin = await h.headers("a_admin")
        org, user = h.world.orgs["A"], h.world.users["a_accountant"]
        response = await h.client.patch(f"/organisations/{org}/members/{user}", json={"client_ids": []}, headers=admin)
        assert response.status_code == 200 and response.json()["restricted"] is True
        refreshed = (await h.client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})).json()
        assert jwt.decode(refreshed["access_token"], options={"verify_signature": False})["nips"] == []

        removed = await h.client.delete(f"/organisations/{org}/members/{user}", headers=admin)
        assert removed.status_code == 204
        again = await h.client.post("/token/refresh", json={"refresh_token": refreshed["refresh_token"]})
        assert again.status_code == 401


class TestRejectedTokens:
    async def _me(self, h: AuthHarness, token: str) -> int:
        response = await h.client.get("/me", headers={"Authorization": f"Bearer {token}"})
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.headers["content-type"] == "application/problem+json"
        return response.status_code

    async def test_expired(self, h: AuthHarness) -> None:
        token = await h.token("a_admin")
        h.clock.advance(seconds=899)
        assert await self._me(h, token) == 200
        h.clock.advance(seconds=1)
        assert await self._me(h, token) == 401

    async def test_forged_signature_and_tampered_claims(self, h: AuthHarness) -> None:
        token = await h.token("a_accountant")
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        forged = jwt.encode(
            {**claims, "perms": ["ops"]},
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
            headers={"kid": header["kid"]},
        )
        assert await self._me(h, forged) == 401
        head, _payload, signature = token.split(".")
        tampered = f"{head}.{_b64({**claims, 'roles': ['office_admin']})}.{signature}"
        assert await self._me(h, tampered) == 401

    async def test_alg_none_and_hmac_confusion(self, h: AuthHarness) -> None:
        token = await h.token("a_admin")
        kid = jwt.get_unverified_header(token)["kid"]
        claims = jwt.decode(token, options={"verify_signature": False})
        unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}."
        assert await self._me(h, unsigned) == 401
        jwks = (await h.client.get("/.well-known/jwks.json")).json()
        public_x = jwks["keys"][0]["x"]
        hmac_token = jwt.encode(claims, public_x, algorithm="HS256", headers={"kid": kid})
        assert await self._me(h, hmac_token) == 401

    async def test_garbage_unknown_kid_and_wrong_audience(self, h: AuthHarness) -> None:
        assert await self._me(h, "not-a-jwt") == 401
        token = await h.token("a_admin")
        claims = jwt.decode(token, options={"verify_signature": False})
        other_key = Ed25519PrivateKey.generate()
        assert await self._me(h, jwt.encode(claims, other_key, algorithm="EdDSA", headers={"kid": "nope"})) == 401
        wrong_aud = await h.service.keys.sign({**claims, "aud": "someone-else"})
        assert await self._me(h, wrong_aud) == 401
        assert (await h.client.get("/me")).status_code == 401
        assert (await h.client.get("/me", headers={"Authorization": f"Basic {token}"})).status_code == 401


class TestServiceTokens:
    async def test_client_credentials_in_form_json_and_basic(self, h: AuthHarness) -> None:
        form = await h.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": SERVICE_CLIENT, "client_secret": SERVICE_SECRET},
        )
        assert form.status_code == 200, form.text
        assert form.json()["token_type"] == "Bearer" and form.json()["expires_in"] == 900
        claims = jwt.decode(form.json()["access_token"], options={"verify_signature": False})
        assert claims["ptype"] == "service" and claims["sub"] == SERVICE_CLIENT and "internal" in claims["perms"]
        assert claims["org"] is None and claims["roles"] == []

        as_json = await h.client.post(
            "/oauth/token",
            json={"grant_type": "client_credentials", "client_id": SERVICE_CLIENT, "client_secret": SERVICE_SECRET},
        )
        assert as_json.status_code == 200
        basic = await h.client.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(SERVICE_CLIENT, SERVICE_SECRET)
        )
        assert basic.status_code == 200

    async def test_wrong_secret_unknown_client_and_grant(self, h: AuthHarness) -> None:
        for client_id, secret in ((SERVICE_CLIENT, "wrong"), ("buffer-svc", SERVICE_SECRET)):
            response = await h.client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
            )
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_client"
        response = await h.client.post("/oauth/token", data={"grant_type": "password", "client_id": SERVICE_CLIENT})
        assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"

    async def test_introspection_needs_a_service_token(self, h: AuthHarness) -> None:
        body = {"api_key": "khk_abcdefghijkl_nothing"}
        assert (await h.client.post("/internal/introspect", json=body)).status_code == 401
        for role in ("a_admin", "ops"):
            response = await h.client.post("/internal/introspect", json=body, headers=await h.headers(role))
            assert response.status_code == 403
        response = await h.client.post("/internal/introspect", json=body, headers=await h.service_headers())
        assert response.status_code == 200 and response.json() == {"active": False}

    async def test_introspecting_an_access_token(self, h: AuthHarness) -> None:
        token = await h.token("c_owner")
        service = await h.service_headers()
        response = await h.client.post("/internal/introspect", json={"token": token}, headers=service)
        assert response.json()["active"] is True and response.json()["sub"] == str(h.world.users["c_owner"])
        h.clock.advance(seconds=1000)
        response = await h.client.post("/internal/introspect", json={"token": token}, headers=await h.service_headers())
        assert response.json() == {"active": False}


class TestContextSwitch:
    async def test_a_member_of_two_organisations_switches_on_refresh(self, h: AuthHarness) -> None:
        from auth_svc.roles import Role
        from auth_svc.testing import PASSWORD

        h.clock.advance(seconds=1)  # the first membership is the default context
        await h.service.members.ensure_user(h.world.emails["a_admin"], PASSWORD, h.world.orgs["C"], Role.CLIENT_MEMBER)
        pair = (await h.login("a_admin")).json()
        assert jwt.decode(pair["access_token"], options={"verify_signature": False})["org"] == str(h.world.orgs["A"])
        switched = await h.client.post(
            "/token/refresh", json={"refresh_token": pair["refresh_token"], "organisation_id": str(h.world.orgs["C"])}
        )
        claims = jwt.decode(switched.json()["access_token"], options={"verify_signature": False})
        assert claims["org"] == str(h.world.orgs["C"]) and claims["roles"] == ["client_member"]
        # Not a member of B: no token for it.
        pair = (await h.login("a_admin")).json()
        refused = await h.client.post(
            "/token/refresh", json={"refresh_token": pair["refresh_token"], "organisation_id": str(h.world.orgs["B"])}
        )
        assert refused.status_code == 401
