"""Seal a secret to the one service that needs it, so an event can carry it through outboxes and topics.

An event never carries a usable secret (CONTRIBUTING): outbox rows end up in WAL files and backups, topics
keep records for their whole retention. The producer seals the secret to the consumer's public key; only
the holder of the private key can open it. RFC 9180 HPKE, base mode, suite DHKEM(X25519, HKDF-SHA256) /
HKDF-SHA256 / AES-256-GCM. ``info`` binds a sealed text to its purpose (the event type), so a text sealed for
one event cannot be replayed as another's.

Compact form: ``hpke1.<urlsafe base64 of enc || ciphertext>``, without padding, safe in JSON and URLs. The
prefix names the suite, so a later format can be recognised rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

__all__ = [
    "SealingError",
    "ensure_private_key_file",
    "generate_keypair",
    "public_key_of",
    "read_private_key_file",
    "seal",
    "unseal",
]

_PREFIX = "hpke1."
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_KEY_LENGTH = 32


class SealingError(Exception):
    """A key or a sealed text is malformed, or the text was not sealed to this key for this purpose."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SealingError("not urlsafe base64") from exc


def _private_key(text: str) -> X25519PrivateKey:
    raw = _b64decode(text.strip())
    if len(raw) != _KEY_LENGTH:
        raise SealingError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(raw)


def _public_key(text: str) -> X25519PublicKey:
    raw = _b64decode(text.strip())
    if len(raw) != _KEY_LENGTH:
        raise SealingError("an X25519 public key is 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def check_public_key(text: str) -> None:
    """Raises ``SealingError`` unless ``text`` is a public key ``seal`` accepts (for settings validation): sealing
    once is the whole check, low-order points included."""
    seal(text, b"", info=b"settings check")


def generate_keypair() -> tuple[str, str]:
    """A fresh ``(private_key, public_key)``, each the urlsafe base64 of the raw 32-byte X25519 key."""
    private = X25519PrivateKey.generate()
    return _b64encode(private.private_bytes_raw()), _b64encode(private.public_key().public_bytes_raw())


def public_key_of(private_key: str) -> str:
    """The public key that belongs to ``private_key`` (so only the private key needs to be configured)."""
    return _b64encode(_private_key(private_key).public_key().public_bytes_raw())


def seal(public_key: str, plaintext: bytes, *, info: bytes) -> str:
    """Encrypt ``plaintext`` so that only the holder of the matching private key can read it, for ``info``."""
    try:
        # A low-order point (e.g. all zeros) yields no shared secret: refuse rather than seal to nobody.
        return _PREFIX + _b64encode(_SUITE.encrypt(plaintext, _public_key(public_key), info=info))
    except ValueError as exc:
        raise SealingError("unusable public key") from exc


def unseal(private_key: str, sealed: str, *, info: bytes) -> bytes:
    """Open a text from :func:`seal`; raises :class:`SealingError` on any mismatch or tampering."""
    if not sealed.startswith(_PREFIX):
        raise SealingError("unknown sealed format")
    key = _private_key(private_key)
    try:
        return _SUITE.decrypt(_b64decode(sealed[len(_PREFIX) :]), key, info=info)
    except (InvalidTag, ValueError) as exc:
        raise SealingError("cannot open: wrong key, wrong purpose or altered text") from exc


def read_private_key_file(path: Path) -> str:
    """The private key kept in ``path``; refused unless only its owner can read it (it opens every link)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SealingError(f"key file {path} is readable by group or others (mode {mode:o}): chmod 600 it")
        private_key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SealingError(f"cannot read key file {path}: {type(exc).__name__}") from exc
    public_key_of(private_key)  # a malformed key fails now, not at the first event
    return private_key


def ensure_private_key_file(path: Path) -> str:
    """The private key in ``path``, generated into a new 0600 file when there is none (the embedded mode)."""
    if path.exists():
        return read_private_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private_key, _ = generate_keypair()
    try:
        # O_EXCL: two processes starting at once must not each write a different key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_private_key_file(path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(private_key + "\n")
    return private_key
