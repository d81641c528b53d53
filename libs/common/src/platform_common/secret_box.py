"""AES-256-GCM for secrets a service must read back (signing keys, TOTP seeds, webhook signing secrets): random
96-bit nonce, ``aad`` binding a ciphertext to its row, so a value copied into another row does not open there."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32


def check_key(key_b64: str, *, name: str) -> None:
    """``ValueError`` naming the setting (never the value) unless ``key_b64`` is base64 of 32 bytes."""
    try:
        raw = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name} must be base64 of {KEY_BYTES} bytes") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{name} must be base64 of {KEY_BYTES} bytes")


def development_key(label: str) -> str:
    """A fixed, publicly known key for development and tests only (each service's settings refuse it in
    production by requiring a configured key there)."""
    return base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


class SecretBox:
    _VERSION = "v1"

    def __init__(self, key_b64: str) -> None:
        self._aead = AESGCM(base64.b64decode(key_b64))

    def encrypt(self, plaintext: bytes, aad: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, aad.encode())
        return f"{self._VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, aad: str) -> bytes:
        version, _, body = token.partition(".")
        if version != self._VERSION:
            raise ValueError("unknown ciphertext version")
        raw = base64.urlsafe_b64decode(body)
        return self._aead.decrypt(raw[:12], raw[12:], aad.encode())
