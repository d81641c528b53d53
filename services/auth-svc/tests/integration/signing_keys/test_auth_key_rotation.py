"""Refresh rotation and reuse detection, key rotation seen through the JWKS, rejected tokens, service tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from auth_svc.testing import AuthHarness, harness_fixture

pytestmark = pytest.mark.postgres
h = harness_fixture()


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def verify_with_jwks(token: str, jwks: dict[str, Any], now: float) -> dict[str, Any]:
    """What another service does: pick the key by kid from the published JWKS, check signature and time."""
    kid = jwt.get_unverified_header(token)["kid"]
    matching = [k for k in jwks["keys"] if k["kid"] == kid]
    if not matching:
        raise LookupError(f"kid {kid} is not published")
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(matching[0]).key,
        algorithms=["EdDSA"],
        audience="ksef-hub",
        issuer="ksef-hub-auth",
        options={"verify_exp": False, "verify_iat": False},
    )
    if claims["exp"] <= now:
        raise jwt.ExpiredSignatureError("expired")
    return claims


class TestKeyRotation:
    async def test_tokens_of_the_previous_key_verify_until_they_expire(self, h: AuthHarness) -> None:
        old_token = await h.token("a_admin")
        old_kid = jwt.get_unverified_header(old_token)["kid"]

        h.clock.advance(seconds=600)
        rotated = await h.client.post("/admin/signing-keys/rotate", headers=await h.headers("ops"))
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["kid"]
        assert new_kid != old_kid
        statuses = {k["kid"]: k["status"] for k in rotated.json()["keys"]}
        assert statuses == {new_kid: "current", old_kid: "previous"}

        new_token = await h.token("a_admin")
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        jwks = (await h.client.get("/.well-known/jwks.json")).json()
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
        assert all(set(k) == {"kty", "crv", "x", "kid", "use", "alg"} for k in jwks["keys"])  # no private part
        now = h.clock().timestamp()
        assert verify_with_jwks(old_token, jwks, now)["sub"] == str(h.world.users["a_admin"])
        assert verify_with_jwks(new_token, jwks, now)["sub"] == str(h.world.users["a_admin"])
        assert (await h.client.get("/me", headers={"Authorization": f"Bearer {old_token}"})).status_code == 200

        # The old token expires (900 s after issue); once no token of the old key can be alive, the key leaves.
        h.clock.advance(seconds=301)
        with pytest.raises(jwt.ExpiredSignatureError):
            verify_with_jwks(old_token, jwks, h.clock().timestamp())
        assert (await h.client.get("/me", headers={"Authorization": f"Bearer {old_token}"})).status_code == 401
        h.clock.advance(seconds=900 + 60)
        jwks = (await h.client.get("/.well-known/jwks.json")).json()
        assert {k["kid"] for k in jwks["keys"]} == {new_kid}

    async def test_private_keys_are_stored_encrypted(self, h: AuthHarness) -> None:
        await h.token("a_admin")
        from sqlalchemy import select

        from auth_svc.db import signing_key

        async with h.service.sessionmaker() as session:
            rows = (await session.execute(select(signing_key))).all()
        assert rows and all(r.private_key_enc.startswith("v1.") for r in rows)
        assert all("d" not in r.public_jwk for r in rows)
