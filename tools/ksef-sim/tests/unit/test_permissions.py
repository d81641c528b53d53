"""Permission rules without HTTP: owner rule, direct, entity and indirect grants, TEST-data flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ksef_sim.domain.permissions import (
    OWNER_PERMISSIONS,
    AttachmentConsent,
    ContextBlock,
    GrantKind,
    Ident,
    PermissionGrant,
    RegisteredPerson,
    attachment_allowed,
    context_blocked,
    effective_permissions,
    identifier_valid,
    internal_id_checksum_ok,
    new_grant_id,
    permission_state,
    person_deceased,
    revoke,
)
from ksef_sim.security import Identifier
from ksef_sim.store import Store

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CLIENT, OFFICE, OTHER = "5261040828", "7010002137", "1132853869"
EMPLOYEE = "90010112345"


@pytest.fixture
def store() -> Store:
    return Store(None)


def nip(value: str) -> Identifier:
    return Identifier("Nip", value)


def grant(
    store: Store,
    kind: GrantKind,
    scope: str,
    context: Ident,
    authorized: Ident,
    *,
    grantor: Ident | None = None,
    target: Ident | None = None,
    can_delegate: bool = False,
) -> PermissionGrant:
    record = PermissionGrant(
        id=new_grant_id(),
        kind=kind,
        scope=scope,
        context=context,
        grantor_context=grantor or context,
        author=Ident(type="Nip", value=(grantor or context).value),
        authorized=authorized,
        target=target,
        can_delegate=can_delegate,
        description="Uprawnienie testowe",
        start_date=NOW,
    )
    store.put(record)
    return record


def n(value: str) -> Ident:
    return Ident(type="Nip", value=value)


def pesel(value: str = EMPLOYEE) -> Ident:
    return Ident(type="Pesel", value=value)


def held(store: Store, subject: Identifier, context: Identifier) -> frozenset[str]:
    return effective_permissions(store, subject, context, NOW)


def test_owner_rule(store: Store) -> None:
    assert held(store, nip(CLIENT), nip(CLIENT)) == OWNER_PERMISSIONS
    assert "VatUeManage" not in OWNER_PERMISSIONS
    assert held(store, nip(OFFICE), nip(CLIENT)) == frozenset()
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == frozenset()
    store.put(RegisteredPerson(nip=CLIENT, pesel=EMPLOYEE, description="Właściciel", created_date=NOW))
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == OWNER_PERMISSIONS
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(OFFICE)) == frozenset()


def test_direct_grants_and_revoke(store: Store) -> None:
    read = grant(store, GrantKind.PERSON, "InvoiceRead", n(CLIENT), pesel())
    grant(store, GrantKind.TESTDATA, "Introspection", n(CLIENT), pesel())
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == {"InvoiceRead", "Introspection"}
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(OTHER)) == frozenset()
    revoke(store, read, NOW)
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == {"Introspection"}


def test_fingerprints_compare_case_insensitively(store: Store) -> None:
    grant(store, GrantKind.PERSON, "InvoiceRead", n(CLIENT), Ident.normalized("Fingerprint", "ab" * 32))
    assert held(store, Identifier("Fingerprint", "AB" * 32), nip(CLIENT)) == {"InvoiceRead"}


def test_entity_grant_reaches_the_office_and_its_owner(store: Store) -> None:
    grant(store, GrantKind.ENTITY, "InvoiceWrite", n(CLIENT), n(OFFICE))
    assert held(store, nip(OFFICE), nip(CLIENT)) == {"InvoiceWrite"}
    assert held(store, nip(OFFICE), nip(OTHER)) == frozenset()
    store.put(RegisteredPerson(nip=OFFICE, pesel=EMPLOYEE, description="Właściciel biura", created_date=NOW))
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == {"InvoiceWrite"}


@pytest.mark.parametrize("target", [n(CLIENT), Ident(type="AllPartners"), None])
def test_indirect_grant_needs_a_delegable_entity_grant_per_scope(store: Store, target: Ident | None) -> None:
    grant(store, GrantKind.ENTITY, "InvoiceRead", n(CLIENT), n(OFFICE), can_delegate=True)
    grant(store, GrantKind.ENTITY, "InvoiceWrite", n(CLIENT), n(OFFICE), can_delegate=False)
    for scope in ("InvoiceRead", "InvoiceWrite"):
        grant(store, GrantKind.INDIRECT, scope, n(OFFICE), pesel(), target=target)
    employee = Identifier("Pesel", EMPLOYEE)
    assert held(store, employee, nip(CLIENT)) == {"InvoiceRead"}
    assert held(store, employee, nip(OFFICE)) == frozenset()  # indirect grants work for clients only
    assert held(store, employee, nip(OTHER)) == frozenset()


def test_selective_indirect_grant_is_limited_to_its_client(store: Store) -> None:
    for client in (CLIENT, OTHER):
        grant(store, GrantKind.ENTITY, "InvoiceRead", n(client), n(OFFICE), can_delegate=True)
    indirect = grant(store, GrantKind.INDIRECT, "InvoiceRead", n(OFFICE), pesel(), target=n(CLIENT))
    employee = Identifier("Pesel", EMPLOYEE)
    assert held(store, employee, nip(CLIENT)) == {"InvoiceRead"}
    assert held(store, employee, nip(OTHER)) == frozenset()
    assert permission_state(store, indirect) == "Active"


def test_revoking_the_entity_grant_disables_the_indirect_one(store: Store) -> None:
    entity = grant(store, GrantKind.ENTITY, "InvoiceRead", n(CLIENT), n(OFFICE), can_delegate=True)
    indirect = grant(store, GrantKind.INDIRECT, "InvoiceRead", n(OFFICE), pesel(), target=n(CLIENT))
    revoke(store, entity, NOW)
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == frozenset()
    assert permission_state(store, indirect) == "Inactive"


def test_authorizations_are_not_person_permissions(store: Store) -> None:
    grant(store, GrantKind.AUTHORIZATION, "SelfInvoicing", n(CLIENT), n(OFFICE))
    assert held(store, nip(OFFICE), nip(CLIENT)) == frozenset()


def test_subunit_and_eu_contexts(store: Store) -> None:
    unit = Ident(type="InternalId", value=f"{CLIENT}-00015")
    grant(store, GrantKind.SUBUNIT, "CredentialsManage", unit, pesel(), grantor=n(CLIENT))
    assert held(store, Identifier("Pesel", EMPLOYEE), Identifier("InternalId", f"{CLIENT}-00015")) == {
        "CredentialsManage"
    }
    assert held(store, Identifier("Pesel", EMPLOYEE), nip(CLIENT)) == frozenset()
    eu = Ident(type="NipVatUe", value=f"{CLIENT}-DE123456789")
    fingerprint = Ident(type="Fingerprint", value="A" * 64)
    grant(store, GrantKind.EU_ADMIN, "VatUeManage", eu, fingerprint, grantor=n(CLIENT))
    assert held(store, Identifier("Fingerprint", "a" * 64), Identifier("NipVatUe", f"{CLIENT}-DE123456789")) == {
        "VatUeManage"
    }


def test_test_data_flags(store: Store) -> None:
    assert not context_blocked(store, nip(CLIENT))
    store.put(ContextBlock(context=n(CLIENT), blocked_at=NOW))
    assert context_blocked(store, nip(CLIENT))
    assert not context_blocked(store, Identifier("InternalId", CLIENT))

    store.put(RegisteredPerson(nip=CLIENT, pesel=EMPLOYEE, is_deceased=True, description="Zmarły", created_date=NOW))
    assert person_deceased(store, Identifier("Pesel", EMPLOYEE))
    assert not person_deceased(store, Identifier("Pesel", "85121254321"))

    assert not attachment_allowed(store, CLIENT, NOW)
    store.put(AttachmentConsent(nip=CLIENT, granted_at=NOW, revoked_date=NOW + timedelta(days=1)))
    assert attachment_allowed(store, CLIENT, NOW)
    assert not attachment_allowed(store, CLIENT, NOW + timedelta(days=1))


def test_internal_id_checksum_matches_the_spec_example() -> None:
    # Spec (POST /permissions/subunits/grants): "6824515772-1234" → check digit 3.
    assert internal_id_checksum_ok("6824515772-12343")
    assert not internal_id_checksum_ok("6824515772-12344")
    assert not internal_id_checksum_ok("6824515772-123")


@pytest.mark.parametrize(
    ("kind", "value", "valid"),
    [
        ("Nip", CLIENT, True),
        ("Nip", "0123456789", False),
        ("Nip", "1001234567", False),  # digits 2-3 may not both be zero
        ("Pesel", EMPLOYEE, True),
        ("Pesel", "90130112345", False),  # month 13
        ("Fingerprint", "ab" * 32, True),
        ("Fingerprint", "xyz", False),
        ("InternalId", f"{CLIENT}-00015", True),
        ("PeppolId", "PPL123456", True),
        ("PeppolId", "P123456789", False),
        ("NipVatUe", f"{CLIENT}-DE123456789", True),
        ("AllPartners", None, True),
    ],
)
def test_identifier_formats(kind: str, value: str | None, valid: bool) -> None:
    assert identifier_valid(kind, value) is valid


def test_peppol_provider_in_its_own_context(store: Store) -> None:
    provider = Identifier("PeppolId", "PPL123456")
    assert held(store, provider, provider) == {"PefInvoiceWrite"}
    assert held(store, provider, Identifier("PeppolId", "PPL654321")) == frozenset()
