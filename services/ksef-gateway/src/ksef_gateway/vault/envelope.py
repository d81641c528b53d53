"""Envelope encryption for stored credentials: AES-256-GCM under a random data key per secret, the data key
wrapped (AES-256-GCM again) by a master key from configuration.

Why an envelope: rotating a master key re-wraps 32-byte data keys only, never touching the secrets, and a leaked
database alone decrypts nothing. Associated data binds both layers to the row they belong to (credential id and
context NIP), so a ciphertext copied into another row, or a wrapped key swapped between rows, fails to open
instead of yielding a credential for the wrong client. The wrapped key's associated data also names the master
key id, so a row cannot be relabelled to another master key.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_FORMAT = b"ksef-gateway/envelope/v1"


class EnvelopeError(Exception):
    """A ciphertext that cannot be opened: tampered with, moved to another row, or under an unknown key."""


class UnknownMasterKey(EnvelopeError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"master key {key_id!r} is not configured")
        self.key_id = key_id


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.key_id or len(self.key_id) > 64:
            raise ValueError("a master key id has 1 to 64 characters")
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"master key {self.key_id!r} must be {KEY_BYTES} bytes (AES-256)")

    @classmethod
    def from_base64(cls, key_id: str, encoded: str) -> MasterKey:
        try:
            material = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"master key {key_id!r} is not valid base64") from None
        return cls(key_id, material)

    @classmethod
    def generate(cls, key_id: str) -> MasterKey:
        return cls(key_id, AESGCM.generate_key(bit_length=KEY_BYTES * 8))

    def to_base64(self) -> str:
        return base64.b64encode(self.material).decode("ascii")


class Keyring:
    """The configured master keys: the active one wraps new data keys, every one of them still unwraps."""

    def __init__(self, keys: Mapping[str, MasterKey] | list[MasterKey], active_key_id: str) -> None:
        listed = list(keys.values()) if isinstance(keys, Mapping) else list(keys)
        self._keys = {key.key_id: key for key in listed}
        if active_key_id not in self._keys:
            raise ValueError(f"the active master key {active_key_id!r} is not among the configured keys")
        self.active_key_id = active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def get(self, key_id: str) -> MasterKey:
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownMasterKey(key_id)
        return key

    def __repr__(self) -> str:
        return f"Keyring(active={self.active_key_id!r}, keys={sorted(self._keys)!r})"


@dataclass(frozen=True)
class Envelope:
    """What is stored: ``nonce || AES-GCM(data key, secret)``, ``nonce || AES-GCM(master key, data key)``, key id."""

    ciphertext: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)
    master_key_id: str


def _secret_aad(aad: bytes) -> bytes:
    return _FORMAT + b"|secret|" + aad


def _key_aad(master_key_id: str, aad: bytes) -> bytes:
    return _FORMAT + b"|data-key|" + master_key_id.encode() + b"|" + aad


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + 16:
        raise EnvelopeError("the ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise EnvelopeError("the ciphertext does not authenticate (tampered with or bound to another row)") from None


def _wrap(keyring: Keyring, data_key: bytes, aad: bytes) -> tuple[bytes, str]:
    master = keyring.get(keyring.active_key_id)
    return _encrypt(master.material, data_key, _key_aad(master.key_id, aad)), master.key_id


def _unwrap(keyring: Keyring, envelope: Envelope, aad: bytes) -> bytes:
    master = keyring.get(envelope.master_key_id)
    return _decrypt(master.material, envelope.wrapped_key, _key_aad(master.key_id, aad))


def seal(keyring: Keyring, plaintext: bytes, aad: bytes) -> Envelope:
    """Encrypt under a fresh data key wrapped by the active master key."""
    data_key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    ciphertext = _encrypt(data_key, plaintext, _secret_aad(aad))
    wrapped, key_id = _wrap(keyring, data_key, aad)
    return Envelope(ciphertext=ciphertext, wrapped_key=wrapped, master_key_id=key_id)


def open_envelope(keyring: Keyring, envelope: Envelope, aad: bytes) -> bytes:
    data_key = _unwrap(keyring, envelope, aad)
    return _decrypt(data_key, envelope.ciphertext, _secret_aad(aad))


def rewrap(keyring: Keyring, envelope: Envelope, aad: bytes) -> Envelope:
    """The same secret ciphertext with its data key wrapped by the active master key (rotation).

    The secret itself is opened once, to prove the data key really belongs to it before the old wrapping goes.
    """
    data_key = _unwrap(keyring, envelope, aad)
    _decrypt(data_key, envelope.ciphertext, _secret_aad(aad))
    wrapped, key_id = _wrap(keyring, data_key, aad)
    return Envelope(ciphertext=envelope.ciphertext, wrapped_key=wrapped, master_key_id=key_id)
