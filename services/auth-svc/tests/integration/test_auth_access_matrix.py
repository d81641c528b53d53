"""Every endpoint of auth-svc, every role: exactly the expected status. Another tenant's resources are 404."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from auth_svc.testing import AuthHarness, World, harness_fixture
from platform_common.nip import is_valid_nip

pytestmark = pytest.mark.postgres
h = harness_fixture()

ROLES = ("a_admin", "a_accountant", "c_owner", "c_member", "ops", "b_admin")


def _valid_nips() -> list[str]:
    found = []
    for n in itertools.count(3000000000, 7919):
        if is_valid_nip(str(n)):
            found.append(str(n))
        if len(found) == 40:
            return found
    raise AssertionError


NIPS = iter(_valid_nips())


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    # Status per role, in ROLES order; "anon" (no credential) is always 401 unless given.
    expected: tuple[int, int, int, int, int, int]
    body: Callable[[World, str], Any] | None = None
    anon: int = 401


def _p(template: str, w: World) -> str:
    return template.format(
        A=w.orgs["A"],
        B=w.orgs["B"],
        C=w.orgs["C"],
        E=w.orgs["E"],
        acc=w.users["a_accountant"],
        cm=w.users["c_member"],
        absent=999_999,  # an id that names nothing: an operator gets past the gate and hears 404
    )


CASES = [
    #                                                       a_adm acc  c_own c_mem ops  b_adm
    Case("GET", "/organisations", (200, 200, 200, 200, 200, 200)),
    Case("POST", "/organisations", (403, 403, 403, 403, 201, 403), lambda w, r: {"kind": "office", "name": f"New {r}"}),
    Case("GET", "/organisations/{A}", (200, 200, 404, 404, 200, 404)),
    Case("GET", "/organisations/{C}", (200, 200, 200, 200, 200, 404)),
    Case("PATCH", "/organisations/{A}", (200, 403, 404, 404, 200, 404), lambda w, r: {"name": "Office A"}),
    Case("PATCH", "/organisations/{C}", (404, 404, 200, 403, 200, 404), lambda w, r: {"name": "Client C"}),
    Case("GET", "/organisations/{A}/clients", (200, 200, 404, 404, 200, 404)),
    Case("GET", "/organisations/{C}/clients", (404, 404, 404, 404, 404, 404)),
    Case(
        "POST",
        "/organisations/{A}/clients",
        (201, 403, 404, 404, 201, 404),
        lambda w, r: {"nip": next(NIPS), "name": f"Client of {r}"},
    ),
    Case("DELETE", "/organisations/{A}/clients/{E}", (200, 403, 404, 404, 200, 404)),
    Case("GET", "/organisations/{A}/members", (200, 403, 404, 404, 200, 404)),
    Case("GET", "/organisations/{C}/members", (404, 404, 200, 403, 200, 404)),
    Case(
        "POST",
        "/organisations/{A}/members",
        (201, 403, 404, 404, 201, 404),
        lambda w, r: {"email": f"invitee.{r}@example.com", "role": "office_accountant"},
    ),
    Case(
        "POST",
        "/organisations/{C}/members",
        (404, 404, 201, 403, 201, 404),
        lambda w, r: {"email": f"invitee.{r}@example.com", "role": "client_member"},
    ),
    Case("GET", "/organisations/{A}/invitations", (200, 403, 404, 404, 200, 404)),
    Case(
        "PATCH",
        "/organisations/{A}/members/{acc}",
        (200, 403, 404, 404, 200, 404),
        lambda w, r: {"role": "office_accountant"},
    ),
    Case(
        "PATCH",
        "/organisations/{C}/members/{cm}",
        (404, 404, 200, 403, 200, 404),
        lambda w, r: {"role": "client_member"},
    ),
    Case("POST", "/organisations/{A}/users/{acc}/unlock", (200, 403, 404, 404, 200, 404)),
    Case("POST", "/organisations/{C}/users/{cm}/unlock", (404, 404, 200, 403, 200, 404)),
    Case("GET", "/organisations/{A}/audit", (200, 403, 404, 404, 200, 404)),
    Case("GET", "/organisations/{C}/audit", (404, 404, 200, 403, 200, 404)),
    Case(
        "POST",
        "/organisations/{A}/api-keys",
        (201, 403, 404, 404, 403, 404),
        lambda w, r: {"name": r, "perms": ["ksef.read"]},
    ),
    Case(
        "POST",
        "/organisations/{C}/api-keys",
        (404, 404, 201, 403, 403, 404),
        lambda w, r: {"name": r, "perms": ["ksef.read"]},
    ),
    Case("GET", "/organisations/{A}/api-keys", (200, 403, 404, 404, 200, 404)),
    Case("GET", "/organisations/{C}/api-keys", (404, 404, 200, 403, 200, 404)),
    Case("GET", "/me", (200, 200, 200, 200, 200, 200)),
    Case("POST", "/me/totp", (200, 200, 200, 200, 200, 200)),
    Case("GET", "/roles", (200, 200, 200, 200, 200, 200)),
    Case("GET", "/admin/signing-keys", (403, 403, 403, 403, 200, 403)),
    # The platform's messaging endpoints, shared by every service, checked here with auth-svc's own verification.
    Case("GET", "/ops/messaging", (403, 403, 403, 403, 200, 403)),
    Case("GET", "/ops/dead-letters", (403, 403, 403, 403, 200, 403)),
    Case("POST", "/ops/dead-letters/{absent}/replay", (403, 403, 403, 403, 404, 403)),
    Case("POST", "/internal/introspect", (403, 403, 403, 403, 403, 403), lambda w, r: {"api_key": "khk_x_y"}),
    Case(
        "PUT",
        "/internal/relations",
        (403, 403, 403, 403, 403, 403),
        lambda w, r: {"office_id": str(w.orgs["A"]), "client_id": str(w.orgs["E"]), "state": "active"},
    ),
    # Last: a rotation changes the signing key (the tokens above keep verifying).
    Case("POST", "/admin/signing-keys/rotate", (403, 403, 403, 403, 200, 403)),
    # Public endpoints: authenticated by their body, never by a bearer token.
    Case("GET", "/.well-known/jwks.json", (200, 200, 200, 200, 200, 200), anon=200),
]


async def test_role_matrix(h: AuthHarness) -> None:
    tokens = {role: await h.headers(role) for role in ROLES}
    mismatches = []
    for case in CASES:
        path = _p(case.path, h.world)
        for role, expected in [*zip(ROLES, case.expected, strict=True), ("anon", case.anon)]:
            body = case.body(h.world, role) if case.body else None
            response = await h.client.request(case.method, path, json=body, headers=tokens.get(role, {}))
            if response.status_code != expected:
                mismatches.append(f"{case.method} {case.path} as {role}: {response.status_code} != {expected}")
            elif response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"
    assert not mismatches, "\n".join(mismatches)


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_every_route_is_in_the_matrix() -> None:
    from auth_svc.main import create_app
    from auth_svc.testing import settings_for_tests

    app = create_app(settings_for_tests("sqlite+aiosqlite:///:memory:"))
    covered = {(c.method, _shape(c.path)) for c in CASES}
    # Exercised in their own tests (sessions, tokens, invitations, resets, key revocation, member removal).
    elsewhere = {
        "/login",
        "/token/refresh",
        "/logout",
        "/oauth/token",
        "/invitations/accept",
        "/password-reset",
        "/password-reset/confirm",
        "/me/totp/confirm",
        "/me/totp/disable",
        "/organisations/{org_id}/api-keys/{key_id}",
        "/organisations/{org_id}/members/{user_id}",
        "/organisations/{org_id}/invitations/{invitation_id}",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
    }
    missing = []
    for route in app.routes:
        path = getattr(route, "path", "")
        for method in getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}:
            if path in elsewhere:
                continue
            if (method, _shape(path)) not in covered:
                missing.append(f"{method} {path}")
    assert not missing, missing


async def test_office_b_never_sees_office_a(h: AuthHarness) -> None:
    b = await h.headers("b_admin")
    listed = (await h.client.get("/organisations", headers=b)).json()
    assert {o["id"] for o in listed} == {str(h.world.orgs["B"])}
    key = await h.client.post(
        f"/organisations/{h.world.orgs['A']}/api-keys",
        json={"name": "a", "perms": ["ksef.read"]},
        headers=await h.headers("a_admin"),
    )
    key_id = key.json()["id"]
    office_a = h.world.orgs["A"]
    for method, path in [
        ("DELETE", f"/organisations/{office_a}/api-keys/{key_id}"),
        ("DELETE", f"/organisations/{h.world.orgs['B']}/api-keys/{key_id}"),
        ("DELETE", f"/organisations/{office_a}/members/{h.world.users['a_accountant']}"),
        ("DELETE", f"/organisations/{office_a}/clients/{h.world.orgs['C']}"),
        ("GET", f"/organisations/{h.world.orgs['C']}"),
        ("GET", f"/organisations/{h.world.orgs['E']}"),
    ]:
        response = await h.client.request(method, path, headers=b)
        assert response.status_code == 404, (method, path, response.text)
    # Nothing happened to A's key.
    listed_keys = (await h.client.get(f"/organisations/{office_a}/api-keys", headers=await h.headers("a_admin"))).json()
    assert listed_keys[0]["revoked_at"] is None
