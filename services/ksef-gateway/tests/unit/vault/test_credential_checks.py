"""Checks a credential passes before any KSeF call: KSeF token shape and context, certificate, key and password."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from ksef_gateway.ksef.errors import KsefAuthFailed
from ksef_gateway.vault.domain import (
    CredentialError,
    CredentialModel,
    Scope,
    auth_failure,
    certificate_credential,
    check_ksef_token,
    status_for_permissions,
)
from platform_common.nip import InvalidNip, normalize_nip

NIP = "5265877635"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TOKEN = f"20261201-EC-2B0E6F2A10-5C3D9A1B2E-7F|nip-{NIP}|{'0123456789abcdef' * 4}"


def _certificate(
    nip: str = NIP,
    *,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    days: tuple[int, int] = (-1, 30),
) -> tuple[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, x509.Certificate]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jan Kowalski"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"TINPL-{nip}"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: str | None = None) -> SecretStr:
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return SecretStr(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()
    )


class TestKsefToken:
    def test_a_token_of_this_context_passes(self) -> None:
        assert check_ksef_token(TOKEN, NIP).reference_number == "20261201-EC-2B0E6F2A10-5C3D9A1B2E-7F"
        assert check_ksef_token(f"  {TOKEN}\n", NIP).reference_number.startswith("20261201-EC-")

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "not a token",
            "0123456789abcdef" * 4,  # only the secret part
            f"20261201-EC-2B0E6F2A10-5C3D9A1B2E-7F|{NIP}|{'ab' * 32}",  # no nip- prefix
            f"2026-12-01-EC-2B0E6F2A10-5C3D9A1B2E-7F|nip-{NIP}|{'ab' * 32}",
            f"20261201-EC-2B0E6F2A10-5C3D9A1B2E-7F|nip-{NIP}|{'zz' * 32}",  # secret not hex
            f"20261201-EC-2B0E6F2A10-5C3D9A1B2E-7F|nip-{NIP}|{'ab' * 70}",  # over 160 characters
        ],
    )
    def test_malformed_tokens_are_refused_with_the_expected_shape(self, token: str) -> None:
        with pytest.raises(CredentialError) as caught:
            check_ksef_token(token, NIP)
        assert caught.value.code == "ksef-token-malformed"
        assert "<reference number>|nip-<NIP>|<hex secret>" in caught.value.detail
        assert token not in caught.value.detail or not token

    def test_a_token_of_another_context_is_named_as_such(self) -> None:
        with pytest.raises(CredentialError) as caught:
            check_ksef_token(TOKEN, "7352765225")
        assert caught.value.code == "ksef-token-wrong-context"
        assert NIP in caught.value.detail and "7352765225" in caught.value.detail

    def test_an_internal_id_token_is_not_for_a_nip_context(self) -> None:
        token = f"20261201-EC-2B0E6F2A10-5C3D9A1B2E-7F|internalId-{NIP}-00001|{'ab' * 32}"
        with pytest.raises(CredentialError) as caught:
            check_ksef_token(token, NIP)
        assert caught.value.code == "ksef-token-wrong-context"


class TestCertificate:
    def test_pem_with_an_encrypted_key_and_its_password(self) -> None:
        key, cert = _certificate()
        credential, info = certificate_credential(
            _pem(cert), _key_pem(key, "s3cret pass"), SecretStr("s3cret pass"), NOW
        )
        stored = credential.private_key_pem.get_secret_value()
        assert b"ENCRYPTED" not in stored and stored.startswith(b"-----BEGIN PRIVATE KEY-----")
        loaded = serialization.load_pem_private_key(stored, password=None)
        assert loaded.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
        assert info.identity == f"Nip {NIP}" and info.not_after == cert.not_valid_after_utc

    def test_base64_der_certificate_and_key(self) -> None:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key, cert = _certificate(key=rsa_key)
        der_cert = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        der_key = base64.b64encode(
            key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            )
        ).decode()
        credential, info = certificate_credential(der_cert, SecretStr(der_key), None, NOW)
        assert credential.certificate_pem == cert.public_bytes(serialization.Encoding.PEM)
        assert len(info.fingerprint_sha256) == 64

    @pytest.mark.parametrize(
        ("password_used", "password_given", "code"),
        [
            ("right", "wrong", "private-key-wrong-password"),
            ("right", None, "private-key-password-required"),
            (None, "unneeded", "private-key-not-encrypted"),
        ],
    )
    def test_password_problems_are_told_apart(
        self, password_used: str | None, password_given: str | None, code: str
    ) -> None:
        key, cert = _certificate()
        given = SecretStr(password_given) if password_given else None
        with pytest.raises(CredentialError) as caught:
            certificate_credential(_pem(cert), _key_pem(key, password_used), given, NOW)
        assert caught.value.code == code
        assert "right" not in str(caught.value) and "wrong" not in caught.value.detail

    def test_a_key_of_another_certificate_is_refused(self) -> None:
        _key, cert = _certificate()
        other = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(CredentialError) as caught:
            certificate_credential(_pem(cert), _key_pem(other), None, NOW)
        assert caught.value.code == "private-key-mismatch"

    @pytest.mark.parametrize(
        ("days", "code"), [((-30, -1), "certificate-expired"), ((1, 30), "certificate-not-yet-valid")]
    )
    def test_validity_period(self, days: tuple[int, int], code: str) -> None:
        key, cert = _certificate(days=days)
        with pytest.raises(CredentialError) as caught:
            certificate_credential(_pem(cert), _key_pem(key), None, NOW)
        assert caught.value.code == code

    @pytest.mark.parametrize(
        ("certificate", "code"), [("garbage!", "certificate-unreadable"), ("QUJD", "certificate-unreadable")]
    )
    def test_unreadable_certificate(self, certificate: str, code: str) -> None:
        key, _cert = _certificate()
        with pytest.raises(CredentialError) as caught:
            certificate_credential(certificate, _key_pem(key), None, NOW)
        assert caught.value.code == code

    def test_weak_rsa_keys_are_refused(self) -> None:
        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
        key, cert = _certificate(key=weak)
        with pytest.raises(CredentialError) as caught:
            certificate_credential(_pem(cert), _key_pem(key), None, NOW)
        assert caught.value.code == "private-key-unsupported"


class TestScopeAndNip:
    def test_scope_needs(self) -> None:
        assert status_for_permissions(Scope.READ, frozenset({"InvoiceRead"})) == "valid"
        assert status_for_permissions(Scope.READ_SEND, frozenset({"InvoiceRead"})) == "insufficient_permissions"
        assert status_for_permissions(Scope.READ_SEND, frozenset({"InvoiceRead", "InvoiceWrite"})) == "valid"

    def test_nip_checksum(self) -> None:
        assert normalize_nip("526-025-02-16") == "5260250216"
        with pytest.raises(InvalidNip):
            normalize_nip("5260250217")


def test_an_offices_own_token_offered_for_a_client_says_how_delegation_works_with_tokens() -> None:
    office = "5260250216"
    office_token = TOKEN.replace(f"nip-{NIP}", f"nip-{office}")
    with pytest.raises(CredentialError) as plain:
        check_ksef_token(office_token, NIP)
    with pytest.raises(CredentialError) as delegated:
        check_ksef_token(office_token, NIP, delegated=True)
    assert plain.value.code == delegated.value.code == "ksef-token-wrong-context"
    assert "office" not in plain.value.detail
    assert f"context of NIP {NIP}" in delegated.value.detail and "generate a token there" in delegated.value.detail
    assert delegated.value.extensions["token_context_nip"] == office


@pytest.mark.parametrize(
    ("details", "code"),
    [
        # The 460 details the spec lists for GET /auth/{referenceNumber}.
        (["Certyfikat odwołany"], "certificate-revoked"),
        (["Certyfikat zawieszony"], "certificate-suspended"),
        (["Niezaufany łańcuch certyfikatów"], "certificate-untrusted"),
        (["Błąd weryfikacji łańcucha certyfikatów"], "certificate-untrusted"),
        (["Nieważny certyfikat"], "certificate-rejected"),
        (["Niepoprawny certyfikat"], "certificate-rejected"),
        ([], "certificate-rejected"),
    ],
)
def test_each_460_detail_is_its_own_clear_problem(details: list[str], code: str) -> None:
    failure = KsefAuthFailed(
        460, "Uwierzytelnianie zakończone niepowodzeniem z powodu błędu certyfikatu", details, reference_number=None
    )
    error = auth_failure(failure, NIP, CredentialModel.CLIENT)
    assert error.code == code and error.status == 422
    assert error.extensions["ksef_auth_status"] == 460
    assert all(d in error.detail for d in details)
