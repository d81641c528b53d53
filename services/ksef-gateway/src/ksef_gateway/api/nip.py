"""The client NIP in a path: its ten digits exactly, with a valid checksum (422 problem details otherwise)."""

from __future__ import annotations

from platform_common.nip import InvalidNip, normalize_nip
from platform_common.problems import Problem


def client_nip(nip: str) -> str:
    try:
        normalized = normalize_nip(nip)
    except InvalidNip as exc:
        raise Problem(422, "Invalid NIP", f"{nip!r} is not a valid NIP: {exc}.", code="invalid-nip") from None
    # One spelling per client: URLs, cache keys and lease rows must not differ by dashes or a PL prefix.
    if normalized != nip:
        raise Problem(422, "Invalid NIP", "Write the NIP as its ten digits only.", code="invalid-nip")
    return normalized
