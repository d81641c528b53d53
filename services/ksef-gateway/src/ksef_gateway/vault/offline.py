"""The client's KSeF certificate of type Offline: stored beside the credentials, used only to sign KOD II.

The private key is sealed like a credential (``vault/envelope.py``, associated data bound to the row's id and the
NIP, so a sealed key copied to another client's row does not open) and never leaves this module but as a key object
handed to the signer. A certificate is accepted only when it can really sign a KOD II now: it is parsed, the key
must be its key, and a trial signature is made and verified the way a verifier would (``sales/qr.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ksef_gateway.sales.qr import certificate_serial, kod_ii, verify_kod_ii
from ksef_gateway.vault import repository
from ksef_gateway.vault.envelope import Envelope, Keyring, open_envelope, seal
from platform_common.auth.clock import Clock, system_clock
from platform_common.db import Database

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
MAX_PEM_BYTES = 64 * 1024


class OfflineCertificateError(Exception):
    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class OfflineCertificateView:
    client_nip: str
    serial: str
    subject: str
    key_type: str
    valid_until: datetime
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class SigningMaterial:
    certificate: x509.Certificate
    private_key: SigningKey


def _aad(certificate_id: uuid.UUID, client_nip: str) -> bytes:
    return f"offline-certificate:{certificate_id}:{client_nip}".encode()


def read_material(certificate_pem: str, private_key_pem: str, password: str | None) -> SigningMaterial:
    if len(certificate_pem) > MAX_PEM_BYTES or len(private_key_pem) > MAX_PEM_BYTES:
        raise OfflineCertificateError("pem-too-large", "A certificate or key in PEM is at most 64 KiB.")
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        raise OfflineCertificateError("bad-certificate", "certificate_pem is not a PEM X.509 certificate.") from None
    try:
        key = serialization.load_pem_private_key(
            private_key_pem.encode(), password.encode() if password is not None else None
        )
    except (ValueError, TypeError):
        raise OfflineCertificateError(
            "bad-private-key", "private_key_pem is not a PEM private key, or the password does not open it."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise OfflineCertificateError("unsupported-key", "KOD II is signed with RSA (RSA-PSS) or EC P-256 (ECDSA).")
    return SigningMaterial(certificate, key)


def check_material(material: SigningMaterial, client_nip: str, now: datetime) -> None:
    """A trial KOD II, signed and verified: every rule of REFERENCE.md §11 that ``kod_ii`` enforces (key type and
    size, the key matching the certificate, validity now, an Offline certificate's key usage) in one place."""
    try:
        trial = kod_ii(
            "https://qr.invalid",
            context_type="Nip",
            context_value=client_nip,
            seller_nip=client_nip,
            certificate=material.certificate,
            private_key=material.private_key,
            xml=b"<trial/>",
            now=now,
        )
    except ValueError as exc:
        raise OfflineCertificateError("unusable-certificate", f"The certificate cannot sign KOD II: {exc}.") from None
    if not verify_kod_ii(trial.url, material.certificate):
        raise OfflineCertificateError("unusable-certificate", "A trial KOD II signature did not verify.")


class OfflineCertificates:
    def __init__(self, db: Database, keyring: Keyring, clock: Clock = system_clock) -> None:
        self._db = db
        self._keyring = keyring
        self.clock = clock

    async def put(
        self, client_nip: str, certificate_pem: str, private_key_pem: str, password: str | None, *, actor: str
    ) -> OfflineCertificateView:
        material = read_material(certificate_pem, private_key_pem, password)
        now = self.clock()
        check_material(material, client_nip, now)
        certificate_id = uuid.uuid4()
        plain_key = material.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        sealed = seal(self._keyring, plain_key, _aad(certificate_id, client_nip))
        values = {
            "client_nip": client_nip,
            "id": certificate_id,
            "certificate_pem": material.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "serial": certificate_serial(material.certificate),
            "subject": material.certificate.subject.rfc4514_string()[:500],
            "key_type": "RSA-PSS" if isinstance(material.private_key, rsa.RSAPrivateKey) else "ECDSA-P256",
            "valid_until": material.certificate.not_valid_after_utc,
            "secret_ciphertext": sealed.ciphertext,
            "wrapped_data_key": sealed.wrapped_key,
            "master_key_id": sealed.master_key_id,
            "created_by": actor,
            "created_at": now,
        }
        async with self._db.sessionmaker() as session, session.begin():
            await repository.put_offline_certificate(session, values)
        view = await self.view(client_nip)
        assert view is not None
        return view

    async def view(self, client_nip: str) -> OfflineCertificateView | None:
        async with self._db.sessionmaker() as session:
            row = await repository.offline_certificate_of(session, client_nip)
        if row is None:
            return None
        return OfflineCertificateView(
            row.client_nip, row.serial, row.subject, row.key_type, row.valid_until, row.created_by, row.created_at
        )

    async def remove(self, client_nip: str) -> bool:
        async with self._db.sessionmaker() as session, session.begin():
            return await repository.delete_offline_certificate(session, client_nip)

    async def signing_material(self, client_nip: str) -> SigningMaterial | None:
        async with self._db.sessionmaker() as session:
            row = await repository.offline_certificate_of(session, client_nip)
        if row is None:
            return None
        envelope = Envelope(
            ciphertext=bytes(row.secret_ciphertext),
            wrapped_key=bytes(row.wrapped_data_key),
            master_key_id=row.master_key_id,
        )
        plain_key = open_envelope(self._keyring, envelope, _aad(row.id, client_nip))
        key = serialization.load_der_private_key(plain_key, None)
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        return SigningMaterial(x509.load_pem_x509_certificate(row.certificate_pem.encode()), key)
