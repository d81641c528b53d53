"""Secrets at rest and in transit: random tokens, their hashes, password hashing, AES-GCM for stored keys.

Tokens handed to clients (refresh tokens, API key secrets, invitation and reset links) carry 256 bits of
randomness, so a plain SHA-256 is enough to store them: nothing to brute-force. Passwords use argon2id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import string

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auth_svc.settings import PasswordHashSettings

# Used only outside production when AUTH_SECRETS_KEY is unset (the settings refuse that in production).
DEVELOPMENT_SECRETS_KEY = base64.b64encode(hashlib.sha256(b"ksef-hub development secrets key").digest()).decode()

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def new_public_id(length: int = 12) -> str:
    """Lowercase letters and digits only, so it never contains the ``_`` that separates API key parts."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(stored: str, token: str) -> bool:
    return hmac.compare_digest(stored, token_hash(token))


class SecretBox:
    """AES-256-GCM with a random 96-bit nonce; ``aad`` binds a ciphertext to its row (a key id, a user id)."""

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


class Passwords:
    def __init__(self, settings: PasswordHashSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_cost_kib,
            parallelism=settings.parallelism,
            type=Type.ID,
        )
        # Verified against when the e-mail is unknown, so that a miss costs as long as a wrong password.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
