"""The API key format, parsed in this one place by auth-svc (which issues and checks keys) and by every
service that receives one (which refuses a mistyped key without asking auth-svc).

    khk_<key id: 12 base62>_<secret: 30 base62><checksum: 6 base62>

- ``khk_`` is fixed, so a key is told from a JWT (and found by secret scanners) at a glance.
- The key id is public (it names the key in lists and audit entries); the secret carries
  30 * log2(62) ≈ 178 bits from ``secrets``. Base62 has no ``_``: the one ``_`` after the id is the only
  separator, and every part has a fixed length, so nothing about splitting a key is ambiguous.
- The checksum is CRC-32 of everything before it, in base62 (62**6 > 2**32). CRC-32 catches every error
  confined to 32 consecutive bits, so every single mistyped character and every swap of two neighbours is
  caught; a truncated or extended key has the wrong length. The checksum proves nothing about authenticity
  (anyone can compute it): it only keeps typos and truncated copies from ever reaching a database.

Keys of the earlier ``khk_<id>_<urlsafe secret>`` format (pre-release) no longer parse.
"""

from __future__ import annotations

import re
import secrets
import string
import zlib
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "API_KEY_LENGTH",
    "API_KEY_PREFIX",
    "InvalidApiKey",
    "ParsedApiKey",
    "format_api_key",
    "looks_like_api_key",
    "new_api_key",
    "parse_api_key",
]

API_KEY_PREFIX = "khk_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
KEY_ID_LENGTH = 12
SECRET_LENGTH = 30
CHECKSUM_LENGTH = 6
API_KEY_LENGTH = len(API_KEY_PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH

_PART = f"[{re.escape(ALPHABET)}]"
_SHAPE = re.compile(
    rf"{re.escape(API_KEY_PREFIX)}(?P<id>{_PART}{{{KEY_ID_LENGTH}}})_"
    rf"(?P<secret>{_PART}{{{SECRET_LENGTH}}})(?P<checksum>{_PART}{{{CHECKSUM_LENGTH}}})"
)


class InvalidApiKey(ValueError):
    """Not an API key of this format (``reason="malformed"``) or a damaged one (``reason="checksum"``).

    The message never contains the key."""

    def __init__(self, reason: Literal["malformed", "checksum"]) -> None:
        super().__init__("malformed API key" if reason == "malformed" else "API key checksum mismatch")
        self.reason = reason


@dataclass(frozen=True)
class ParsedApiKey:
    key_id: str
    secret: str = field(repr=False)

    @property
    def text(self) -> str:
        return format_api_key(self.key_id, self.secret)


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    value = zlib.crc32(body.encode("ascii"))
    digits = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _valid_part(text: str, length: int) -> bool:
    return len(text) == length and all(c in ALPHABET for c in text)


def format_api_key(key_id: str, secret: str) -> str:
    if not _valid_part(key_id, KEY_ID_LENGTH) or not _valid_part(secret, SECRET_LENGTH):
        raise InvalidApiKey("malformed")
    body = f"{API_KEY_PREFIX}{key_id}_{secret}"
    return body + _checksum(body)


def new_api_key() -> tuple[ParsedApiKey, str]:
    """A fresh key: its parts (store the id and a hash of the secret) and the text shown once to its owner."""
    parsed = ParsedApiKey(key_id=_random(KEY_ID_LENGTH), secret=_random(SECRET_LENGTH))
    return parsed, parsed.text


def looks_like_api_key(text: str) -> bool:
    """Meant as an API key (rather than a JWT); whether it is a valid one is ``parse_api_key``'s question."""
    return text.startswith(API_KEY_PREFIX)


def parse_api_key(text: str) -> ParsedApiKey:
    """The parts of a well-formed key whose checksum matches; ``InvalidApiKey`` otherwise."""
    match = _SHAPE.fullmatch(text) if len(text) == API_KEY_LENGTH else None
    if match is None:
        raise InvalidApiKey("malformed")
    body = text[:-CHECKSUM_LENGTH]
    if not secrets.compare_digest(_checksum(body), match["checksum"]):
        raise InvalidApiKey("checksum")
    return ParsedApiKey(key_id=match["id"], secret=match["secret"])
