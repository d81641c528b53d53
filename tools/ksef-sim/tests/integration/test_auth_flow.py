"""The authentication flow over HTTP (REFERENCE.md §3): KSeF token and XAdES, status, redeem, refresh, sessions."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from ksef_sim.crypto import SYMMETRIC_KEY_ENCRYPTION, rsa_oaep_encrypt
from ksef_sim.domain.auth import KsefToken
from ksef_sim.domain.xades import ORGANIZATION_IDENTIFIER, build_auth_request, sign_enveloped
from ksef_sim.refs import REFERENCE_NUMBER_RE, has_valid_checksum
from ksef_sim.security import ACCESS_TOKEN, REFRESH_TOKEN, Identifier
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim
from platform_common.testing import wait_until

NIP = "5265877635"
OTHER_NIP = "7762811692"
PROBLEM = {"X-Error-Format": "problem-details"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_token(
    client: httpx.AsyncClient, access_token: str, permissions: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/tokens",
        json={"permissions": permissions or ["InvoiceRead", "InvoiceWrite"], "description": "Token do testów"},
        headers=bearer(access_token),
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def challenge(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/auth/challenge")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def token_key(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/security/public-key-certificates")
    assert response.status_code == 200
    return next(c for c in response.json() if "KsefTokenEncryption" in c["usage"])


async def submit_token(
    client: httpx.AsyncClient,
    ksef_token: str,
    *,
    nip: str = NIP,
    plaintext: str | None = None,
    challenge_body: dict[str, Any] | None = None,
    public_key_id: str | None = None,
    headers: dict[str, str] | None = None,
    policy: dict[str, Any] | None = None,
) -> httpx.Response:
    ch = challenge_body or await challenge(client)
    key = await token_key(client)
    text = plaintext if plaintext is not None else f"{ksef_token}|{ch['timestampMs']}"
    encrypted = base64.b64encode(rsa_oaep_encrypt(key["certificate"], text.encode())).decode()
    body: dict[str, Any] = {
        "challenge": ch["challenge"],
        "contextIdentifier": {"type": "Nip", "value": nip},
        "encryptedToken": encrypted,
        "publicKeyId": public_key_id or key["publicKeyId"],
    }
    if policy is not None:
        body["authorizationPolicy"] = policy
    return await client.post("/auth/ksef-token", json=body, headers=headers or {})


async def status_of(client: httpx.AsyncClient, init: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(
        f"/auth/{init['referenceNumber']}", headers=bearer(init["authenticationToken"]["token"])
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def redeem(client: httpx.AsyncClient, init: dict[str, Any]) -> httpx.Response:
    return await client.post("/auth/token/redeem", headers=bearer(init["authenticationToken"]["token"]))


def error_codes(response: httpx.Response) -> list[int]:
    body = response.json()
    if "errors" in body:
        return [e["code"] for e in body["errors"]]
    return [e["exceptionCode"] for e in body["exception"]["exceptionDetailList"]]


# --- public keys and challenge ---------------------------------------------------------------------------------


async def test_public_key_certificates_match_the_spec_schema(client: httpx.AsyncClient, sim: Sim) -> None:
    response = await client.get("/security/public-key-certificates")
    assert response.status_code == 200
    items = response.json()
    assert sorted(u for item in items for u in item["usage"]) == ["KsefTokenEncryption", "SymmetricKeyEncryption"]
    for item in items:
        assert set(item) == {"certificate", "certificateId", "publicKeyId", "validFrom", "validTo", "usage"}
        cert = x509.load_der_x509_certificate(base64.b64decode(item["certificate"]))
        assert datetime.fromisoformat(item["validFrom"]) == cert.not_valid_before_utc
        assert datetime.fromisoformat(item["validTo"]) == cert.not_valid_after_utc
        assert item["publicKeyId"] == sim.keys.for_usage(item["usage"][0]).public_key_id


async def test_challenge_fields_are_consistent(client: httpx.AsyncClient) -> None:
    body = await challenge(client)
    assert REFERENCE_NUMBER_RE.match(body["challenge"]) and "-CR-" in body["challenge"]
    assert has_valid_checksum(body["challenge"])
    stamp = datetime.fromisoformat(body["timestamp"])
    assert body["timestampMs"] == int(stamp.timestamp() * 1000)
    assert stamp.microsecond % 1000 == 0
    assert body["clientIp"] == "127.0.0.1"


# --- KSeF token flow -------------------------------------------------------------------------------------------


async def test_full_ksef_token_flow(client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP), ["InvoiceRead", "CredentialsRead"])
    response = await submit_token(client, created["token"])
    assert response.status_code == 202, response.text
    init = response.json()
    assert "-AU-" in init["referenceNumber"] and has_valid_checksum(init["referenceNumber"])

    status = await status_of(client, init)
    assert status["status"] == {"code": 200, "description": "Uwierzytelnianie zakończone sukcesem"}
    assert status["authenticationMethod"] == "Token"
    assert status["authenticationMethodInfo"]["category"] == "Token"
    assert status["isTokenRedeemed"] is False

    tokens = await redeem(client, init)
    assert tokens.status_code == 200, tokens.text
    pair = tokens.json()
    claims = sim.tokens.decode(pair["accessToken"]["token"], expected_type=ACCESS_TOKEN, now=sim.clock.now())
    # The token's permissions ∩ the owner's: exactly what the token was created with.
    assert sorted(claims["per"]) == ["CredentialsRead", "InvoiceRead"]
    assert claims["aum"] == "Token" and claims["tkr"] == created["referenceNumber"]
    assert (claims["cit"], claims["civ"], claims["sit"], claims["siv"]) == ("Nip", NIP, "Nip", NIP)
    assert datetime.fromisoformat(pair["refreshToken"]["validUntil"]) - sim.clock.now() > timedelta(days=6)

    again = await redeem(client, init)
    assert again.status_code == 400 and error_codes(again) == [21301]

    # The access token works, and a token-authenticated caller may not create tokens.
    listed = await client.get("/tokens", headers=bearer(pair["accessToken"]["token"]))
    assert listed.status_code == 200
    assert [t["referenceNumber"] for t in listed.json()["tokens"]] == [created["referenceNumber"]]
    assert listed.json()["tokens"][0]["lastUseDate"] is not None
    forbidden = await client.post(
        "/tokens",
        json={"permissions": ["InvoiceRead"], "description": "Token z tokena"},
        headers=bearer(pair["accessToken"]["token"]),
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["reasonCode"] == "auth-method-not-allowed"

    status = await status_of(client, init)
    assert status["isTokenRedeemed"] is True and "refreshTokenValidUntil" in status

    sim.clock.advance(60)
    refreshed = await client.post("/auth/token/refresh", headers=bearer(pair["refreshToken"]["token"]))
    assert refreshed.status_code == 200, refreshed.text
    new_access = refreshed.json()["accessToken"]["token"]
    assert new_access != pair["accessToken"]["token"]
    assert (await status_of(client, init))["lastTokenRefreshDate"] is not None

    sessions = await client.get("/auth/sessions", headers=bearer(new_access))
    assert sessions.status_code == 200, sessions.text
    items = sessions.json()["items"]
    assert [(i["referenceNumber"], i["isCurrent"]) for i in items] == [(init["referenceNumber"], True)]

    revoked = await client.delete("/auth/sessions/current", headers=bearer(pair["refreshToken"]["token"]))
    assert revoked.status_code == 204
    refused = await client.post("/auth/token/refresh", headers=bearer(pair["refreshToken"]["token"]))
    assert refused.status_code == 400 and error_codes(refused) == [21301]
    assert (await status_of(client, init))["status"]["code"] == 425
    # Access tokens already issued live until they expire.
    assert (await client.get("/tokens", headers=bearer(new_access))).status_code == 200
    assert (await client.get("/auth/sessions", headers=bearer(new_access))).json()["items"] == []


async def test_refresh_picks_up_current_permissions_and_token_revocation(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    init = (await submit_token(client, created["token"])).json()
    pair = (await redeem(client, init)).json()
    revoke = await client.delete(f"/tokens/{created['referenceNumber']}", headers=bearer(mint_access(NIP)))
    assert revoke.status_code == 204
    refused = await client.post("/auth/token/refresh", headers=bearer(pair["refreshToken"]["token"]))
    assert refused.status_code == 400 and error_codes(refused) == [21301]
    assert "unieważniony" in refused.json()["exception"]["exceptionDetailList"][0]["details"][0]


async def test_refresh_token_cannot_be_used_as_access_token(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    init = (await submit_token(client, created["token"])).json()
    pair = (await redeem(client, init)).json()
    assert (await client.get("/tokens", headers=bearer(pair["refreshToken"]["token"]))).status_code == 401
    wrong = await client.post("/auth/token/refresh", headers=bearer(pair["accessToken"]["token"]))
    assert wrong.status_code == 401
    assert wrong.headers["content-type"].startswith("application/problem+json")


async def test_allowed_ips_policy_is_carried_into_the_access_token(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    policy = {"allowedIps": {"ip4Addresses": ["10.9.9.9"], "ip4Masks": ["192.168.0.0/16"]}}
    init = (await submit_token(client, created["token"], policy=policy)).json()
    pair = (await redeem(client, init)).json()
    claims = sim.tokens.decode(pair["accessToken"]["token"], expected_type=ACCESS_TOKEN, now=sim.clock.now())
    assert claims["ips"] == ["10.9.9.9", "192.168.0.0/16"]
    # The test client calls from 127.0.0.1, outside the policy.
    blocked = await client.get("/tokens", headers=bearer(pair["accessToken"]["token"]))
    assert blocked.status_code == 403 and blocked.json()["reasonCode"] == "ip-not-allowed"


async def test_bad_allowed_ip_is_21405(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    response = await submit_token(client, created["token"], policy={"allowedIps": {"ip4Addresses": ["300.1.1.1"]}})
    assert response.status_code == 400 and error_codes(response) == [21405]


@pytest.mark.parametrize(
    ("plaintext", "detail"),
    [
        ("20260101-EC-0000000000-0000000000-00|nip-5265877635|" + "0" * 64 + "|{ms}", "Nieprawidłowy token"),
        ("{token}|{wrong_ms}", "Nieprawidłowy czas tokena"),
        ("{token}", "Nieprawidłowy czas tokena"),
    ],
)
async def test_wrong_token_ends_with_status_450(
    client: httpx.AsyncClient, mint_access: Callable[..., str], plaintext: str, detail: str
) -> None:
    created = await create_token(client, mint_access(NIP))
    ch = await challenge(client)
    text = plaintext.format(token=created["token"], ms=ch["timestampMs"], wrong_ms=ch["timestampMs"] + 1)
    response = await submit_token(client, created["token"], plaintext=text, challenge_body=ch)
    assert response.status_code == 202
    init = response.json()
    status = await status_of(client, init)
    assert status["status"]["code"] == 450
    assert status["status"]["details"] == [detail]
    failed = await redeem(client, init)
    assert failed.status_code == 400 and error_codes(failed) == [21301]


async def test_garbage_ciphertext_is_450_invalid_encoding(client: httpx.AsyncClient) -> None:
    ch = await challenge(client)
    response = await client.post(
        "/auth/ksef-token",
        json={
            "challenge": ch["challenge"],
            "contextIdentifier": {"type": "Nip", "value": NIP},
            "encryptedToken": base64.b64encode(b"\1" * 256).decode(),
        },
    )
    assert response.status_code == 202
    status = await status_of(client, response.json())
    assert status["status"]["code"] == 450 and status["status"]["details"] == ["Invalid token encoding"]


async def test_token_of_another_context_is_450(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    init = (await submit_token(client, created["token"], nip=OTHER_NIP)).json()
    assert (await status_of(client, init))["status"]["code"] == 450


async def test_revoked_token_is_450(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    await client.delete(f"/tokens/{created['referenceNumber']}", headers=bearer(mint_access(NIP)))
    init = (await submit_token(client, created["token"])).json()
    status = await status_of(client, init)
    assert status["status"] == {
        "code": 450,
        "description": "Uwierzytelnianie zakończone niepowodzeniem z powodu błędnego tokenu",
        "details": ["Token unieważniony"],
    }


async def test_author_without_permissions_ends_with_415(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    # A person who held permissions when creating the token but holds none in the context now.
    person = Identifier("Pesel", "90010112345")
    created = await create_token(client, mint_access(NIP, subject=person))
    init = (await submit_token(client, created["token"])).json()
    status = await status_of(client, init)
    assert status["status"]["code"] == 415
    assert status["status"]["details"] == ["Brak przypisanych uprawnień"]
    assert (await redeem(client, init)).status_code == 400


async def test_expired_challenge_is_21111(client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    ch = await challenge(client)
    sim.clock.advance(sim.settings.challenge_ttl_s + 1)
    response = await submit_token(client, created["token"], challenge_body=ch)
    assert response.status_code == 400 and error_codes(response) == [21111]


async def test_challenge_is_single_use(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    ch = await challenge(client)
    first = await submit_token(client, created["token"], challenge_body=ch)
    assert first.status_code == 202
    second = await submit_token(client, created["token"], challenge_body=ch)
    assert second.status_code == 400 and error_codes(second) == [21111]


async def test_unknown_challenge_in_problem_details_format(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    fake = {"challenge": "20260101-CR-0000000000-0000000000-00", "timestampMs": 1}
    response = await submit_token(client, created["token"], challenge_body=fake, headers=PROBLEM)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 400 and body["instance"] == "/v2/auth/ksef-token"
    assert [e["code"] for e in body["errors"]] == [21111]
    assert {"title", "detail", "timestamp", "traceId"} <= set(body)


async def test_wrong_public_key_id_is_21470(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    other = sim.keys.for_usage(SYMMETRIC_KEY_ENCRYPTION).public_key_id
    ch = await challenge(client)
    response = await submit_token(client, created["token"], public_key_id=other, challenge_body=ch)
    assert response.status_code == 400 and error_codes(response) == [21470]
    # The challenge was not consumed by the refused request.
    assert (await submit_token(client, created["token"], challenge_body=ch)).status_code == 202


async def test_status_is_gone_after_retention(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    init = (await submit_token(client, created["token"])).json()
    sim.settings.async_status_retention_s = 60
    sim.clock.advance(61)
    response = await client.get(
        f"/auth/{init['referenceNumber']}", headers=bearer(init["authenticationToken"]["token"])
    )
    assert response.status_code == 410
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 410


async def test_status_of_another_operation_is_forbidden(
    client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    first = (await submit_token(client, created["token"])).json()
    second = (await submit_token(client, created["token"])).json()
    response = await client.get(
        f"/auth/{second['referenceNumber']}", headers=bearer(first["authenticationToken"]["token"])
    )
    assert response.status_code == 403
    unknown = await client.get(
        "/auth/20260101-AU-0000000000-0000000000-00", headers=bearer(first["authenticationToken"]["token"])
    )
    assert unknown.status_code == 400 and error_codes(unknown) == [21304]
    no_token = await client.get(f"/auth/{first['referenceNumber']}")
    assert no_token.status_code == 401


async def test_ksef_token_secret_is_not_stored(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    created = await create_token(client, mint_access(NIP))
    secret = created["token"].rsplit("|", 1)[1]
    record = sim.store.get(KsefToken, created["referenceNumber"])
    assert record is not None and secret not in record.model_dump_json()


async def test_revoke_other_session_by_reference(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    first = (await submit_token(client, created["token"])).json()
    first_pair = (await redeem(client, first)).json()
    second = (await submit_token(client, created["token"])).json()
    second_pair = (await redeem(client, second)).json()
    listed = await client.get("/auth/sessions", headers=bearer(second_pair["accessToken"]["token"]))
    assert {i["referenceNumber"]: i["isCurrent"] for i in listed.json()["items"]} == {
        first["referenceNumber"]: False,
        second["referenceNumber"]: True,
    }
    gone = await client.delete(
        f"/auth/sessions/{first['referenceNumber']}", headers=bearer(second_pair["accessToken"]["token"])
    )
    assert gone.status_code == 204
    refused = await client.post("/auth/token/refresh", headers=bearer(first_pair["refreshToken"]["token"]))
    assert refused.status_code == 400
    ok = await client.post("/auth/token/refresh", headers=bearer(second_pair["refreshToken"]["token"]))
    assert ok.status_code == 200


async def test_sessions_page_size_and_continuation(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    created = await create_token(client, mint_access(NIP))
    for _ in range(11):
        init = (await submit_token(client, created["token"])).json()
    access_token = (await redeem(client, init)).json()["accessToken"]["token"]
    first = (await client.get("/auth/sessions", headers=bearer(access_token))).json()
    assert len(first["items"]) == 10 and first["continuationToken"]
    second = await client.get(
        "/auth/sessions", headers={**bearer(access_token), "x-continuation-token": first["continuationToken"]}
    )
    assert len(second.json()["items"]) == 1 and second.json().get("continuationToken") is None
    bad = await client.get("/auth/sessions", headers={**bearer(access_token), "x-continuation-token": "%%%"})
    assert bad.status_code == 400 and error_codes(bad) == [21418]
    small = await client.get("/auth/sessions", params={"pageSize": 5}, headers=bearer(access_token))
    assert small.status_code == 400 and error_codes(small) == [21405]


# --- XAdES -----------------------------------------------------------------------------------------------------


def self_signed(
    attributes: list[x509.NameAttribute[str]], *, valid_days: int = 30
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attributes)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(now + timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def person_cert(nip: str = NIP, **kwargs: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return self_signed(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jan Testowy"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"TINPL-{nip}"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
        ],
        **kwargs,
    )


async def submit_xades(
    client: httpx.AsyncClient,
    signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    context: Identifier | None = None,
    subject_type: str = "certificateSubject",
    params: dict[str, str] | None = None,
) -> httpx.Response:
    ch = await challenge(client)
    document = build_auth_request(ch["challenge"], context or Identifier("Nip", NIP), subject_type)
    body = sign_enveloped(document, *signer)
    return await client.post(
        "/auth/xades-signature", content=body, headers={"Content-Type": "application/xml"}, params=params or {}
    )


async def test_xades_flow_with_self_signed_certificate(client: httpx.AsyncClient, sim: Sim) -> None:
    response = await submit_xades(client, person_cert())
    assert response.status_code == 202, response.text
    init = response.json()
    status = await status_of(client, init)
    assert status["status"]["code"] == 200
    assert status["authenticationMethod"] == "QualifiedSignature"
    assert status["authenticationMethodInfo"] == {
        "category": "XadesSignature",
        "code": "xades.qualified-signature",
        "displayName": "Podpis kwalifikowany",
    }
    pair = (await redeem(client, init)).json()
    claims = sim.tokens.decode(pair["accessToken"]["token"], expected_type=ACCESS_TOKEN, now=sim.clock.now())
    assert (claims["sit"], claims["siv"], claims["aum"]) == ("Nip", NIP, "XadesSignature")
    assert "InvoiceWrite" in claims["per"] and claims["tkr"] is None
    refresh = sim.tokens.decode(pair["refreshToken"]["token"], expected_type=REFRESH_TOKEN, now=sim.clock.now())
    assert refresh["arn"] == init["referenceNumber"]
    # XAdES-authenticated callers may create KSeF tokens.
    created = await create_token(client, pair["accessToken"]["token"])
    assert created["token"].startswith(f"{created['referenceNumber']}|nip-{NIP}|")


async def test_xades_seal_for_another_context_without_permissions_is_415(client: httpx.AsyncClient) -> None:
    seal = self_signed(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Biuro sp. z o.o."),
            x509.NameAttribute(ORGANIZATION_IDENTIFIER, f"VATPL-{OTHER_NIP}"),
        ]
    )
    init = (await submit_xades(client, seal)).json()
    status = await status_of(client, init)
    assert status["authenticationMethod"] == "QualifiedSeal"
    assert status["status"]["code"] == 415


async def test_xades_expired_certificate_is_460(client: httpx.AsyncClient) -> None:
    response = await submit_xades(client, person_cert(valid_days=-1))
    assert response.status_code == 202
    status = await status_of(client, response.json())
    assert status["status"]["code"] == 460 and status["status"]["details"] == ["Nieważny certyfikat"]


async def test_xades_verify_chain_rejects_self_signed(client: httpx.AsyncClient) -> None:
    response = await submit_xades(client, person_cert(), params={"verifyCertificateChain": "true"})
    status = await status_of(client, response.json())
    assert status["status"]["code"] == 460
    assert status["status"]["details"] == ["Niezaufany łańcuch certyfikatów"]


async def test_xades_errors_are_synchronous(client: httpx.AsyncClient) -> None:
    signer = person_cert()
    ch = await challenge(client)
    document = build_auth_request(ch["challenge"], Identifier("Nip", NIP))
    signed = sign_enveloped(document, *signer)
    xml = {"Content-Type": "application/xml"}
    tampered = signed.replace(ch["challenge"].encode(), ch["challenge"][:-2].encode() + b"00")
    response = await client.post("/auth/xades-signature", content=tampered, headers=xml)
    assert response.status_code == 400 and error_codes(response) == [9105]
    unsigned = build_auth_request(ch["challenge"], Identifier("Nip", NIP))
    response = await client.post("/auth/xades-signature", content=etree.tostring(unsigned), headers=xml)
    assert error_codes(response) == [9102]
    response = await client.post("/auth/xades-signature", content=b"not xml", headers=xml)
    assert error_codes(response) == [21001]
    # The valid document still works: the refused ones did not consume its challenge.
    assert (await client.post("/auth/xades-signature", content=signed, headers=xml)).status_code == 202
    again = await client.post("/auth/xades-signature", content=signed, headers={**xml, **PROBLEM})
    assert again.status_code == 400 and error_codes(again) == [21111]


async def test_xades_certificate_without_identifier_is_21115_unless_fingerprint(client: httpx.AsyncClient) -> None:
    anonymous = self_signed([x509.NameAttribute(NameOID.COMMON_NAME, "Anonim")])
    response = await submit_xades(client, anonymous)
    assert response.status_code == 400 and error_codes(response) == [21115]
    response = await submit_xades(client, anonymous, subject_type="certificateFingerprint")
    assert response.status_code == 202
    assert (await status_of(client, response.json()))["status"]["code"] == 415


async def test_xades_nip_vat_ue_context_requires_fingerprint(client: httpx.AsyncClient) -> None:
    response = await submit_xades(client, person_cert(), context=Identifier("NipVatUe", f"{NIP}-DE123456789"))
    assert response.status_code == 400 and error_codes(response) == [21117]


async def test_blocked_context_ends_with_480(client: httpx.AsyncClient) -> None:
    blocked = await client.post("/testdata/context/block", json={"contextIdentifier": {"type": "Nip", "value": NIP}})
    assert blocked.status_code == 200, blocked.text
    status = await status_of(client, (await submit_xades(client, person_cert())).json())
    assert status["status"]["code"] == 480
    assert status["status"]["description"] == "Uwierzytelnienie zablokowane"


async def test_deceased_person_ends_with_470(client: httpx.AsyncClient) -> None:
    pesel = "15062788702"
    registered = await client.post(
        "/testdata/person",
        json={"nip": NIP, "pesel": pesel, "isBailiff": False, "isDeceased": True, "description": "Osoba zmarła"},
    )
    assert registered.status_code == 200, registered.text
    signer = self_signed(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jan Zmarły"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"PNOPL-{pesel}"),
        ]
    )
    init = (await submit_xades(client, signer)).json()
    status = await status_of(client, init)
    assert status["status"]["code"] == 470
    assert (await redeem(client, init)).status_code == 400


async def test_an_office_certificate_works_in_a_client_context_only_while_the_entity_grant_stands(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    """REFERENCE.md §15 "Accounting office": the office's own certificate (subject = office NIP) authenticates in the
    client's context once the client granted the office's NIP an entity permission; revoked, a new authentication
    ends with 415, and a refresh mints an access token without the permission (403 missing-permissions)."""
    office = person_cert(OTHER_NIP)
    client_context = Identifier("Nip", NIP)

    refused = (await submit_xades(client, office, context=client_context)).json()
    assert (await status_of(client, refused))["status"]["code"] == 415
    assert error_codes(await redeem(client, refused)) == [21301]

    owner = bearer(mint_access(NIP))
    granted = await client.post(
        "/permissions/entities/grants",
        json={
            "subjectIdentifier": {"type": "Nip", "value": OTHER_NIP},
            "permissions": [{"type": "InvoiceRead", "canDelegate": False}],
            "description": "biuro rachunkowe",
            "subjectDetails": {"fullName": "Biuro Rachunkowe"},
        },
        headers=owner,
    )
    assert granted.status_code == 202, granted.text

    init = (await submit_xades(client, office, context=client_context)).json()
    assert (await status_of(client, init))["status"]["code"] == 200
    pair = (await redeem(client, init)).json()
    access = pair["accessToken"]["token"]
    claims = sim.tokens.decode(access, expected_type=ACCESS_TOKEN, now=sim.clock.now())
    assert (claims["civ"], claims["siv"]) == (NIP, OTHER_NIP)
    missing = "/invoices/ksef/5265877635-20260101-0123456789AB-00"
    assert (await client.get(missing, headers=bearer(access))).status_code != 403

    listed = await client.post(
        "/permissions/query/persons/grants", json={"queryType": "PermissionsGrantedInCurrentContext"}, headers=owner
    )
    [grant] = [p for p in listed.json()["permissions"] if p["authorizedIdentifier"]["value"] == OTHER_NIP]
    revoked = await client.delete(f"/permissions/common/grants/{grant['id']}", headers=owner)
    assert revoked.status_code == 202, revoked.text

    again = (await submit_xades(client, office, context=client_context)).json()
    assert (await status_of(client, again))["status"]["code"] == 415
    refreshed = await client.post("/auth/token/refresh", headers=bearer(pair["refreshToken"]["token"]))
    assert refreshed.status_code == 200, refreshed.text
    forbidden = await client.get(missing, headers=bearer(refreshed.json()["accessToken"]["token"]))
    assert forbidden.status_code == 403 and forbidden.json()["reasonCode"] == "missing-permissions"


# --- asynchronous outcome (§3.5) -------------------------------------------------------------------------------


async def test_status_is_in_progress_until_the_processing_delay_passes(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    sim.settings.auth_processing_delay_s = 5
    sim.clock.set(sim.clock.now(), frozen=True)
    created = await create_token(client, mint_access(NIP))
    init = (await submit_token(client, created["token"])).json()

    status = await status_of(client, init)
    assert status["status"] == {"code": 100, "description": "Uwierzytelnianie w toku"}
    assert status["isTokenRedeemed"] is False
    # §3.6: redeeming before the status is 200 is 21301, and it does not use up the one redeem.
    early = await redeem(client, init)
    assert early.status_code == 400 and error_codes(early) == [21301]

    sim.clock.advance(4.9)
    assert (await status_of(client, init))["status"]["code"] == 100
    sim.clock.advance(0.1)
    assert (await status_of(client, init))["status"]["code"] == 200
    assert (await redeem(client, init)).status_code == 200


async def test_a_failed_authentication_is_also_shown_only_after_the_delay(client: httpx.AsyncClient, sim: Sim) -> None:
    sim.settings.auth_processing_delay_s = 2
    sim.clock.set(sim.clock.now(), frozen=True)
    init = (await submit_xades(client, person_cert(valid_days=-1))).json()
    assert (await status_of(client, init))["status"]["code"] == 100
    sim.clock.advance(2)
    status = await status_of(client, init)
    assert status["status"]["code"] == 460 and status["status"]["details"] == ["Nieważny certyfikat"]


async def test_what_changes_while_it_is_processed_decides_the_outcome(client: httpx.AsyncClient, sim: Sim) -> None:
    # The credential is fine at submit; the context is blocked before KSeF finishes, so the outcome is 480.
    sim.settings.auth_processing_delay_s = 3
    sim.clock.set(sim.clock.now(), frozen=True)
    init = (await submit_xades(client, person_cert())).json()
    assert (await status_of(client, init))["status"]["code"] == 100
    blocked = await client.post("/testdata/context/block", json={"contextIdentifier": {"type": "Nip", "value": NIP}})
    assert blocked.status_code == 200, blocked.text
    sim.clock.advance(3)
    assert (await status_of(client, init))["status"]["code"] == 480
    refused = await redeem(client, init)
    assert refused.status_code == 400 and error_codes(refused) == [21301]


async def test_default_delay_on_a_running_clock_ends_in_200(
    client: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    # What a polling client sees with the TEST-like default: first 100, then 200 once the delay has passed.
    sim.settings.auth_processing_delay_s = SimSettings.model_fields["auth_processing_delay_s"].default
    assert sim.settings.auth_processing_delay_s > 0
    created = await create_token(client, mint_access(NIP))
    sim.clock.set(sim.clock.now(), frozen=True)
    init = (await submit_token(client, created["token"])).json()
    seen: list[int] = [(await status_of(client, init))["status"]["code"]]  # at the submit: the clock is frozen
    sim.clock.set(sim.clock.now())

    async def decided() -> bool:
        seen.append((await status_of(client, init))["status"]["code"])
        return seen[-1] != 100

    await wait_until(decided, timeout=30, what="the authentication to be decided")
    assert seen[0] == 100 and seen[-1] == 200 and set(seen) == {100, 200}
    assert (await redeem(client, init)).status_code == 200
