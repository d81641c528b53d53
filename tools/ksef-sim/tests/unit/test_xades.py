"""Verification of the signed AuthTokenRequest (REFERENCE.md §3.3), with certificates made here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import methods
from signxml.signer import XMLSigner

from ksef_sim.domain.xades import (
    CERTIFICATE_FINGERPRINT,
    ORGANIZATION_IDENTIFIER,
    XadesError,
    build_auth_request,
    certificate_fingerprint,
    is_seal,
    parse_signed_request,
    sign_enveloped,
    subject_from_certificate,
)
from ksef_sim.security import Identifier

NIP = "5265877635"
CHALLENGE = "20260301-CR-0123456789-ABCDEF0123-45"
NOW = datetime.now(UTC)
V20 = "http://ksef.mf.gov.pl/auth/token/2.0"
V21 = "http://ksef.mf.gov.pl/auth/token/2.1"

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_cert(
    attributes: list[x509.NameAttribute[str]], key: Key | None = None, *, days: int = 30
) -> tuple[Key, x509.Certificate]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attributes)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def person(serial: str = f"TINPL-{NIP}") -> list[x509.NameAttribute[str]]:
    return [
        x509.NameAttribute(NameOID.COMMON_NAME, "Jan Testowy"),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
    ]


@pytest.fixture(scope="module")
def rsa_signer() -> tuple[Key, x509.Certificate]:
    return make_cert(person(), rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_signer() -> tuple[Key, x509.Certificate]:
    return make_cert(person())


@pytest.mark.parametrize("xades", [True, False])
@pytest.mark.parametrize("signer_name", ["rsa_signer", "ec_signer"])
def test_valid_enveloped_signature_is_accepted(request: pytest.FixtureRequest, signer_name: str, xades: bool) -> None:
    key, cert = request.getfixturevalue(signer_name)
    body = sign_enveloped(build_auth_request(CHALLENGE, Identifier("Nip", NIP)), key, cert, xades=xades)
    parsed = parse_signed_request(body, NOW)
    assert parsed.challenge == CHALLENGE
    assert parsed.context == Identifier("Nip", NIP)
    assert parsed.subject_identifier_type == "certificateSubject"
    assert parsed.namespace == V20
    assert parsed.certificate == cert
    assert parsed.allowed_ips == ()


def test_v21_request_with_ip_policy(ec_signer: tuple[Key, x509.Certificate]) -> None:
    key, cert = ec_signer
    document = build_auth_request(
        CHALLENGE,
        Identifier("Nip", NIP),
        namespace=V21,
        allowed_ips={"Ip4Address": ["10.1.2.3"], "Ip4Range": ["10.0.0.1-10.0.0.9"], "Ip4Mask": ["192.168.0.0/16"]},
    )
    parsed = parse_signed_request(sign_enveloped(document, key, cert), NOW)
    assert parsed.namespace == V21
    assert parsed.allowed_ips == ("10.1.2.3", "10.0.0.1-10.0.0.9", "192.168.0.0/16")


def test_v20_schema_loads_and_accepts_ip_policy_and_peppol_id(ec_signer: tuple[Key, x509.Certificate]) -> None:
    # The official v2.0 XSD has regexes libxml2 cannot compile; the simulator repairs them on load.
    key, cert = ec_signer
    document = build_auth_request(
        CHALLENGE,
        Identifier("PeppolId", "PPL123456"),
        allowed_ips={"Ip4Address": ["127.0.0.1"], "Ip4Mask": ["10.0.0.0/8"]},
    )
    parsed = parse_signed_request(sign_enveloped(document, key, cert), NOW)
    assert parsed.context == Identifier("PeppolId", "PPL123456")
    assert parsed.allowed_ips == ("127.0.0.1", "10.0.0.0/8")


def test_tampered_document_fails_signature_check(ec_signer: tuple[Key, x509.Certificate]) -> None:
    key, cert = ec_signer
    body = sign_enveloped(build_auth_request(CHALLENGE, Identifier("Nip", NIP)), key, cert)
    tampered = body.replace(NIP.encode(), b"1111111111", 1)
    assert tampered != body
    with pytest.raises(XadesError) as error:
        parse_signed_request(tampered, NOW)
    assert error.value.code == 9105


def test_tampered_signature_value_fails(rsa_signer: tuple[Key, x509.Certificate]) -> None:
    key, cert = rsa_signer
    root = etree.fromstring(sign_enveloped(build_auth_request(CHALLENGE, Identifier("Nip", NIP)), key, cert))
    value = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue")
    assert value is not None and value.text
    value.text = ("B" if value.text[0] == "A" else "A") + value.text[1:]
    with pytest.raises(XadesError) as error:
        parse_signed_request(etree.tostring(root), NOW)
    assert error.value.code == 9105


def test_detached_signature_is_rejected(ec_signer: tuple[Key, x509.Certificate]) -> None:
    key, cert = ec_signer
    document = build_auth_request(CHALLENGE, Identifier("Nip", NIP))
    signature = XMLSigner(method=methods.detached, signature_algorithm="ecdsa-sha256").sign(
        etree.tostring(document), key=key, cert=[cert], reference_uri="auth-request.xml"
    )
    document.append(signature)
    with pytest.raises(XadesError) as error:
        parse_signed_request(etree.tostring(document), NOW)
    assert error.value.code == 9105
    assert "detached" in " ".join(error.value.details)


def test_unsigned_document_is_9102() -> None:
    body = etree.tostring(build_auth_request(CHALLENGE, Identifier("Nip", NIP)))
    with pytest.raises(XadesError) as error:
        parse_signed_request(body, NOW)
    assert error.value.code == 9102


def test_unreadable_body_is_21001() -> None:
    with pytest.raises(XadesError) as error:
        parse_signed_request(b"<AuthTokenRequest><Challenge>", NOW)
    assert error.value.code == 21001


def test_xsd_violation_is_21401(ec_signer: tuple[Key, x509.Certificate]) -> None:
    key, cert = ec_signer
    document = build_auth_request("not-a-challenge", Identifier("Nip", NIP))
    with pytest.raises(XadesError) as error:
        parse_signed_request(sign_enveloped(document, key, cert), NOW)
    assert error.value.code == 21401
    assert any("Challenge" in detail for detail in error.value.details)


def test_unknown_namespace_is_21401(ec_signer: tuple[Key, x509.Certificate]) -> None:
    key, cert = ec_signer
    document = build_auth_request(CHALLENGE, Identifier("Nip", NIP), namespace="http://ksef.mf.gov.pl/auth/token/1.0")
    with pytest.raises(XadesError) as error:
        parse_signed_request(sign_enveloped(document, key, cert), NOW)
    assert error.value.code == 21401


def test_weak_rsa_key_is_21115() -> None:
    key, cert = make_cert(person(), rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    body = sign_enveloped(build_auth_request(CHALLENGE, Identifier("Nip", NIP)), key, cert, xades=False)
    with pytest.raises(XadesError) as error:
        parse_signed_request(body, NOW)
    assert error.value.code == 21115


def test_expired_certificate_still_parses_status_is_decided_later() -> None:
    key, cert = make_cert(person(), days=-1)  # not_valid_after already in the past
    body = sign_enveloped(build_auth_request(CHALLENGE, Identifier("Nip", NIP)), key, cert)
    assert parse_signed_request(body, NOW).certificate == cert


@pytest.mark.parametrize(
    ("serial", "expected"),
    [
        (f"TINPL-{NIP}", Identifier("Nip", NIP)),
        (f"NIP-{NIP}", Identifier("Nip", NIP)),
        ("PNOPL-90010112345", Identifier("Pesel", "90010112345")),
        ("PESEL:90010112345", Identifier("Pesel", "90010112345")),
        ("IDCPL-ABC123", None),
    ],
)
def test_subject_from_serial_number(serial: str, expected: Identifier | None) -> None:
    _, cert = make_cert(person(serial))
    assert subject_from_certificate(cert, "certificateSubject") == expected
    assert not is_seal(cert)


def test_seal_subject_from_organization_identifier() -> None:
    _, cert = make_cert(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Firma sp. z o.o."),
            x509.NameAttribute(ORGANIZATION_IDENTIFIER, f"VATPL-{NIP}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Firma sp. z o.o."),
        ]
    )
    assert subject_from_certificate(cert, "certificateSubject") == Identifier("Nip", NIP)
    assert is_seal(cert)


def test_fingerprint_subject() -> None:
    _, cert = make_cert(person("IDCPL-ABC123"))
    subject = subject_from_certificate(cert, CERTIFICATE_FINGERPRINT)
    assert subject == Identifier("Fingerprint", certificate_fingerprint(cert))
    assert subject is not None and len(subject.value) == 64 and subject.value == subject.value.upper()
