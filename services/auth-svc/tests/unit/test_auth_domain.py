from __future__ import annotations

import uuid

import pytest

from auth_svc.crypto import DEVELOPMENT_SECRETS_KEY, SecretBox, new_public_id, same_hash, token_hash
from auth_svc.principal import Principal
from auth_svc.roles import ROLE_PERMISSIONS, USER_PERMISSIONS, OrgKind, Perm, Role, role_fits
from auth_svc.settings import AuthSettings
from platform_common.nip import InvalidNip, is_valid_nip, normalize_nip

# "1234563218" (a valid NIP) in fullwidth digits: str.isdigit() accepts them, the NIP check must not.
FULLWIDTH_VALID_DIGITS = "".join(chr(0xFF10 + int(d)) for d in "1234563218")


class TestNip:
    @pytest.mark.parametrize("value", ["5260250216", "526-025-02-16", "PL 526 025 02 16", "1234563218"])
    def test_valid_numbers_normalise_to_ten_digits(self, value: str) -> None:
        assert len(normalize_nip(value)) == 10

    @pytest.mark.parametrize(
        "value",
        ["5260250217", "526025021", "52602502160", "abcdefghij", "", "0000000010", FULLWIDTH_VALID_DIGITS],
    )
    def test_wrong_checksum_or_shape_is_refused(self, value: str) -> None:
        with pytest.raises(InvalidNip):
            normalize_nip(value)
        assert not is_valid_nip(value)

    def test_remainder_ten_is_never_valid(self) -> None:
        # 1*6+2*5+3*7+4*2+5*3+6*4+7*5+8*6+9*7 = 230 -> 230 % 11 == 10: no last digit can make it valid.
        assert not any(is_valid_nip(f"123456789{d}") for d in range(10))


class TestRoles:
    def test_office_admin_has_everything_but_ops(self) -> None:
        assert ROLE_PERMISSIONS[Role.OFFICE_ADMIN] == USER_PERMISSIONS - {Perm.OPS}

    def test_no_role_grants_internal(self) -> None:
        assert all(Perm.INTERNAL not in perms for perms in ROLE_PERMISSIONS.values())

    def test_accountant_and_member_cannot_manage_users(self) -> None:
        for role in (Role.OFFICE_ACCOUNTANT, Role.CLIENT_MEMBER):
            assert Perm.USERS_MANAGE not in ROLE_PERMISSIONS[role]

    def test_roles_belong_to_one_kind_of_organisation(self) -> None:
        assert role_fits(Role.OFFICE_ACCOUNTANT, OrgKind.OFFICE)
        assert not role_fits(Role.OFFICE_ACCOUNTANT, OrgKind.CLIENT)
        assert not role_fits(Role.OPS, OrgKind.OFFICE)


class TestCrypto:
    def test_secret_box_round_trip_is_bound_to_its_aad(self) -> None:
        box = SecretBox(DEVELOPMENT_SECRETS_KEY)
        sealed = box.encrypt(b"seed", aad="totp:1")
        assert b"seed" not in sealed.encode()
        assert box.decrypt(sealed, aad="totp:1") == b"seed"
        with pytest.raises(Exception):  # noqa: B017, PT011  # cryptography's InvalidTag
            box.decrypt(sealed, aad="totp:2")

    def test_token_hashes_compare(self) -> None:
        assert same_hash(token_hash("abc"), "abc")
        assert not same_hash(token_hash("abc"), "abd")

    def test_public_ids_never_contain_the_separator(self) -> None:
        assert all("_" not in new_public_id() and len(new_public_id()) == 12 for _ in range(50))


class TestSettings:
    def test_production_needs_a_secrets_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTH_ENVIRONMENT", "production")
        monkeypatch.setenv("AUTH_DB__URL", "postgresql+asyncpg://u:p@db/x")
        with pytest.raises(ValueError, match="AUTH_SECRETS_KEY"):
            AuthSettings()

    def test_service_credentials_come_from_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTH_SERVICE_CREDENTIALS", '{"buffer-svc": "s3cr3t-value"}')
        s = AuthSettings()
        assert s.service_credentials["buffer-svc"].get_secret_value() == "s3cr3t-value"
        assert "s3cr3t-value" not in repr(s)


class TestPrincipal:
    def test_claims_round_trip(self) -> None:
        org = uuid.uuid4()
        p = Principal(
            sub="u",
            ptype="user",
            org=org,
            org_kind="office",
            roles=("office_admin",),
            perms=frozenset({"ksef.read"}),
            nips=("7777777702",),
            amr=("pwd",),
        )
        assert Principal.from_claims(p.claims()) == p
        assert p.can_touch("7777777702") and not p.can_touch("1112223303")
