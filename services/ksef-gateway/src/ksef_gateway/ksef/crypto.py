"""KSeF's cipher suite, client side (REFERENCE.md §3.2, §4): RSA-OAEP (SHA-256, MGF1-SHA-256) under the
Ministry's certificates, AES-256-CBC with PKCS#7 for content, SHA-256 in standard Base64 for hashes."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

OAEP = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
AES_KEY_BYTES = 32
AES_IV_BYTES = 16


class CryptoError(Exception):
    pass


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha256_b64(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def rsa_oaep_encrypt(certificate: x509.Certificate, plaintext: bytes) -> bytes:
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        # The C# client knows an EC variant for a future EC key; the Ministry publishes only RSA keys today.
        raise CryptoError(f"unsupported Ministry key type {type(public).__name__}; only RSA is published")
    return public.encrypt(plaintext, OAEP)


def encrypt_ksef_token(certificate: x509.Certificate, token: str, timestamp_ms: int) -> str:
    """``encryptedToken`` of POST /auth/ksef-token: ``"{token}|{timestampMs}"`` with the challenge's own
    ``timestampMs`` (converting ``timestamp`` yourself risks a rounding error and status 450, §20.3)."""
    return b64(rsa_oaep_encrypt(certificate, f"{token}|{timestamp_ms}".encode()))


@dataclass(frozen=True)
class SymmetricKey:
    """An AES-256 key and IV for one online session or export; never logged (``repr`` hides both)."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> SymmetricKey:
        return cls(os.urandom(AES_KEY_BYTES), os.urandom(AES_IV_BYTES))

    def wrapped(self, certificate: x509.Certificate) -> tuple[str, str]:
        """``(encryptedSymmetricKey, initializationVector)``: the key under the SymmetricKeyEncryption
        certificate, the IV as plain Base64 (sent only here, never prefixed to ciphertext, §4)."""
        return b64(rsa_oaep_encrypt(certificate, self.key)), b64(self.iv)

    def encrypt(self, plaintext: bytes) -> bytes:
        return aes_cbc_encrypt(self.key, self.iv, plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        return aes_cbc_decrypt(self.key, self.iv, ciphertext)


def aes_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    if len(key) != AES_KEY_BYTES or len(iv) != AES_IV_BYTES:
        raise CryptoError("AES-256-CBC needs a 32-byte key and a 16-byte IV")
    if not ciphertext or len(ciphertext) % 16:
        raise CryptoError("ciphertext length is not a positive multiple of the AES block size")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise CryptoError("bad PKCS#7 padding (wrong key or IV?)") from exc
