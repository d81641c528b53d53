"""Reference numbers and KSeF numbers with their CRC-8 check (REFERENCE.md §2, §10).

CRC-8: polynomial 0x07, init 0x00, no reflection, no final xor, over the ASCII text before the last dash.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from enum import StrEnum

KSEF_NUMBER_RE = re.compile(r"^([1-9]\d{9})-(\d{8})-([0-9A-F]{12})-([0-9A-F]{2})$")
REFERENCE_NUMBER_RE = re.compile(r"^(\d{8})-([A-Z]{2})-([0-9A-F]{10})-([0-9A-F]{10})-([0-9A-F]{2})$")


class RefType(StrEnum):
    CHALLENGE = "CR"
    AUTH = "AU"
    ONLINE_SESSION = "SO"
    BATCH_SESSION = "SB"
    SESSION_INVOICE = "EE"
    SESSION_UPO = "EU"
    EXPORT = "EH"
    KSEF_TOKEN = "EC"
    PERMISSION_OPERATION = "EG"
    CERTIFICATE_ENROLLMENT = "CE"


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def with_checksum(body: str) -> str:
    return f"{body}-{crc8(body.encode('ascii')):02X}"


def has_valid_checksum(value: str) -> bool:
    body, _, check = value.rpartition("-")
    return bool(body) and len(check) == 2 and with_checksum(body) == value


def reference_number(kind: RefType, at: datetime) -> str:
    body = f"{at:%Y%m%d}-{kind.value}-{secrets.token_hex(5).upper()}-{secrets.token_hex(5).upper()}"
    return with_checksum(body)


def ksef_number(seller_nip: str, accepted_at: datetime, sequence: int) -> str:
    """``NIP-YYYYMMDD-TTTTTTTTTTTT-CC``; the technical part is opaque on the real service (``01…``/``02…`` seen).

    We put ``01`` + a 10-hex-digit sequence so numbers are unique and never collide across restarts.
    """
    body = f"{seller_nip}-{accepted_at:%Y%m%d}-01{sequence:010X}"
    return with_checksum(body)
