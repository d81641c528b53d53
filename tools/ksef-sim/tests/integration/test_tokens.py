"""KSeF token management (REFERENCE.md §16): create, list, status, revoke."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from ksef_sim.security import Identifier
from ksef_sim.state import Sim

NIP = "5265877635"
OTHER_NIP = "7762811692"
PERSON = Identifier("Pesel", "90010112345")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_codes(response: httpx.Response) -> list[int]:
    return [e["exceptionCode"] for e in response.json()["exception"]["exceptionDetailList"]]


async def create(
    client: httpx.AsyncClient, token: str, description: str = "Token testowy", permissions: list[str] | None = None
) -> httpx.Response:
    return await client.post(
        "/tokens",
        json={"permissions": permissions or ["InvoiceRead"], "description": description},
        headers=bearer(token),
    )


async def test_create_returns_the_token_once_in_the_documented_format(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    response = await create(client, mint_access(NIP), permissions=["InvoiceWrite", "InvoiceRead"])
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"referenceNumber", "token"}
    assert "-EC-" in body["referenceNumber"]
    assert re.fullmatch(rf"{re.escape(body['referenceNumber'])}\|nip-{NIP}\|[0-9a-f]{{64}}", body["token"])
    assert len(body["token"]) <= 160

    status = await client.get(f"/tokens/{body['referenceNumber']}", headers=bearer(mint_access(NIP)))
    assert status.status_code == 200
    item = status.json()
    assert item["status"] == "Active"
    assert item["authorIdentifier"] == {"type": "Nip", "value": NIP}
    assert item["contextIdentifier"] == {"type": "Nip", "value": NIP}
    assert item["requestedPermissions"] == ["InvoiceRead", "InvoiceWrite"]
    assert item["description"] == "Token testowy"
    assert "token" not in item


async def test_internal_id_context_token_format(client: httpx.AsyncClient, sim: Sim) -> None:
    access, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(minutes=15),
        auth_reference_number="20260101-AU-0000000000-0000000000-00",
        context=Identifier("InternalId", f"{NIP}-12345"),
        subject=Identifier("Nip", NIP),
        auth_method="XadesSignature",
        permissions={"InvoiceRead"},
    )
    response = await create(client, access)
    assert response.status_code == 202
    assert f"|internalId-{NIP}-12345|" in response.json()["token"]


async def test_cannot_grant_permissions_the_caller_lacks(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    token = mint_access(NIP, permissions={"InvoiceRead"})
    response = await create(client, token, permissions=["InvoiceRead", "CredentialsManage"])
    assert response.status_code == 400 and error_codes(response) == [26001]
    assert "CredentialsManage" in response.json()["exception"]["exceptionDetailList"][0]["details"][0]


async def test_context_type_other_than_nip_or_internal_id_is_26002(client: httpx.AsyncClient, sim: Sim) -> None:
    access, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(minutes=15),
        auth_reference_number="20260101-AU-0000000000-0000000000-00",
        context=Identifier("NipVatUe", f"{NIP}-DE123456789"),
        subject=Identifier("Fingerprint", "A" * 64),
        auth_method="XadesSignature",
        permissions={"InvoiceRead"},
    )
    response = await create(client, access)
    assert response.status_code == 400 and error_codes(response) == [26002]


async def test_token_authenticated_caller_cannot_create_tokens(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    response = await create(client, mint_access(NIP, auth_method="Token"))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["reasonCode"] == "auth-method-not-allowed"
    assert body["security"] == {"authenticationMethodCategory": "Token"}


async def test_request_validation(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    token = mint_access(NIP)
    assert error_codes(await create(client, token, description="abc")) == [21405]
    assert error_codes(await create(client, token, permissions=["VatUeManage"])) == [21405]
    assert (await client.post("/tokens", json={"permissions": [], "description": "x" * 10})).status_code == 401


async def test_list_is_sorted_paged_and_filtered(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    owner = mint_access(NIP)
    references = []
    for index in range(12):
        sim.clock.advance(1)
        response = await create(client, owner, description=f"Token numer {index:02d}")
        references.append(response.json()["referenceNumber"])
    first = await client.get("/tokens", headers=bearer(owner))
    assert first.status_code == 200
    page = first.json()
    assert [t["referenceNumber"] for t in page["tokens"]] == references[::-1][:10]
    second = await client.get("/tokens", headers={**bearer(owner), "x-continuation-token": page["continuationToken"]})
    assert [t["referenceNumber"] for t in second.json()["tokens"]] == references[1::-1]
    assert second.json().get("continuationToken") is None

    by_description = await client.get("/tokens", params={"description": "NUMER 07"}, headers=bearer(owner))
    assert [t["referenceNumber"] for t in by_description.json()["tokens"]] == [references[7]]
    by_author = await client.get(
        "/tokens",
        params={"authorIdentifier": NIP[:5], "authorIdentifierType": "Pesel", "pageSize": 100},
        headers=bearer(owner),
    )
    assert by_author.json()["tokens"] == []
    by_author = await client.get(
        "/tokens",
        params={"authorIdentifier": NIP[:5], "authorIdentifierType": "Nip", "pageSize": 100},
        headers=bearer(owner),
    )
    assert len(by_author.json()["tokens"]) == 12

    assert (await client.delete(f"/tokens/{references[0]}", headers=bearer(owner))).status_code == 204
    revoked = await client.get("/tokens", params={"status": ["Revoked"]}, headers=bearer(owner))
    assert [t["referenceNumber"] for t in revoked.json()["tokens"]] == [references[0]]
    active = await client.get(
        "/tokens", params={"status": ["Active", "Pending"], "pageSize": 50}, headers=bearer(owner)
    )
    assert len(active.json()["tokens"]) == 11


async def test_list_validation_errors(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    owner = bearer(mint_access(NIP))
    assert error_codes(await client.get("/tokens", params={"pageSize": 101}, headers=owner)) == [21405]
    assert error_codes(await client.get("/tokens", params={"description": "ab"}, headers=owner)) == [21405]
    assert error_codes(await client.get("/tokens", params={"status": ["Gone"]}, headers=owner)) == [21405]
    bad = await client.get("/tokens", headers={**owner, "x-continuation-token": "bm90LWpzb24="})
    assert error_codes(bad) == [21418]


async def test_scope_without_credentials_permissions(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    owner = mint_access(NIP)
    person = mint_access(NIP, permissions={"InvoiceRead", "InvoiceWrite"}, subject=PERSON)
    owners = (await create(client, owner, description="Token właściciela")).json()
    mine = (await create(client, person, description="Token pracownika")).json()
    seen = await client.get("/tokens", headers=bearer(person))
    assert [t["referenceNumber"] for t in seen.json()["tokens"]] == [mine["referenceNumber"]]
    assert seen.json()["tokens"][0]["authorIdentifier"] == {"type": "Pesel", "value": PERSON.value}
    everything = await client.get("/tokens", headers=bearer(owner))
    assert {t["referenceNumber"] for t in everything.json()["tokens"]} == {
        owners["referenceNumber"],
        mine["referenceNumber"],
    }
    hidden = await client.get(f"/tokens/{owners['referenceNumber']}", headers=bearer(person))
    assert hidden.status_code == 403
    refused = await client.delete(f"/tokens/{owners['referenceNumber']}", headers=bearer(person))
    assert refused.status_code == 403 and refused.json()["reasonCode"] == "insufficient-resource-access"
    assert (await client.delete(f"/tokens/{mine['referenceNumber']}", headers=bearer(person))).status_code == 204
    # CredentialsManage revokes anyone's token in the context.
    assert (await client.delete(f"/tokens/{owners['referenceNumber']}", headers=bearer(owner))).status_code == 204


async def test_tokens_of_other_contexts_are_invisible(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    created = (await create(client, mint_access(NIP))).json()
    stranger = mint_access(OTHER_NIP)
    assert (await client.get("/tokens", headers=bearer(stranger))).json()["tokens"] == []
    response = await client.get(f"/tokens/{created['referenceNumber']}", headers=bearer(stranger))
    assert response.status_code == 400
    response = await client.delete(f"/tokens/{created['referenceNumber']}", headers=bearer(stranger))
    assert response.status_code == 400


async def test_revoked_status_and_idempotent_delete(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    owner = bearer(mint_access(NIP))
    created: dict[str, Any] = (await create(client, mint_access(NIP))).json()
    path = f"/tokens/{created['referenceNumber']}"
    assert (await client.delete(path, headers=owner)).status_code == 204
    assert (await client.get(path, headers=owner)).json()["status"] == "Revoked"
    assert (await client.delete(path, headers=owner)).status_code == 204
    bad_ref = await client.get("/tokens/short", headers=owner)
    assert bad_ref.status_code == 400 and error_codes(bad_ref) == [21405]
