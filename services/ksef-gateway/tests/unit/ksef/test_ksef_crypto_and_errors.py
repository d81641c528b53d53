"""The client's cipher suite, the XAdES AuthTokenRequest and KSeF's two error formats, without a network."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.verifier import SignatureConfiguration, XMLVerifier

from ksef_gateway.ksef.crypto import CryptoError, SymmetricKey, aes_cbc_decrypt, encrypt_ksef_token, sha256_b64
from ksef_gateway.ksef.errors import (
    KsefError,
    KsefForbidden,
    KsefRateLimited,
    KsefUnauthorized,
    KsefUnavailable,
    error_from_response,
    retry_after_seconds,
)
from ksef_gateway.ksef.models import parse_instant
from ksef_gateway.ksef.xades import AUTH_NAMESPACE, sign_auth_token_request
from ksef_gateway.testing import owner_certificate

OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def ministry_key() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ministry test key")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


class TestCrypto:
    def test_the_ksef_token_is_rsa_oaep_sha256_of_token_pipe_timestamp_ms(self) -> None:
        key, certificate = ministry_key()

        encrypted = encrypt_ksef_token(certificate, "20251010-EC-1-2-AB|nip-5265877635|abc", 1752236636015)

        plain = key.decrypt(base64.b64decode(encrypted), OAEP)
        assert plain == b"20251010-EC-1-2-AB|nip-5265877635|abc|1752236636015"

    def test_the_session_key_is_wrapped_for_the_ministry_and_decrypts_what_it_encrypts(self) -> None:
        key, certificate = ministry_key()
        symmetric = SymmetricKey.generate()

        wrapped, iv = symmetric.wrapped(certificate)

        assert key.decrypt(base64.b64decode(wrapped), OAEP) == symmetric.key
        assert base64.b64decode(iv) == symmetric.iv
        ciphertext = symmetric.encrypt(b"<Faktura/>")
        # AES-CBC with PKCS#7 and no IV prefix: 10 bytes become exactly one block (REFERENCE.md §4).
        assert len(ciphertext) == 16
        assert aes_cbc_decrypt(symmetric.key, symmetric.iv, ciphertext) == b"<Faktura/>"
        assert repr(symmetric) == "SymmetricKey()"

    def test_a_wrong_key_or_a_torn_ciphertext_is_a_crypto_error(self) -> None:
        symmetric = SymmetricKey.generate()
        ciphertext = symmetric.encrypt(b"x" * 40)
        with pytest.raises(CryptoError):
            SymmetricKey.generate().decrypt(ciphertext)
        with pytest.raises(CryptoError):
            symmetric.decrypt(ciphertext[:-1])

    def test_hashes_are_standard_base64_sha256(self) -> None:
        assert sha256_b64(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

    def test_seven_fractional_digits_and_offsets_parse(self) -> None:
        assert parse_instant("2025-07-11T12:23:56.0154302+00:00") == datetime(2025, 7, 11, 12, 23, 56, 15430, UTC)
        assert parse_instant("2025-07-11T14:23:56+02:00") == datetime(2025, 7, 11, 12, 23, 56, tzinfo=UTC)


class TestXades:
    def test_the_signed_request_verifies_and_covers_the_auth_token_request(self) -> None:
        credential = owner_certificate("5265877635")

        signed = sign_auth_token_request(
            "20250514-CR-226FB7B000-3ACF9BE4C0-10",
            "5265877635",
            credential.certificate_pem,
            credential.private_key_pem.get_secret_value(),
        )

        certificate = x509.load_pem_x509_certificate(credential.certificate_pem)
        config = SignatureConfiguration(require_x509=True, location="./", expect_references=True)
        result = XMLVerifier().verify(signed, x509_cert=certificate, expect_config=config)
        results = result if isinstance(result, list) else [result]
        document = next(
            r.signed_xml
            for r in results
            if r.signed_xml is not None and etree.QName(r.signed_xml).localname == "AuthTokenRequest"
        )
        assert document is not None
        ns = {"a": AUTH_NAMESPACE}
        assert document.findtext("a:Challenge", namespaces=ns) == "20250514-CR-226FB7B000-3ACF9BE4C0-10"
        assert document.findtext("a:ContextIdentifier/a:Nip", namespaces=ns) == "5265877635"
        assert document.findtext("a:SubjectIdentifierType", namespaces=ns) == "certificateSubject"
        # XAdES-BES: the signed properties name the signing certificate.
        assert b"SignedProperties" in signed and b"SigningCertificate" in signed

    def test_a_tampered_request_does_not_verify(self) -> None:
        credential = owner_certificate("5265877635")
        signed = sign_auth_token_request(
            "20250514-CR-226FB7B000-3ACF9BE4C0-10",
            "5265877635",
            credential.certificate_pem,
            credential.private_key_pem.get_secret_value(),
        )
        tampered = signed.replace(b"<Nip>5265877635</Nip>", b"<Nip>7352765225</Nip>")
        certificate = x509.load_pem_x509_certificate(credential.certificate_pem)
        with pytest.raises(Exception, match=r"(?i)digest|signature"):
            config = SignatureConfiguration(require_x509=True, location="./", expect_references=True)
            XMLVerifier().verify(tampered, x509_cert=certificate, expect_config=config)

    def test_a_key_of_another_certificate_is_refused(self) -> None:
        one, other = owner_certificate("5265877635"), owner_certificate("7352765225")
        with pytest.raises(CryptoError, match="does not belong"):
            sign_auth_token_request(
                "20250514-CR-226FB7B000-3ACF9BE4C0-10",
                "5265877635",
                one.certificate_pem,
                other.private_key_pem.get_secret_value(),
            )

    def test_rsa_keys_sign_too(self) -> None:
        key, _ = ministry_key()
        name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "TINPL-5265877635")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(2)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        signed = sign_auth_token_request(
            "20250514-CR-226FB7B000-3ACF9BE4C0-10",
            "5265877635",
            certificate.public_bytes(serialization.Encoding.PEM),
            pem,
        )
        assert b"rsa-sha256" in signed
        config = SignatureConfiguration(require_x509=True, location="./", expect_references=True)
        XMLVerifier().verify(signed, x509_cert=certificate, expect_config=config)


def _response(
    status: int, body: object = None, headers: dict[str, str] | None = None, *, text: str = ""
) -> httpx.Response:
    if body is not None:
        media = "application/problem+json" if isinstance(body, dict) and "title" in body else "application/json"
        return httpx.Response(status, json=body, headers={"content-type": media, **(headers or {})})
    return httpx.Response(status, text=text, headers=headers)


class TestErrorFormats:
    def test_legacy_exception_response(self) -> None:
        body = {
            "exception": {
                "exceptionDetailList": [
                    {
                        "exceptionCode": 21405,
                        "exceptionDescription": "Błąd walidacji danych wejściowych.",
                        "details": ["pageSize"],
                    },
                    {"exceptionCode": 21418, "exceptionDescription": "Zły token kontynuacji.", "details": None},
                ],
                "referenceNumber": "20250514-SO-2E5C3A7000-8B6F2C91D0-5E",
                "serviceCode": "00-abc-00",
            }
        }
        error = error_from_response(_response(400, body))
        assert type(error) is KsefError
        assert error.http_status == 400 and error.codes == [21405, 21418]
        assert error.description == "Błąd walidacji danych wejściowych.; Zły token kontynuacji."
        assert error.details == ["pageSize"]
        assert error.reference_number == "20250514-SO-2E5C3A7000-8B6F2C91D0-5E"
        assert "21405" in str(error)

    def test_problem_details_400_and_403(self) -> None:
        bad = error_from_response(
            _response(
                400,
                {
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "Żądanie jest nieprawidłowe.",
                    "errors": [{"code": 21470, "description": "Nieprawidłowy klucz.", "details": ["x"]}],
                },
            )
        )
        assert bad.codes == [21470] and bad.description == "Nieprawidłowy klucz."
        forbidden = error_from_response(
            _response(
                403,
                {"title": "Forbidden", "status": 403, "detail": "Brak uprawnień.", "reasonCode": "missing-permissions"},
            )
        )
        assert isinstance(forbidden, KsefForbidden)
        assert forbidden.reason_code == "missing-permissions" and forbidden.description == "Brak uprawnień."

    def test_401_is_unauthorized(self) -> None:
        error = error_from_response(_response(401, {"title": "Unauthorized", "status": 401, "detail": "Token wygasł."}))
        assert isinstance(error, KsefUnauthorized) and error.description == "Token wygasł."

    def test_429_in_both_formats_carries_retry_after(self) -> None:
        legacy = error_from_response(
            _response(
                429,
                {
                    "status": {
                        "code": 429,
                        "description": "Too Many Requests",
                        "details": ["Przekroczono limit 20 żądań."],
                    }
                },
                {"Retry-After": "30"},
            )
        )
        assert isinstance(legacy, KsefRateLimited)
        assert legacy.retry_after_s == 30 and legacy.details == ["Przekroczono limit 20 żądań."]
        problem = error_from_response(
            _response(429, {"title": "Too Many Requests", "status": 429, "detail": "Limit."}, {"Retry-After": "7"})
        )
        assert isinstance(problem, KsefRateLimited) and problem.retry_after_s == 7

    def test_5xx_without_a_body_is_unavailable(self) -> None:
        error = error_from_response(_response(503, text="Service Unavailable", headers={"Retry-After": "60"}))
        assert isinstance(error, KsefUnavailable)
        assert error.http_status == 503 and error.retry_after_s == 60 and error.codes == []

    def test_retry_after_as_an_http_date(self) -> None:
        now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        assert retry_after_seconds("Tue, 01 Dec 2026 12:00:45 GMT", now) == 45
        assert retry_after_seconds("soon", now) is None
        assert retry_after_seconds(None) is None
