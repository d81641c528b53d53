"""KSeF certificates (REFERENCE.md §17): enrollment from a CSR, and authenticating with the issued certificate."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ksef_sim.domain.xades import ORGANIZATION_IDENTIFIER, build_auth_request, sign_enveloped
from ksef_sim.security import Identifier

NIP = "5265877635"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_codes(response: httpx.Response) -> list[int]:
    return [e["exceptionCode"] for e in response.json()["exception"]["exceptionDetailList"]]


def make_csr(data: dict[str, str], key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    oids = {
        "commonName": NameOID.COMMON_NAME,
        "countryName": NameOID.COUNTRY_NAME,
        "organizationName": NameOID.ORGANIZATION_NAME,
        "organizationIdentifier": ORGANIZATION_IDENTIFIER,
        "serialNumber": NameOID.SERIAL_NUMBER,
        "givenName": NameOID.GIVEN_NAME,
        "surname": NameOID.SURNAME,
    }
    name = x509.Name([x509.NameAttribute(oids[k], v) for k, v in data.items() if k in oids])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


async def enroll(
    client: httpx.AsyncClient, token: str, key: ec.EllipticCurvePrivateKey, name: str = "Certyfikat testowy"
) -> dict[str, Any]:
    data = (await client.get("/certificates/enrollments/data", headers=bearer(token))).json()
    response = await client.post(
        "/certificates/enrollments",
        json={"certificateName": name, "certificateType": "Authentication", "csr": make_csr(data, key)},
        headers=bearer(token),
    )
    assert response.status_code == 202, response.text
    status = await client.get(f"/certificates/enrollments/{response.json()['referenceNumber']}", headers=bearer(token))
    assert status.status_code == 200
    body: dict[str, Any] = status.json()
    return body


async def xades_status(
    client: httpx.AsyncClient, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> dict[str, Any]:
    challenge = (await client.post("/auth/challenge")).json()["challenge"]
    body = sign_enveloped(build_auth_request(challenge, Identifier("Nip", NIP)), key, cert)
    init = await client.post(
        "/auth/xades-signature",
        content=body,
        params={"verifyCertificateChain": "true"},
        headers={"Content-Type": "application/xml"},
    )
    assert init.status_code == 202, init.text
    reference = init.json()["referenceNumber"]
    token = init.json()["authenticationToken"]["token"]
    status: dict[str, Any] = (await client.get(f"/auth/{reference}", headers=bearer(token))).json()
    return status


async def test_enroll_retrieve_authenticate_revoke(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    owner = mint_access(NIP)
    key = ec.generate_private_key(ec.SECP256R1())
    status = await enroll(client, owner, key)
    assert status["status"]["code"] == 200
    serial = status["certificateSerialNumber"]
    assert len(serial) == 16

    retrieved = await client.post(
        "/certificates/retrieve", json={"certificateSerialNumbers": [serial]}, headers=bearer(owner)
    )
    item = retrieved.json()["certificates"][0]
    assert item["certificateSerialNumber"] == serial and item["certificateType"] == "Authentication"
    cert = x509.load_der_x509_certificate(base64.b64decode(item["certificate"]))
    assert f"{cert.serial_number:016X}" == serial
    assert cert.public_key() == key.public_key()

    # The KSeF certificate chains to the simulator CA, so verifyCertificateChain passes.
    auth = await xades_status(client, key, cert)
    assert auth["status"]["code"] == 200
    assert auth["authenticationMethod"] == "InternalCertificate"

    listed = await client.post("/certificates/query", json={"status": "Active"}, headers=bearer(owner))
    assert [c["certificateSerialNumber"] for c in listed.json()["certificates"]] == [serial]
    assert listed.json()["certificates"][0]["subjectIdentifier"] == {"type": "Nip", "value": NIP}
    assert listed.json()["certificates"][0]["lastUseDate"] is not None

    revoked = await client.post(
        f"/certificates/{serial}/revoke", json={"revocationReason": "KeyCompromise"}, headers=bearer(owner)
    )
    assert revoked.status_code == 204
    again = await client.post(f"/certificates/{serial}/revoke", json={}, headers=bearer(owner))
    assert again.status_code == 400 and error_codes(again) == [25009]
    auth = await xades_status(client, key, cert)
    assert auth["status"] == {
        "code": 460,
        "description": "Uwierzytelnianie zakończone niepowodzeniem z powodu błędu certyfikatu",
        "details": ["Certyfikat odwołany"],
    }


async def test_enrollment_checks(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    owner = mint_access(NIP)
    key = ec.generate_private_key(ec.SECP256R1())

    async def submit(csr: str, token: str = owner) -> httpx.Response:
        return await client.post(
            "/certificates/enrollments",
            json={"certificateName": "Certyfikat testowy", "certificateType": "Offline", "csr": csr},
            headers=bearer(token),
        )

    foreign = make_csr({"commonName": "X", "organizationIdentifier": "VATPL-7762811692"}, key)
    assert error_codes(await submit(foreign)) == [25003]
    assert error_codes(await submit(base64.b64encode(b"not a csr").decode())) == [25004]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (must be refused)
    assert error_codes(await submit(make_csr({"organizationIdentifier": f"VATPL-{NIP}"}, weak))) == [25010]
    by_token = mint_access(NIP, auth_method="Token")
    assert error_codes(await submit(foreign, by_token)) == [25002]
    data = await client.get("/certificates/enrollments/data", headers=bearer(by_token))
    assert data.status_code == 400 and error_codes(data) == [25001]
    missing = await client.get("/certificates/enrollments/20260101-CE-0000000000-0000000000-00", headers=bearer(owner))
    assert error_codes(missing) == [25005]
    limits = (await client.get("/certificates/limits", headers=bearer(owner))).json()
    assert limits == {
        "canRequest": True,
        "enrollment": {"remaining": 300, "limit": 300},
        "certificate": {"remaining": 100, "limit": 100},
    }
    unknown = await client.post("/certificates/0000000000000001/revoke", json={}, headers=bearer(owner))
    assert error_codes(unknown) == [25008]
