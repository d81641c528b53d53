"""``/permissions/*``: grants, indirect delegation (accounting office), revokes, operations and queries.

Each response body is also checked against the spec's schema for that operation (open-api.json 2.6.0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from ksef_sim.domain.permissions import (
    OWNER_PERMISSIONS,
    context_blocked,
    effective_permissions,
    register_peppol_provider,
)
from ksef_sim.security import Identifier
from ksef_sim.state import Sim

SPEC = Path("/work/shared/ksef/openapi/open-api.json")

CLIENT = "5261040828"
OFFICE = "7010002137"
OTHER_CLIENT = "1132853869"
EMPLOYEE = "90010112345"
EMPLOYEE_2 = "85121254321"

PERSON = {"subjectDetailsType": "PersonByIdentifier", "personById": {"firstName": "Jan", "lastName": "Kowalski"}}
EG_RE = re.compile(r"^\d{8}-EG-[0-9A-F]{10}-[0-9A-F]{10}-[0-9A-F]{2}$")

Mint = Callable[..., str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- spec conformance ------------------------------------------------------------------------------------------


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` → JSON-Schema ``anyOf [..., null]`` so a plain validator understands it."""
    if isinstance(node, list):
        return [_nullable_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_jsonschema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@cache
def _components() -> dict[str, Any]:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    converted: dict[str, Any] = _nullable_to_jsonschema(spec["components"])
    return converted


def assert_schema(body: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    errors = [str(error) for error in jsonschema_rs.Draft4Validator(schema).iter_errors(body)]
    assert not errors, f"{schema_name}: {errors}\n{json.dumps(body, indent=1)[:2000]}"


# -- helpers ---------------------------------------------------------------------------------------------------


async def operation_code(client: httpx.AsyncClient, token: str, reference: str) -> int:
    response = await client.get(f"/permissions/operations/{reference}", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert_schema(response.json(), "PermissionsOperationStatusResponse")
    code: int = response.json()["status"]["code"]
    return code


async def granted(client: httpx.AsyncClient, token: str, path: str, body: dict[str, Any]) -> str:
    response = await client.post(path, json=body, headers=bearer(token))
    assert response.status_code == 202, response.text
    assert_schema(response.json(), "PermissionsOperationResponse")
    reference: str = response.json()["referenceNumber"]
    assert EG_RE.match(reference)
    return reference


def entity_grant(office: str, *permissions: tuple[str, bool]) -> dict[str, Any]:
    return {
        "subjectIdentifier": {"type": "Nip", "value": office},
        "permissions": [{"type": kind, "canDelegate": delegate} for kind, delegate in permissions],
        "description": "Biuro rachunkowe obsługuje faktury",
        "subjectDetails": {"fullName": "Biuro Rachunkowe Sp. z o.o."},
    }


def indirect_grant(pesel: str, target: dict[str, Any] | None, *permissions: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subjectIdentifier": {"type": "Pesel", "value": pesel},
        "permissions": list(permissions),
        "description": "Księgowa biura dla klienta",
        "subjectDetails": PERSON,
    }
    if target is not None:
        body["targetIdentifier"] = target
    return body


def person_grant(pesel: str, *permissions: str) -> dict[str, Any]:
    return {
        "subjectIdentifier": {"type": "Pesel", "value": pesel},
        "permissions": list(permissions),
        "description": "Pracownik działu księgowości",
        "subjectDetails": PERSON,
    }


def effective(sim: Sim, subject: Identifier, context: str) -> frozenset[str]:
    return effective_permissions(sim.store, subject, Identifier("Nip", context), sim.clock.now())


# -- accounting office delegation ------------------------------------------------------------------------------


async def test_office_gets_client_permissions_and_delegates_them_to_an_employee(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    client_token, office_token = mint_access(CLIENT), mint_access(OFFICE)
    office, employee = Identifier("Nip", OFFICE), Identifier("Pesel", EMPLOYEE)
    assert effective(sim, office, CLIENT) == frozenset()  # no grant: authentication would end with 415

    ref = await granted(
        client,
        client_token,
        "/permissions/entities/grants",
        entity_grant(OFFICE, ("InvoiceRead", True), ("InvoiceWrite", False)),
    )
    assert await operation_code(client, client_token, ref) == 200
    assert effective(sim, office, CLIENT) == {"InvoiceRead", "InvoiceWrite"}

    ref = await granted(
        client,
        office_token,
        "/permissions/indirect/grants",
        indirect_grant(EMPLOYEE, {"type": "Nip", "value": CLIENT}, "InvoiceRead", "InvoiceWrite"),
    )
    assert await operation_code(client, office_token, ref) == 200
    # Only what the client made delegable reaches the employee, and only in that client's context.
    assert effective(sim, employee, CLIENT) == {"InvoiceRead"}
    assert effective(sim, employee, OTHER_CLIENT) == frozenset()
    assert effective(sim, employee, OFFICE) == frozenset()

    # The office sees what it received; the client finds the grant id to revoke.
    received = await client.post("/permissions/query/entities/grants", json={}, headers=bearer(office_token))
    assert received.status_code == 200
    assert_schema(received.json(), "QueryEntityPermissionsResponse")
    assert {
        (p["contextIdentifier"]["value"], p["permissionScope"], p["canDelegate"])
        for p in received.json()["permissions"]
    } == {
        (CLIENT, "InvoiceRead", True),
        (CLIENT, "InvoiceWrite", False),
    }
    listed = await client.post(
        "/permissions/query/persons/grants",
        json={"queryType": "PermissionsInCurrentContext"},
        headers=bearer(client_token),
    )
    assert listed.status_code == 200
    assert_schema(listed.json(), "QueryPersonPermissionsResponse")
    read_id = next(p["id"] for p in listed.json()["permissions"] if p["permissionScope"] == "InvoiceRead")

    revoked = await client.delete(f"/permissions/common/grants/{read_id}", headers=bearer(client_token))
    assert revoked.status_code == 202
    assert await operation_code(client, client_token, revoked.json()["referenceNumber"]) == 200
    assert effective(sim, office, CLIENT) == {"InvoiceWrite"}
    assert effective(sim, employee, CLIENT) == frozenset()

    # The office still lists its indirect grant, now without effect.
    mine = await client.post(
        "/permissions/query/persons/grants",
        json={"queryType": "PermissionsGrantedInCurrentContext"},
        headers=bearer(office_token),
    )
    assert_schema(mine.json(), "QueryPersonPermissionsResponse")
    states = {(p["permissionScope"], p["permissionState"]) for p in mine.json()["permissions"]}
    assert states == {("InvoiceRead", "Inactive"), ("InvoiceWrite", "Inactive")}
    assert all(p["targetIdentifier"] == {"type": "Nip", "value": CLIENT} for p in mine.json()["permissions"])


async def test_general_indirect_grant_covers_every_client_that_delegated(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    employee = Identifier("Pesel", EMPLOYEE)
    await granted(
        client, mint_access(CLIENT), "/permissions/entities/grants", entity_grant(OFFICE, ("InvoiceRead", True))
    )
    await granted(
        client,
        mint_access(OTHER_CLIENT),
        "/permissions/entities/grants",
        entity_grant(OFFICE, ("InvoiceWrite", True)),
    )
    office_token = mint_access(OFFICE)
    ref = await granted(
        client,
        office_token,
        "/permissions/indirect/grants",
        indirect_grant(EMPLOYEE, {"type": "AllPartners"}, "InvoiceRead", "InvoiceWrite"),
    )
    assert await operation_code(client, office_token, ref) == 200
    assert effective(sim, employee, CLIENT) == {"InvoiceRead"}
    assert effective(sim, employee, OTHER_CLIENT) == {"InvoiceWrite"}

    # A grant without targetIdentifier is general too.
    await granted(client, office_token, "/permissions/indirect/grants", indirect_grant(EMPLOYEE_2, None, "InvoiceRead"))
    assert effective(sim, Identifier("Pesel", EMPLOYEE_2), CLIENT) == {"InvoiceRead"}

    personal = await client.post(
        "/permissions/query/personal/grants", json={}, headers=bearer(mint_access(CLIENT, subject=employee))
    )
    assert personal.status_code == 200
    assert_schema(personal.json(), "QueryPersonalPermissionsResponse")
    # In this client's context only what this client made delegable shows.
    assert [p["permissionScope"] for p in personal.json()["permissions"]] == ["InvoiceRead"]


async def test_selective_indirect_grant_without_delegable_grant_fails_in_the_operation(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    # The client granted the office InvoiceRead but without canDelegate.
    await granted(
        client, mint_access(CLIENT), "/permissions/entities/grants", entity_grant(OFFICE, ("InvoiceRead", False))
    )
    office_token = mint_access(OFFICE)
    ref = await granted(
        client,
        office_token,
        "/permissions/indirect/grants",
        indirect_grant(EMPLOYEE, {"type": "Nip", "value": CLIENT}, "InvoiceRead"),
    )
    assert await operation_code(client, office_token, ref) == 430
    assert effective(sim, Identifier("Pesel", EMPLOYEE), CLIENT) == frozenset()
    assert effective(sim, Identifier("Nip", OFFICE), CLIENT) == {"InvoiceRead"}


# -- person grants, owner rule, permission checks -----------------------------------------------------------------


async def test_person_grant_and_revoke(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    employee = Identifier("Pesel", EMPLOYEE)
    ref = await granted(
        client, token, "/permissions/persons/grants", person_grant(EMPLOYEE, "InvoiceRead", "CredentialsRead")
    )
    assert await operation_code(client, token, ref) == 200
    assert effective(sim, employee, CLIENT) == {"InvoiceRead", "CredentialsRead"}
    assert effective(sim, employee, OTHER_CLIENT) == frozenset()

    listed = await client.post(
        "/permissions/query/persons/grants",
        json={"queryType": "PermissionsInCurrentContext", "permissionTypes": ["CredentialsRead"]},
        headers=bearer(token),
    )
    rows = listed.json()["permissions"]
    assert len(rows) == 1
    assert rows[0]["authorizedIdentifier"] == {"type": "Pesel", "value": EMPLOYEE}
    assert rows[0]["authorIdentifier"] == {"type": "Nip", "value": CLIENT}
    assert rows[0]["subjectPersonDetails"]["lastName"] == "Kowalski"
    assert_schema(listed.json(), "QueryPersonPermissionsResponse")

    revoked = await client.delete(f"/permissions/common/grants/{rows[0]['id']}", headers=bearer(token))
    assert revoked.status_code == 202
    assert effective(sim, employee, CLIENT) == {"InvoiceRead"}
    # Gone means gone: a second revoke finds nothing.
    again = await client.delete(f"/permissions/common/grants/{rows[0]['id']}", headers=bearer(token))
    assert again.status_code == 400
    assert again.json()["exception"]["exceptionDetailList"][0]["exceptionCode"] == 21405


async def test_granting_twice_keeps_one_permission(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    for _ in range(2):
        await granted(client, token, "/permissions/persons/grants", person_grant(EMPLOYEE, "InvoiceRead"))
    listed = await client.post(
        "/permissions/query/persons/grants", json={"queryType": "PermissionsInCurrentContext"}, headers=bearer(token)
    )
    assert len(listed.json()["permissions"]) == 1


async def test_caller_without_credentials_manage_gets_403(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(CLIENT, permissions={"InvoiceRead"}, subject=Identifier("Pesel", EMPLOYEE))
    response = await client.post(
        "/permissions/persons/grants", json=person_grant(EMPLOYEE_2, "InvoiceRead"), headers=bearer(token)
    )
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["reasonCode"] == "missing-permissions"
    assert_schema(response.json(), "ForbiddenProblemDetails")
    for path in ("/permissions/entities/grants", "/permissions/indirect/grants"):
        body = (
            entity_grant(OFFICE, ("InvoiceRead", True))
            if "entities" in path
            else indirect_grant(EMPLOYEE, None, "InvoiceRead")
        )
        assert (await client.post(path, json=body, headers=bearer(token))).status_code == 403
    query = await client.post(
        "/permissions/query/persons/grants", json={"queryType": "PermissionsInCurrentContext"}, headers=bearer(token)
    )
    assert query.status_code == 403
    # Reading one's own permissions needs nothing.
    own = await client.post("/permissions/query/personal/grants", json={}, headers=bearer(token))
    assert own.status_code == 200


async def test_enforcement_operations_need_an_enforcement_context(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    token = mint_access(CLIENT)
    ref = await granted(client, token, "/permissions/persons/grants", person_grant(EMPLOYEE, "EnforcementOperations"))
    assert await operation_code(client, token, ref) == 430
    assert effective(sim, Identifier("Pesel", EMPLOYEE), CLIENT) == frozenset()

    created = await client.post(
        "/testdata/subject",
        json={"subjectNip": CLIENT, "subjectType": "EnforcementAuthority", "description": "Organ egzekucyjny"},
    )
    assert created.status_code == 200
    ref = await granted(client, token, "/permissions/persons/grants", person_grant(EMPLOYEE, "EnforcementOperations"))
    assert await operation_code(client, token, ref) == 200
    assert effective(sim, Identifier("Pesel", EMPLOYEE), CLIENT) == {"EnforcementOperations"}


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (lambda b: b.update(description="abc"), "description"),
        (lambda b: b.update(description="x" * 257), "description"),
        (lambda b: b.update(permissions=[]), "permissions"),
        (lambda b: b.update(permissions=["InvoiceRead", "InvoiceRead"]), "permissions"),
        (lambda b: b.update(permissions=["VatUeManage"]), "permissions"),
        (lambda b: b.update(subjectIdentifier={"type": "Pesel", "value": "12345"}), "subjectIdentifier"),
        (lambda b: b.update(subjectIdentifier={"type": "Nip", "value": "0123456789"}), "subjectIdentifier"),
        (lambda b: b.update(subjectDetails={"subjectDetailsType": "PersonByIdentifier"}), "personById"),
    ],
)
async def test_invalid_grant_requests_are_21405(
    client: httpx.AsyncClient, mint_access: Mint, mutate: Callable[[dict[str, Any]], None], detail: str
) -> None:
    body = person_grant(EMPLOYEE, "InvoiceRead")
    mutate(body)
    response = await client.post("/permissions/persons/grants", json=body, headers=bearer(mint_access(CLIENT)))
    assert response.status_code == 400
    error = response.json()["exception"]["exceptionDetailList"][0]
    assert error["exceptionCode"] == 21405
    assert detail in " ".join(error["details"])


# -- operations ------------------------------------------------------------------------------------------------


async def test_operation_status_expires_after_30_days(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    ref = await granted(client, token, "/permissions/persons/grants", person_grant(EMPLOYEE, "InvoiceRead"))
    sim.clock.advance(30 * 24 * 3600 - 60)
    assert await operation_code(client, mint_access(CLIENT), ref) == 200
    sim.clock.advance(120)
    gone = await client.get(f"/permissions/operations/{ref}", headers=bearer(mint_access(CLIENT)))
    assert gone.status_code == 410
    assert_schema(gone.json(), "GoneProblemDetails")


async def test_operation_of_another_context_is_not_found(client: httpx.AsyncClient, mint_access: Mint) -> None:
    ref = await granted(
        client, mint_access(CLIENT), "/permissions/persons/grants", person_grant(EMPLOYEE, "InvoiceRead")
    )
    response = await client.get(f"/permissions/operations/{ref}", headers=bearer(mint_access(OFFICE)))
    assert response.status_code == 400
    assert_schema(response.json(), "ExceptionResponse")


# -- queries: paging and sorting -------------------------------------------------------------------------------


async def test_query_paging_sorts_by_start_date_descending(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    token = mint_access(CLIENT)
    pesels = [f"900101{n:05d}" for n in range(12)]
    for pesel in pesels:
        await granted(client, token, "/permissions/persons/grants", person_grant(pesel, "InvoiceRead"))
        sim.clock.advance(1)
    query = {"queryType": "PermissionsInCurrentContext"}
    first = await client.post(
        "/permissions/query/persons/grants", params={"pageOffset": 0, "pageSize": 10}, json=query, headers=bearer(token)
    )
    second = await client.post(
        "/permissions/query/persons/grants", params={"pageOffset": 1, "pageSize": 10}, json=query, headers=bearer(token)
    )
    assert first.json()["hasMore"] is True
    assert second.json()["hasMore"] is False
    order = [p["authorizedIdentifier"]["value"] for p in first.json()["permissions"] + second.json()["permissions"]]
    assert order == list(reversed(pesels))
    for response in (first, second):
        assert_schema(response.json(), "QueryPersonPermissionsResponse")

    too_small = await client.post(
        "/permissions/query/persons/grants", params={"pageSize": 9}, json=query, headers=bearer(token)
    )
    assert too_small.status_code == 400
    assert too_small.json()["exception"]["exceptionDetailList"][0]["exceptionCode"] == 21405
    too_big = await client.post(
        "/permissions/query/persons/grants", params={"pageSize": 101}, json=query, headers=bearer(token)
    )
    assert too_big.status_code == 400


async def test_query_type_is_required(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    for path in ("/permissions/query/persons/grants", "/permissions/query/authorizations/grants"):
        response = await client.post(path, json={}, headers=bearer(token))
        assert response.status_code == 400, path
        assert response.json()["exception"]["exceptionDetailList"][0]["exceptionCode"] == 21405


async def test_empty_queries_conform_to_the_spec(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    cases: list[tuple[str, str, dict[str, Any] | None, str]] = [
        ("POST", "/permissions/query/personal/grants", None, "QueryPersonalPermissionsResponse"),
        ("POST", "/permissions/query/subunits/grants", {}, "QuerySubunitPermissionsResponse"),
        ("POST", "/permissions/query/entities/grants", None, "QueryEntityPermissionsResponse"),
        ("GET", "/permissions/query/entities/roles", None, "QueryEntityRolesResponse"),
        ("POST", "/permissions/query/subordinate-entities/roles", {}, "QuerySubordinateEntityRolesResponse"),
        ("POST", "/permissions/query/eu-entities/grants", {}, "QueryEuEntityPermissionsResponse"),
    ]
    for method, path, body, schema in cases:
        response = await client.request(method, path, json=body, headers=bearer(token))
        assert response.status_code == 200, (path, response.text)
        assert_schema(response.json(), schema)
        assert response.json()["hasMore"] is False


# -- subunits, roles, authorizations, EU entities ---------------------------------------------------------------


def internal_id(nip: str, five: str) -> str:
    digits = nip + five[:4]
    check = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10
    return f"{nip}-{five[:4]}{check}"


async def test_subunit_administrator(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    unit = internal_id(CLIENT, "0001")
    body = {
        "subjectIdentifier": {"type": "Pesel", "value": EMPLOYEE},
        "contextIdentifier": {"type": "InternalId", "value": unit},
        "description": "Administrator oddziału",
        "subunitName": "Oddział Kraków",
        "subjectDetails": PERSON,
    }
    ref = await granted(client, token, "/permissions/subunits/grants", body)
    assert await operation_code(client, token, ref) == 200
    held = effective_permissions(
        sim.store, Identifier("Pesel", EMPLOYEE), Identifier("InternalId", unit), sim.clock.now()
    )
    assert held == {"CredentialsManage"}

    listed = await client.post("/permissions/query/subunits/grants", json={}, headers=bearer(token))
    assert_schema(listed.json(), "QuerySubunitPermissionsResponse")
    [row] = listed.json()["permissions"]
    assert row["subunitIdentifier"] == {"type": "InternalId", "value": unit}
    assert row["subunitName"] == "Oddział Kraków"

    # A bad checksum is rejected at once; a subunit of another NIP fails in the operation.
    wrong = dict(body, contextIdentifier={"type": "InternalId", "value": unit[:-1] + str((int(unit[-1]) + 1) % 10)})
    assert (await client.post("/permissions/subunits/grants", json=wrong, headers=bearer(token))).status_code == 400
    foreign = dict(body, contextIdentifier={"type": "InternalId", "value": internal_id(OFFICE, "0001")})
    ref = await granted(client, token, "/permissions/subunits/grants", foreign)
    assert await operation_code(client, token, ref) == 410


async def test_vat_group_roles(client: httpx.AsyncClient, mint_access: Mint) -> None:
    created = await client.post(
        "/testdata/subject",
        json={
            "subjectNip": CLIENT,
            "subjectType": "VatGroup",
            "description": "Grupa VAT testowa",
            "subunits": [{"subjectNip": OFFICE, "description": "Członek grupy VAT"}],
        },
    )
    assert created.status_code == 200
    group_roles = await client.get("/permissions/query/entities/roles", headers=bearer(mint_access(CLIENT)))
    assert_schema(group_roles.json(), "QueryEntityRolesResponse")
    assert [r["role"] for r in group_roles.json()["roles"]] == ["VatGroupUnit"]
    member_roles = await client.get("/permissions/query/entities/roles", headers=bearer(mint_access(OFFICE)))
    [member] = member_roles.json()["roles"]
    assert member["role"] == "VatGroupSubUnit"
    assert member["parentEntityIdentifier"] == {"type": "Nip", "value": CLIENT}
    subordinate = await client.post(
        "/permissions/query/subordinate-entities/roles", json={}, headers=bearer(mint_access(CLIENT))
    )
    assert_schema(subordinate.json(), "QuerySubordinateEntityRolesResponse")
    assert subordinate.json()["roles"][0]["subordinateEntityIdentifier"] == {"type": "Nip", "value": OFFICE}

    # The group may now make a member's administrator.
    body = {
        "subjectIdentifier": {"type": "Pesel", "value": EMPLOYEE},
        "contextIdentifier": {"type": "Nip", "value": OFFICE},
        "description": "Administrator członka grupy",
        "subjectDetails": PERSON,
    }
    ref = await granted(client, mint_access(CLIENT), "/permissions/subunits/grants", body)
    assert await operation_code(client, mint_access(CLIENT), ref) == 200
    # ... but not of an entity outside the group.
    outside = dict(body, contextIdentifier={"type": "Nip", "value": OTHER_CLIENT})
    ref = await granted(client, mint_access(CLIENT), "/permissions/subunits/grants", outside)
    assert await operation_code(client, mint_access(CLIENT), ref) == 440


async def test_authorization_grants(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    token = mint_access(CLIENT)
    body = {
        "subjectIdentifier": {"type": "Nip", "value": OFFICE},
        "permission": "SelfInvoicing",
        "description": "Samofakturowanie przez nabywcę",
        "subjectDetails": {"fullName": "Nabywca Sp. z o.o."},
    }
    ref = await granted(client, token, "/permissions/authorizations/grants", body)
    assert await operation_code(client, token, ref) == 200
    # Not a person permission: it gives nobody the right to log into the client's context.
    assert effective(sim, Identifier("Nip", OFFICE), CLIENT) == frozenset()

    granted_list = await client.post(
        "/permissions/query/authorizations/grants", json={"queryType": "Granted"}, headers=bearer(token)
    )
    assert_schema(granted_list.json(), "QueryEntityAuthorizationPermissionsResponse")
    [row] = granted_list.json()["authorizationGrants"]
    assert row["authorizingEntityIdentifier"] == {"type": "Nip", "value": CLIENT}
    assert row["authorizedEntityIdentifier"] == {"type": "Nip", "value": OFFICE}
    received = await client.post(
        "/permissions/query/authorizations/grants", json={"queryType": "Received"}, headers=bearer(mint_access(OFFICE))
    )
    assert [r["id"] for r in received.json()["authorizationGrants"]] == [row["id"]]

    # PefInvoicing goes to a Peppol provider only.
    pef = dict(body, permission="PefInvoicing")
    ref = await granted(client, token, "/permissions/authorizations/grants", pef)
    assert await operation_code(client, token, ref) == 450

    wrong_endpoint = await client.delete(f"/permissions/common/grants/{row['id']}", headers=bearer(token))
    assert wrong_endpoint.status_code == 400
    revoked = await client.delete(f"/permissions/authorizations/grants/{row['id']}", headers=bearer(token))
    assert revoked.status_code == 202
    after = await client.post(
        "/permissions/query/authorizations/grants", json={"queryType": "Granted"}, headers=bearer(token)
    )
    assert after.json()["authorizationGrants"] == []


async def test_eu_entity_administrator_and_representative(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    admin_fp, rep_fp = "A" * 64, "b" * 64
    eu_context = f"{CLIENT}-DE123456789"
    body = {
        "subjectIdentifier": {"type": "Fingerprint", "value": admin_fp},
        "contextIdentifier": {"type": "NipVatUe", "value": eu_context},
        "description": "Administrator podmiotu unijnego",
        "euEntityName": "Firma GmbH, Berlin",
        "subjectDetails": {
            "subjectDetailsType": "PersonByFingerprintWithoutIdentifier",
            "personByFpNoId": {
                "firstName": "Hans",
                "lastName": "Muster",
                "birthDate": "1980-01-01",
                "idDocument": {"type": "ID", "number": "X1234", "country": "DE"},
            },
        },
        "euEntityDetails": {"fullName": "Firma GmbH", "address": "Berlin"},
    }
    token = mint_access(CLIENT)
    ref = await granted(client, token, "/permissions/eu-entities/administration/grants", body)
    assert await operation_code(client, token, ref) == 200
    admin = Identifier("Fingerprint", admin_fp)
    held = effective_permissions(sim.store, admin, Identifier("NipVatUe", eu_context), sim.clock.now())
    assert held == {"VatUeManage", "InvoiceWrite", "InvoiceRead", "Introspection"}

    # mint_access builds a Nip context; make the EU one by hand through the token service.
    eu_token, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(minutes=15),
        auth_reference_number="20260101-AU-0000000000-0000000000-00",
        context=Identifier("NipVatUe", eu_context),
        subject=admin,
        auth_method="XadesSignature",
        permissions=held,
    )
    rep = {
        "subjectIdentifier": {"type": "Fingerprint", "value": rep_fp},
        "permissions": ["InvoiceWrite"],
        "description": "Reprezentant podmiotu unijnego",
        "subjectDetails": {
            "subjectDetailsType": "EntityByFingerprint",
            "entityByFp": {"fullName": "Rep", "address": "Wien"},
        },
    }
    ref = await granted(client, eu_token, "/permissions/eu-entities/grants", rep)
    assert await operation_code(client, eu_token, ref) == 200
    rep_held = effective_permissions(
        sim.store, Identifier("Fingerprint", rep_fp.upper()), Identifier("NipVatUe", eu_context), sim.clock.now()
    )
    assert rep_held == {"InvoiceWrite"}

    listed = await client.post("/permissions/query/eu-entities/grants", json={}, headers=bearer(token))
    assert_schema(listed.json(), "QueryEuEntityPermissionsResponse")
    rows = listed.json()["permissions"]
    assert {r["permissionScope"] for r in rows} == {"VatUeManage", "InvoiceWrite", "InvoiceRead", "Introspection"}
    assert all(r["vatUeIdentifier"] == "DE123456789" and r["euEntityName"] == "Firma GmbH, Berlin" for r in rows)
    in_eu = await client.post("/permissions/query/eu-entities/grants", json={}, headers=bearer(eu_token))
    assert len(in_eu.json()["permissions"]) == 5

    # Another NIP's EU context is refused in the operation.
    foreign = dict(body, contextIdentifier={"type": "NipVatUe", "value": f"{OFFICE}-DE123456789"})
    ref = await granted(client, token, "/permissions/eu-entities/administration/grants", foreign)
    assert await operation_code(client, token, ref) == 410


# -- TEST data seen through permissions ----------------------------------------------------------------------------


async def test_testdata_person_owns_the_nip_and_test_permissions_apply(client: httpx.AsyncClient, sim: Sim) -> None:
    person = {"nip": CLIENT, "pesel": EMPLOYEE, "isBailiff": False, "description": "Właściciel firmy"}
    assert (await client.post("/testdata/person", json=person)).status_code == 200
    assert effective(sim, Identifier("Pesel", EMPLOYEE), CLIENT) == OWNER_PERMISSIONS

    grant = {
        "contextIdentifier": {"type": "Nip", "value": OFFICE},
        "authorizedIdentifier": {"type": "Pesel", "value": EMPLOYEE_2},
        "permissions": [{"permissionType": "InvoiceWrite", "description": "Wystawianie faktur"}],
    }
    assert (await client.post("/testdata/permissions", json=grant)).status_code == 200
    assert effective(sim, Identifier("Pesel", EMPLOYEE_2), OFFICE) == {"InvoiceWrite"}
    revoke = {k: grant[k] for k in ("contextIdentifier", "authorizedIdentifier")}
    assert (await client.post("/testdata/permissions/revoke", json=revoke)).status_code == 200
    assert effective(sim, Identifier("Pesel", EMPLOYEE_2), OFFICE) == frozenset()

    blocked = {"contextIdentifier": {"type": "Nip", "value": CLIENT}}
    assert (await client.post("/testdata/context/block", json=blocked)).status_code == 200
    assert context_blocked(sim.store, Identifier("Nip", CLIENT))
    assert not context_blocked(sim.store, Identifier("Nip", OFFICE))


async def test_peppol_query(client: httpx.AsyncClient, sim: Sim) -> None:
    empty = await client.get("/peppol/query")
    assert empty.status_code == 200
    assert empty.json() == {"peppolProviders": [], "hasMore": False}
    for n in range(11):
        register_peppol_provider(sim.store, f"PPL{n:06d}", f"Dostawca {n}", sim.clock.now())
        sim.clock.advance(1)
    first = await client.get("/peppol/query", params={"pageSize": 10})
    assert_schema(first.json(), "QueryPeppolProvidersResponse")
    assert first.json()["hasMore"] is True
    assert first.json()["peppolProviders"][0]["id"] == "PPL000010"
    second = await client.get("/peppol/query", params={"pageOffset": 1, "pageSize": 10})
    assert [p["id"] for p in second.json()["peppolProviders"]] == ["PPL000000"]
    assert (await client.get("/peppol/query", params={"pageSize": 5})).status_code == 400
