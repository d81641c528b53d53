"""KSeF certificates (REFERENCE.md §17): the simulator's issuing CA, enrollments and issued certificates.

A KSeF certificate is issued by the simulator CA from the client's PKCS#10 CSR. It belongs to a subject (NIP,
PESEL or fingerprint), not to a context, and authenticates through ``POST /auth/xades-signature`` like any
certificate; it is the one kind of certificate whose chain the simulator can vouch for
(``verifyCertificateChain=true``) and whose revocation it knows about.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ksef_sim.crypto import b64
from ksef_sim.domain.auth import Ident
from ksef_sim.domain.xades import certificate_fingerprint, subject_from_name
from ksef_sim.security import Identifier
from ksef_sim.store import Record, Store

CERTIFICATE_VALIDITY = timedelta(days=2 * 365)
# REFERENCE.md §17: NIP 300 requests / 100 active certificates; PESEL or fingerprint 12 / 6.
LIMITS = {"Nip": (300, 100)}
DEFAULT_LIMITS = (12, 6)


class CertificateStatus(StrEnum):
    ACTIVE = "Active"
    BLOCKED = "Blocked"
    REVOKED = "Revoked"
    EXPIRED = "Expired"


class KsefCertificate(Record):
    KIND = "ksef_certificate"

    serial_number: str  # 16 uppercase hex digits
    name: str
    type: str  # Authentication | Offline
    common_name: str
    subject: Ident
    der_b64: str
    fingerprint: str
    request_date: datetime
    valid_from: datetime
    valid_to: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    last_use_date: datetime | None = None

    def key(self) -> str:
        return self.serial_number

    def status(self, now: datetime) -> CertificateStatus:
        if self.revoked_at is not None:
            return CertificateStatus.REVOKED
        if now >= self.valid_to:
            return CertificateStatus.EXPIRED
        return CertificateStatus.ACTIVE


class CertificateEnrollment(Record):
    KIND = "certificate_enrollment"

    reference_number: str
    request_date: datetime
    subject: Ident
    status_code: int
    status_details: list[str] = []
    certificate_serial_number: str | None = None

    def key(self) -> str:
        return self.reference_number


class CsrError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class SimCa:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def load_or_create(cls, store: Store, now: datetime) -> SimCa:
        saved = store.get_meta("ksef_certificate_ca")
        if saved:
            key = serialization.load_pem_private_key(saved["key"].encode(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cls(key, x509.load_pem_x509_certificate(saved["cert"].encode()))
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "KSeF simulator"),
                x509.NameAttribute(NameOID.COMMON_NAME, "KSeF simulator certificate CA"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=10 * 365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256())
        )
        store.set_meta(
            "ksef_certificate_ca",
            {
                "key": key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode(),
                "cert": cert.public_bytes(serialization.Encoding.PEM).decode(),
            },
        )
        return cls(key, cert)

    def issued(self, certificate: x509.Certificate) -> bool:
        if certificate.issuer != self.certificate.subject:
            return False
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


def serial_hex(certificate: x509.Certificate) -> str:
    return f"{certificate.serial_number:016X}"


def ksef_certificate(store: Store, certificate: x509.Certificate) -> KsefCertificate | None:
    """The KSeF certificate record of ``certificate`` if the simulator issued it, else ``None``."""
    record = store.get(KsefCertificate, serial_hex(certificate))
    if record is None or record.fingerprint != certificate_fingerprint(certificate):
        return None
    return record


def enrollment_data(subject: Identifier) -> dict[str, str]:
    """DN attributes the CSR must carry (``GET /certificates/enrollments/data``)."""
    if subject.type == "Nip":
        return {
            "commonName": f"Podmiot {subject.value}",
            "countryName": "PL",
            "organizationName": f"Podmiot {subject.value}",
            "organizationIdentifier": f"VATPL-{subject.value}",
        }
    if subject.type == "Pesel":
        return {
            "commonName": f"Osoba {subject.value}",
            "countryName": "PL",
            "givenName": "Jan",
            "surname": "Testowy",
            "serialNumber": f"PNOPL-{subject.value}",
        }
    return {"commonName": f"Certyfikat {subject.value[:16]}", "countryName": "PL", "uniqueIdentifier": subject.value}


def load_csr(der: bytes, subject: Identifier) -> x509.CertificateSigningRequest:
    """Parse and check a CSR (25004 format/signature, 25010 key, 25011 algorithm, 25003 other subject)."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise CsrError(25004, "Nie można odczytać CSR (wymagany PKCS#10 w DER).") from exc
    if not csr.is_signature_valid:
        raise CsrError(25004, "Podpis CSR jest nieprawidłowy.")
    public = csr.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise CsrError(25010, f"Klucz RSA {public.key_size} bitów; wymagane co najmniej 2048.")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.key_size < 256:
            raise CsrError(25010, f"Krzywa {public.curve.name} jest za słaba; wymagana co najmniej P-256.")
    else:
        raise CsrError(25010, "Wymagany klucz RSA lub EC.")
    algorithm = csr.signature_hash_algorithm
    if algorithm is None or algorithm.name not in ("sha256", "sha384", "sha512"):
        raise CsrError(25011, "Wymagany podpis CSR z SHA-256, SHA-384 lub SHA-512.")
    if subject.type in ("Nip", "Pesel"):
        named = subject_from_name(csr.subject)
        if named != subject:
            raise CsrError(25003, "Identyfikator w CSR nie zgadza się z uwierzytelnionym podmiotem.")
    return csr


def issue(
    ca: SimCa,
    csr: x509.CertificateSigningRequest,
    *,
    name: str,
    certificate_type: str,
    subject: Identifier,
    now: datetime,
    valid_from: datetime | None,
) -> KsefCertificate:
    start = valid_from or now
    serial = secrets.randbits(60) | (1 << 60)  # 16 hex digits, positive
    key_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=certificate_type == "Offline",
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca.certificate.subject)
        .public_key(csr.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + CERTIFICATE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    common = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(common[0].value) if common else name
    return KsefCertificate(
        serial_number=serial_hex(cert),
        name=name,
        type=certificate_type,
        common_name=common_name,
        subject=Ident.of(subject),
        der_b64=b64(cert.public_bytes(serialization.Encoding.DER)),
        fingerprint=certificate_fingerprint(cert),
        request_date=now,
        valid_from=cert.not_valid_before_utc,
        valid_to=cert.not_valid_after_utc,
    )


def limits_for(subject: Identifier) -> tuple[int, int]:
    """(enrollment requests, active certificates) allowed for ``subject``."""
    return LIMITS.get(subject.type, DEFAULT_LIMITS)
