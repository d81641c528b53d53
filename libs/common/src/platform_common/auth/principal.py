"""Who is calling, as every service sees it: built from a verified JWT or an API key introspection."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

PrincipalType = Literal["user", "api_key", "service"]
OrgKind = Literal["office", "client"]

# In ``nips``: every client of the principal's organisation. An office's token carries it instead of a list (a list
# would outlive a revocation): which clients those are right now only the service's projection of the
# integrations can tell, and ``require``/``ensure_client`` ask it on every request (platform_common.client_access).
ALL_CLIENTS = "*"
INTERNAL = "internal"


class InvalidClaims(ValueError):
    """The claims do not have the shape of the contract (the message names the field, never a value)."""


def _string_list(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name)
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise InvalidClaims(f"{name} must be a list of strings")
    return tuple(value)


def _strings(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    return frozenset(_string_list(claims, name))


@dataclass(frozen=True)
class Principal:
    id: str
    ptype: PrincipalType
    org: uuid.UUID | None = None
    org_kind: OrgKind | None = None
    roles: frozenset[str] = frozenset()
    perms: frozenset[str] = frozenset()
    nips: frozenset[str] = frozenset()
    amr: tuple[str, ...] = ()
    expires_at: datetime | None = None

    @property
    def is_service(self) -> bool:
        return self.ptype == "service" and INTERNAL in self.perms

    @property
    def all_clients(self) -> bool:
        return ALL_CLIENTS in self.nips

    def can_access_client(self, client_nip: str) -> bool:
        """Within the token's scope; for an office, ``ensure_client`` also asks the live relation."""
        return self.all_clients or client_nip in self.nips

    def can(self, permission: str, client_nip: str | None = None) -> bool:
        """Holds ``permission`` and, when a client NIP is given, may touch that client."""
        if permission not in self.perms:
            return False
        return client_nip is None or self.can_access_client(client_nip)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """From JWT claims or an introspection answer; ``InvalidClaims`` when they break the contract."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise InvalidClaims("sub must be a non-empty string")
        ptype = claims.get("ptype")
        if ptype not in get_args(PrincipalType):
            raise InvalidClaims("ptype must be user, api_key or service")
        org_kind = claims.get("org_kind")
        if org_kind is not None and org_kind not in get_args(OrgKind):
            raise InvalidClaims("org_kind must be office, client or null")
        raw_org = claims.get("org")
        try:
            org = uuid.UUID(raw_org) if raw_org is not None else None
        except (TypeError, ValueError, AttributeError):
            raise InvalidClaims("org must be a UUID or null") from None
        exp = claims.get("exp")
        if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool)):
            raise InvalidClaims("exp must be a number or null")
        return cls(
            id=sub,
            ptype=cast(PrincipalType, ptype),
            org=org,
            org_kind=cast(OrgKind | None, org_kind),
            roles=_strings(claims, "roles"),
            perms=_strings(claims, "perms"),
            nips=_strings(claims, "nips"),
            amr=_string_list(claims, "amr"),
            expires_at=datetime.fromtimestamp(exp, UTC) if exp is not None else None,
        )

    def summary(self, permissions: Iterable[str] | None = None) -> dict[str, Any]:
        """A JSON-friendly view (for diagnostics endpoints); ``permissions`` narrows the listed perms."""
        perms = self.perms if permissions is None else self.perms & set(permissions)
        return {
            "id": self.id,
            "ptype": self.ptype,
            "org": str(self.org) if self.org else None,
            "org_kind": self.org_kind,
            "roles": sorted(self.roles),
            "perms": sorted(perms),
            "nips": sorted(self.nips),
        }
