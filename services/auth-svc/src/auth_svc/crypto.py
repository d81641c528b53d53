"""Secrets at rest and in transit: random tokens, their hashes, password hashing (AES-GCM for stored keys is
platform_common.secret_box, re-exported here).

Tokens handed to clients (refresh tokens, API key secrets, invitation and reset links) carry 256 bits of
randomness, so a plain SHA-256 is enough to store them: nothing to brute-force. Passwords use argon2id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from auth_svc.settings import PasswordHashSettings
from platform_common.secret_box import SecretBox as SecretBox
from platform_common.secret_box import development_key

# Used only outside production when AUTH_SECRETS_KEY is unset (the settings refuse that in production).
DEVELOPMENT_SECRETS_KEY = development_key("ksef-hub development secrets key")

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
