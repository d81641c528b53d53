"""TEST-only ``/testdata/*``: subjects, persons, permissions, attachment opt-in, context blocks, limit overrides,
and ``GET /limits/*`` reading them back; everything survives a restart."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
from asgi_lifespan import LifespanManager

from ksef_sim.domain.permissions import (
    OWNER_PERMISSIONS,
    context_blocked,
    effective_permissions,
    entity_roles,
    person_deceased,
)
from ksef_sim.main import create_app
from ksef_sim.ratelimit import Group
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

SPEC = Path("/work/shared/ksef/openapi/open-api.json")
NIP = "5261040828"
OTHER_NIP = "7010002137"
PESEL = "90010112345"

Mint = Callable[..., str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
    converted: dict[str, Any] = _nullable_to_jsonschema(json.loads(SPEC.read_text(encoding="utf-8"))["components"])
    return converted


def assert_schema(body: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": _components()}
    errors = [str(error) for error in jsonschema_rs.Draft4Validator(schema).iter_errors(body)]
    assert not errors, f"{schema_name}: {errors}"


def error_code(response: httpx.Response) -> int:
    code: int = response.json()["exception"]["exceptionDetailList"][0]["exceptionCode"]
    return code


# -- subjects and persons ---------------------------------------------------------------------------------------


async def test_subject_create_conflict_and_remove(client: httpx.AsyncClient, sim: Sim) -> None:
    body = {
        "subjectNip": NIP,
        "subjectType": "JST",
        "description": "Gmina testowa",
        "subunits": [{"subjectNip": OTHER_NIP, "description": "Szkoła gminna"}],
    }
    created = await client.post("/testdata/subject", json=body)  # public: no token
    assert created.status_code == 200
    assert [r.role for r in entity_roles(sim.store, NIP)] == ["LocalGovernmentUnit"]
    assert [r.role for r in entity_roles(sim.store, OTHER_NIP)] == ["LocalGovernmentSubUnit"]

    again = await client.post("/testdata/subject", json=body)
    assert again.status_code == 400
    assert error_code(again) == 30001
    assert_schema(again.json(), "ExceptionResponse")

    removed = await client.post("/testdata/subject/remove", json={"subjectNip": NIP})
    assert removed.status_code == 200
    assert entity_roles(sim.store, NIP) == []
    assert entity_roles(sim.store, OTHER_NIP) == []  # members go with their group
    assert (await client.post("/testdata/subject", json=body)).status_code == 200


async def test_subject_validation(client: httpx.AsyncClient) -> None:
    bad_nip = await client.post(
        "/testdata/subject", json={"subjectNip": "0123456789", "subjectType": "JST", "description": "Gmina"}
    )
    assert bad_nip.status_code == 400
    assert error_code(bad_nip) == 21405
    bad_type = await client.post(
        "/testdata/subject", json={"subjectNip": NIP, "subjectType": "Company", "description": "Gmina"}
    )
    assert error_code(bad_type) == 21405


async def test_person_is_owner_until_removed(client: httpx.AsyncClient, sim: Sim, mint_access: Mint) -> None:
    person = {"nip": NIP, "pesel": PESEL, "isBailiff": True, "description": "Komornik sądowy"}
    assert (await client.post("/testdata/person", json=person)).status_code == 200
    duplicate = await client.post("/testdata/person", json=person)
    assert duplicate.status_code == 400
    assert error_code(duplicate) == 30001

    subject = Identifier("Pesel", PESEL)
    now = sim.clock.now()
    assert effective_permissions(sim.store, subject, Identifier("Nip", NIP), now) == OWNER_PERMISSIONS
    assert effective_permissions(sim.store, subject, Identifier("Nip", OTHER_NIP), now) == frozenset()
    roles = await client.get("/permissions/query/entities/roles", headers=bearer(mint_access(NIP)))
    assert [r["role"] for r in roles.json()["roles"]] == ["CourtBailiff"]
    assert not person_deceased(sim.store, subject)

    # The person also held a granted permission elsewhere; removal takes everything away.
    grant = {
        "contextIdentifier": {"type": "Nip", "value": OTHER_NIP},
        "authorizedIdentifier": {"type": "Pesel", "value": PESEL},
        "permissions": [{"permissionType": "InvoiceRead", "description": "Odczyt faktur"}],
    }
    assert (await client.post("/testdata/permissions", json=grant)).status_code == 200
    assert effective_permissions(sim.store, subject, Identifier("Nip", OTHER_NIP), now) == {"InvoiceRead"}
    assert (await client.post("/testdata/person/remove", json={"nip": NIP})).status_code == 200
    assert effective_permissions(sim.store, subject, Identifier("Nip", NIP), now) == frozenset()
    assert effective_permissions(sim.store, subject, Identifier("Nip", OTHER_NIP), now) == frozenset()


async def test_deceased_person(client: httpx.AsyncClient, sim: Sim) -> None:
    person = {"nip": NIP, "pesel": PESEL, "isBailiff": False, "isDeceased": True, "description": "Zmarły"}
    assert (await client.post("/testdata/person", json=person)).status_code == 200
    assert person_deceased(sim.store, Identifier("Pesel", PESEL))
    assert person_deceased(sim.store, Identifier("Nip", NIP))
    assert not person_deceased(sim.store, Identifier("Pesel", "85121254321"))


async def test_testdata_permissions_validate_identifiers(client: httpx.AsyncClient) -> None:
    grant = {
        "contextIdentifier": {"type": "Nip", "value": NIP},
        "authorizedIdentifier": {"type": "Pesel", "value": "99999999999"},  # month 99 is no PESEL
        "permissions": [{"permissionType": "InvoiceRead", "description": "Odczyt faktur"}],
    }
    response = await client.post("/testdata/permissions", json=grant)
    assert response.status_code == 400
    assert error_code(response) == 21405
    grant["authorizedIdentifier"] = {"type": "Pesel", "value": PESEL}
    grant["permissions"] = [{"permissionType": "VatUeManage", "description": "Odczyt faktur"}]
    assert error_code(await client.post("/testdata/permissions", json=grant)) == 21405


# -- attachment opt-in ----------------------------------------------------------------------------------------


async def test_attachment_opt_in_shows_in_permissions_status(
    client: httpx.AsyncClient, sim: Sim, mint_access: Mint
) -> None:
    async def status() -> dict[str, Any]:
        response = await client.get("/permissions/attachments/status", headers=bearer(mint_access(NIP)))
        assert response.status_code == 200
        assert_schema(response.json(), "CheckAttachmentPermissionStatusResponse")
        body: dict[str, Any] = response.json()
        return body

    assert (await status())["isAttachmentAllowed"] is False
    assert (await client.post("/testdata/attachment", json={"nip": NIP})).status_code == 200
    assert await status() == {"isAttachmentAllowed": True, "revokedDate": None}

    end = (sim.clock.now() + timedelta(days=3)).date()
    revoked = await client.post("/testdata/attachment/revoke", json={"nip": NIP, "expectedEndDate": end.isoformat()})
    assert revoked.status_code == 200
    pending = await status()
    assert pending["isAttachmentAllowed"] is True
    assert pending["revokedDate"].startswith(end.isoformat())
    sim.clock.advance(4 * 24 * 3600)
    assert (await status())["isAttachmentAllowed"] is False

    # Opting in again clears the end date; a revoke without one ends it at once.
    await client.post("/testdata/attachment", json={"nip": NIP})
    assert (await status())["isAttachmentAllowed"] is True
    await client.post("/testdata/attachment/revoke", json={"nip": NIP})
    assert (await status())["isAttachmentAllowed"] is False


async def test_attachment_status_needs_credentials_permissions(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token = mint_access(NIP, permissions={"InvoiceWrite"}, subject=Identifier("Pesel", PESEL))
    response = await client.get("/permissions/attachments/status", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["reasonCode"] == "missing-permissions"


# -- context blocks -------------------------------------------------------------------------------------------


async def test_context_block_and_unblock(client: httpx.AsyncClient, sim: Sim) -> None:
    body = {"contextIdentifier": {"type": "InternalId", "value": "5261040828-00015"}}
    assert (await client.post("/testdata/context/block", json=body)).status_code == 200
    assert context_blocked(sim.store, Identifier("InternalId", "5261040828-00015"))
    assert not context_blocked(sim.store, Identifier("Nip", NIP))
    assert (await client.post("/testdata/context/unblock", json=body)).status_code == 200
    assert not context_blocked(sim.store, Identifier("InternalId", "5261040828-00015"))

    missing = await client.post("/testdata/context/block", json={})
    assert missing.status_code == 400
    assert error_code(missing) == 21405
    malformed = await client.post("/testdata/context/block", json={"contextIdentifier": {"type": "Nip", "value": "1"}})
    assert error_code(malformed) == 21405


# -- limits ---------------------------------------------------------------------------------------------------


DEFAULT_SESSION = {"maxInvoiceSizeInMB": 1, "maxInvoiceWithAttachmentSizeInMB": 3, "maxInvoices": 10000}


async def test_context_session_limits(client: httpx.AsyncClient, mint_access: Mint) -> None:
    token, other = mint_access(NIP), mint_access(OTHER_NIP)
    defaults = await client.get("/limits/context", headers=bearer(token))
    assert defaults.status_code == 200
    assert_schema(defaults.json(), "EffectiveContextLimits")
    assert defaults.json() == {"onlineSession": DEFAULT_SESSION, "batchSession": DEFAULT_SESSION}

    changed = {
        "onlineSession": {"maxInvoiceSizeInMB": 2, "maxInvoiceWithAttachmentSizeInMB": 4, "maxInvoices": 5},
        "batchSession": {"maxInvoiceSizeInMB": 5, "maxInvoiceWithAttachmentSizeInMB": 10, "maxInvoices": 100000},
    }
    assert (
        await client.post("/testdata/limits/context/session", json=changed, headers=bearer(token))
    ).status_code == 200
    assert (await client.get("/limits/context", headers=bearer(token))).json() == changed
    # Only the caller's context changes.
    assert (await client.get("/limits/context", headers=bearer(other))).json()["onlineSession"] == DEFAULT_SESSION

    too_big = {**changed, "onlineSession": {**changed["onlineSession"], "maxInvoiceSizeInMB": 6}}
    rejected = await client.post("/testdata/limits/context/session", json=too_big, headers=bearer(token))
    assert rejected.status_code == 400
    assert error_code(rejected) == 21405

    assert (await client.delete("/testdata/limits/context/session", headers=bearer(token))).status_code == 200
    assert (await client.get("/limits/context", headers=bearer(token))).json()["batchSession"] == DEFAULT_SESSION


async def test_subject_certificate_limits(client: httpx.AsyncClient, mint_access: Mint) -> None:
    person = mint_access(NIP, subject=Identifier("Pesel", PESEL))
    entity = mint_access(NIP)
    person_limits = await client.get("/limits/subject", headers=bearer(person))
    assert_schema(person_limits.json(), "EffectiveSubjectLimits")
    assert person_limits.json() == {"enrollment": {"maxEnrollments": 12}, "certificate": {"maxCertificates": 6}}
    entity_limits = await client.get("/limits/subject", headers=bearer(entity))
    assert entity_limits.json() == {"enrollment": {"maxEnrollments": 300}, "certificate": {"maxCertificates": 100}}

    body = {"subjectIdentifierType": "Pesel", "certificate": {"maxCertificates": 2}}
    assert (
        await client.post("/testdata/limits/subject/certificate", json=body, headers=bearer(person))
    ).status_code == 200
    assert (await client.get("/limits/subject", headers=bearer(person))).json() == {
        "enrollment": {"maxEnrollments": 12},
        "certificate": {"maxCertificates": 2},
    }
    assert (await client.delete("/testdata/limits/subject/certificate", headers=bearer(person))).status_code == 200
    assert (await client.get("/limits/subject", headers=bearer(person))).json()["certificate"] == {"maxCertificates": 6}


async def test_limit_endpoints_need_a_token(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/limits/context"),
        ("GET", "/limits/subject"),
        ("GET", "/rate-limits"),
        ("POST", "/testdata/rate-limits/production"),
        ("DELETE", "/testdata/limits/context/session"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, path


# -- restart --------------------------------------------------------------------------------------------------


async def test_test_data_and_limits_survive_a_restart(tmp_path: Path) -> None:
    settings = SimSettings(
        database_path=tmp_path / "sim.sqlite3",
        public_base_url="https://ksef-sim.test",
        rate_limits=RateLimitMode.OFF,
    )

    async def run(step: Callable[[Sim, httpx.AsyncClient, str], Any]) -> None:
        app = create_app(settings)
        async with LifespanManager(app):
            sim: Sim = app.state.sim
            token, _ = sim.tokens.issue_access(
                now=sim.clock.now(),
                ttl=timedelta(minutes=15),
                auth_reference_number="20260101-AU-0000000000-0000000000-00",
                context=Identifier("Nip", NIP),
                subject=Identifier("Nip", NIP),
                auth_method="XadesSignature",
                permissions={"CredentialsManage"},
            )
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test/v2") as client:
                await step(sim, client, token)

    limits = {
        "onlineSession": {"maxInvoiceSizeInMB": 2, "maxInvoiceWithAttachmentSizeInMB": 4, "maxInvoices": 7},
        "batchSession": DEFAULT_SESSION,
    }
    rate_limits = {
        "rateLimits": {g.value: {"perSecond": 3, "perMinute": 4, "perHour": 5} for g in Group if g is not Group.PUBLIC}
    }

    async def first(sim: Sim, client: httpx.AsyncClient, token: str) -> None:
        await client.post(
            "/testdata/person", json={"nip": NIP, "pesel": PESEL, "isBailiff": False, "description": "Właściciel"}
        )
        await client.post("/testdata/context/block", json={"contextIdentifier": {"type": "Nip", "value": OTHER_NIP}})
        await client.post("/testdata/limits/context/session", json=limits, headers=bearer(token))
        assert (await client.post("/testdata/rate-limits", json=rate_limits, headers=bearer(token))).status_code == 200

    async def second(sim: Sim, client: httpx.AsyncClient, token: str) -> None:
        now = sim.clock.now()
        assert (
            effective_permissions(sim.store, Identifier("Pesel", PESEL), Identifier("Nip", NIP), now)
            == OWNER_PERMISSIONS
        )
        assert context_blocked(sim.store, Identifier("Nip", OTHER_NIP))
        assert (await client.get("/limits/context", headers=bearer(token))).json() == limits
        effective = (await client.get("/rate-limits", headers=bearer(token))).json()
        assert effective["other"] == {"perSecond": 3, "perMinute": 4, "perHour": 5}

    await run(first)
    await run(second)
