from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from platform_common.auth.principal import InvalidClaims, Principal

ORG = "00000000-0000-4000-8000-0000000000aa"


def claims(**overrides: Any) -> dict[str, Any]:
    return {
        "sub": "u-1",
        "ptype": "user",
        "org": ORG,
        "org_kind": "office",
        "roles": ["office_accountant"],
        "perms": ["buffer.read", "ksef.read"],
        "nips": ["5260250274"],
        "amr": ["pwd", "otp"],
        "exp": 1_800_000_000,
        **overrides,
    }


class TestFromClaims:
    def test_reads_the_contract_claims(self) -> None:
        p = Principal.from_claims(claims())
        assert p.id == "u-1"
        assert p.ptype == "user"
        assert p.org == uuid.UUID(ORG)
        assert p.org_kind == "office"
        assert p.roles == {"office_accountant"}
        assert p.perms == {"buffer.read", "ksef.read"}
        assert p.nips == {"5260250274"}
        assert p.amr == ("pwd", "otp")
        assert p.expires_at == datetime.fromtimestamp(1_800_000_000, UTC)

    def test_ops_and_services_have_no_organisation(self) -> None:
        p = Principal.from_claims(claims(ptype="service", org=None, org_kind=None, perms=["internal"], exp=None))
        assert p.org is None and p.org_kind is None and p.expires_at is None
        assert p.is_service

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("sub", ""),
            ("sub", 7),
            ("ptype", "admin"),
            ("org", "not-a-uuid"),
            ("org", 5),
            ("org_kind", "bank"),
            ("perms", "buffer.read"),
            ("nips", [5260250274]),
            ("exp", "soon"),
            ("exp", True),
        ],
    )
    def test_refuses_claims_that_break_the_contract(self, field: str, value: Any) -> None:
        with pytest.raises(InvalidClaims, match=field):
            Principal.from_claims(claims(**{field: value}))


class TestCan:
    def test_needs_the_permission(self) -> None:
        p = Principal.from_claims(claims())
        assert p.can("buffer.read")
        assert not p.can("buffer.decide")

    def test_needs_the_client_too_when_one_is_named(self) -> None:
        p = Principal.from_claims(claims())
        assert p.can("buffer.read", client_nip="5260250274")
        assert not p.can("buffer.read", client_nip="7777777702")
        assert not p.can("buffer.decide", client_nip="5260250274")

    def test_star_means_every_client_of_the_organisation(self) -> None:
        p = Principal.from_claims(claims(nips=["*"]))
        assert p.all_clients
        assert p.can("buffer.read", client_nip="7777777702")

    def test_a_user_token_is_not_a_service(self) -> None:
        assert not Principal.from_claims(claims(perms=["internal"])).is_service
