"""The simulator's "Ministry" key pairs and the KSeF cipher suite (REFERENCE.md §3, §4).

Two RSA-2048 key pairs in self-signed certificates, one per usage (KsefTokenEncryption, SymmetricKeyEncryption),
generated on first start and kept in the state file so clients' cached certificates stay valid across restarts.
``publicKeyId`` = base64(SHA-256(SubjectPublicKeyInfo DER)).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from ksef_sim.store import Store

KSEF_TOKEN_ENCRYPTION = "KsefTokenEncryption"
SYMMETRIC_KEY_ENCRYPTION = "SymmetricKeyEncryption"
USAGES = (KSEF_TOKEN_ENCRYPTION, SYMMETRIC_KEY_ENCRYPTION)

OAEP = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class DecryptionError(Exception):
    pass


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict standard Base64; raises ``ValueError`` on anything else."""
    return base64.b64decode(text, validate=True)


def sha256_b64(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def public_key_id(key: rsa.RSAPublicKey) -> str:
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256_b64(spki)


@dataclass(frozen=True)
class MinistryKey:
    usage: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def public_key_id(self) -> str:
        return public_key_id(self.private_key.public_key())

    @property
    def certificate_der_b64(self) -> str:
        return b64(self.certificate.public_bytes(serialization.Encoding.DER))

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            return self.private_key.decrypt(ciphertext, OAEP)
        except ValueError as exc:
            raise DecryptionError(str(exc)) from exc


def _new_key(usage: str, now: datetime) -> MinistryKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "KSeF simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"KSeF simulator {usage}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3 * 365))
        .sign(key, hashes.SHA256())
    )
    return MinistryKey(usage, key, cert)


class MinistryKeys:
    """Current key per usage plus withdrawn ones (rotation makes their ``publicKeyId`` answer 21470)."""

    def __init__(self, keys: list[MinistryKey]) -> None:
        self._keys = keys

    @classmethod
    def load_or_create(cls, store: Store, now: datetime) -> MinistryKeys:
        saved = store.get_meta("ministry_keys")
        if saved:
            keys = [
                MinistryKey(
                    item["usage"],
                    serialization.load_pem_private_key(item["key"].encode(), password=None),  # type: ignore[arg-type]
                    x509.load_pem_x509_certificate(item["cert"].encode()),
                )
                for item in saved
            ]
            return cls(keys)
        created = cls([_new_key(usage, now) for usage in USAGES])
        created.save(store)
        return created

    def save(self, store: Store) -> None:
        store.set_meta(
            "ministry_keys",
            [
                {
                    "usage": k.usage,
                    "key": k.private_key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                    "cert": k.certificate.public_bytes(serialization.Encoding.PEM).decode(),
                }
                for k in self._keys
            ],
        )

    def rotate(self, store: Store, usage: str, now: datetime) -> MinistryKey:
        """Replace the key of ``usage``; clients holding the old ``publicKeyId`` now get 21470."""
        fresh = _new_key(usage, now)
        self._keys = [k for k in self._keys if k.usage != usage] + [fresh]
        self.save(store)
        return fresh

    def all(self) -> list[MinistryKey]:
        return list(self._keys)

    def for_usage(self, usage: str) -> MinistryKey:
        return next(k for k in self._keys if k.usage == usage)

    def by_id(self, key_id: str) -> MinistryKey | None:
        return next((k for k in self._keys if k.public_key_id == key_id), None)

    def resolve(self, usage: str, key_id: str | None) -> MinistryKey | None:
        """The key to decrypt with: the one named by ``publicKeyId`` (must have ``usage``) or the current one.

        ``None`` means the id is unknown, withdrawn or of another usage: the caller answers 400 21470.
        """
        if key_id is None:
            return self.for_usage(usage)
        key = self.by_id(key_id)
        return key if key is not None and key.usage == usage else None


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-256-CBC + PKCS#7; the IV is never prefixed to the ciphertext (REFERENCE.md §4)."""
    if len(key) != 32 or len(iv) != 16 or not ciphertext or len(ciphertext) % 16:
        raise DecryptionError("invalid key, IV or ciphertext length")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise DecryptionError("bad padding") from exc


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def rsa_oaep_encrypt(certificate_der_b64: str, plaintext: bytes) -> bytes:
    """Client side of the cipher, for tests and the seeding tool."""
    cert = x509.load_der_x509_certificate(b64decode(certificate_der_b64))
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    return public.encrypt(plaintext, OAEP)
