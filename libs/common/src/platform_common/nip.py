"""Polish tax identification numbers (NIP): ten digits, the last a weighted checksum mod 11.

Shared by every service: organisations (auth-svc) and KSeF contexts (the gateway) are NIPs, and production KSeF
checks the checksum too (REFERENCE.md §2), so a NIP that fails it is refused with a clear error before anything
is stored or sent.
"""

from __future__ import annotations

import re

_WEIGHTS = (6, 5, 7, 2, 3, 4, 5, 6, 7)
_SEPARATORS = re.compile(r"[\s-]")


class InvalidNip(ValueError):
    pass


def normalize_nip(value: str) -> str:
    """The ten digits of a NIP written with or without dashes, spaces or a ``PL`` prefix.

    Raises ``InvalidNip`` when the digits are wrong in number or the checksum does not match.
    """
    digits = _SEPARATORS.sub("", value.strip())
    if digits[:2].upper() == "PL":
        digits = digits[2:]
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        raise InvalidNip("a NIP has exactly ten digits")
    checksum = sum(int(d) * w for d, w in zip(digits, _WEIGHTS, strict=False)) % 11
    # A remainder of 10 is never issued: such a number is invalid whatever its last digit.
    if checksum == 10 or checksum != int(digits[9]):
        raise InvalidNip("the NIP checksum does not match")
    return digits


def is_valid_nip(value: str) -> bool:
    try:
        normalize_nip(value)
    except InvalidNip:
        return False
    return True
