"""Who is calling: the same shape whether the credential was a user JWT, an API key or a service token."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from auth_svc.roles import ALL_CLIENTS, Perm

PrincipalType = Literal["user", "api_key", "service"]


@dataclass(frozen=True)
class Principal:
    sub: str
    ptype: PrincipalType
    org: uuid.UUID | None
    org_kind: str | None
    roles: tuple[str, ...] = ()
    perms: frozenset[str] = frozenset()
    nips: tuple[str, ...] = ()
    amr: tuple[str, ...] = field(default=())

    @property
    def is_ops(self) -> bool:
        return Perm.OPS in self.perms

    @property
    def is_service(self) -> bool:
        return self.ptype == "service" and Perm.INTERNAL in self.perms

    @property
    def user_id(self) -> uuid.UUID | None:
        return uuid.UUID(self.sub) if self.ptype == "user" else None

    def has(self, perm: str) -> bool:
        return perm in self.perms

    def can_touch(self, nip: str) -> bool:
        return ALL_CLIENTS in self.nips or nip in self.nips

    def claims(self) -> dict[str, Any]:
        """The contract's claims for this principal (without the registered ones: iss, aud, iat, exp, jti)."""
        return {
            "sub": self.sub,
            "ptype": self.ptype,
            "org": str(self.org) if self.org else None,
            "org_kind": self.org_kind,
            "roles": list(self.roles),
            "perms": sorted(self.perms),
            "nips": list(self.nips),
            "amr": list(self.amr),
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        org = claims.get("org")
        return cls(
            sub=str(claims["sub"]),
            ptype=claims["ptype"],
            org=uuid.UUID(org) if org else None,
            org_kind=claims.get("org_kind"),
            roles=tuple(claims.get("roles") or ()),
            perms=frozenset(claims.get("perms") or ()),
            nips=tuple(claims.get("nips") or ()),
            amr=tuple(claims.get("amr") or ()),
        )
