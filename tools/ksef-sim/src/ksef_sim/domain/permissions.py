"""Who may act in which context (REFERENCE.md §15). Read by authentication (415 when nothing is held) and by
every endpoint through the permissions baked into access tokens.

Sources of a permission in a context:
- the owner rule: the subject whose NIP equals the context NIP, or a person registered through ``/testdata/person``
  as the owner of that NIP (the NIP–PESEL link), holds every permission except VatUeManage;
- direct grants in that context (``/permissions/persons/grants``, ``/testdata/permissions``, a subunit's
  administrator, EU-entity administrators and representatives in a ``NipVatUe`` context);
- entity grants (accounting office): the client grants the office NIP InvoiceRead/InvoiceWrite; the office (its NIP
  or its owner) then holds them in the client's context, and so does anyone the office granted them to indirectly,
  but only for the permissions the client made delegable (``canDelegate``).

Grants are stored one record per permission scope, as the query endpoints list them (each with its own id that
``DELETE /permissions/common/grants/{id}`` takes). A revoked grant keeps its record (``revoked_at``) so its
operation can still be reported, but it neither confers anything nor appears in queries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from ksef_sim.security import Identifier
from ksef_sim.store import Record, Store

OWNER_PERMISSIONS = frozenset(
    {
        "InvoiceRead",
        "InvoiceWrite",
        "CredentialsRead",
        "CredentialsManage",
        "SubunitManage",
        "Introspection",
        "EnforcementOperations",
    }
)

# What an EU-entity administrator receives with one grant (spec: POST /permissions/eu-entities/administration/grants).
EU_ADMIN_PERMISSIONS = ("VatUeManage", "InvoiceWrite", "InvoiceRead", "Introspection")

NIP_RE = re.compile(r"^[1-9]((\d[1-9])|([1-9]\d))\d{7}$")
PESEL_RE = re.compile(r"^\d{2}(?:0[1-9]|1[0-2]|2[1-9]|3[0-2]|4[1-9]|5[0-2]|6[1-9]|7[0-2]|8[1-9]|9[0-2])\d{7}$")
FINGERPRINT_RE = re.compile(r"^[0-9A-Fa-f]{40,64}$")
INTERNAL_ID_RE = re.compile(r"^[1-9]((\d[1-9])|([1-9]\d))\d{7}-\d{5}$")
PEPPOL_ID_RE = re.compile(r"^P[A-Z]{2}[0-9]{6}$")
NIP_VAT_UE_RE = re.compile(r"^([1-9]((\d[1-9])|([1-9]\d))\d{7})-([A-Z]{2}[A-Z0-9+*]{2,13})$")


class Ident(BaseModel):
    """``{type, value}`` as stored; ``value`` is absent for ``AllPartners`` targets and the ``System`` author."""

    type: str
    value: str | None = None

    @classmethod
    def of(cls, identifier: Identifier) -> Ident:
        return cls(type=identifier.type, value=normalize_value(identifier.type, identifier.value))

    @classmethod
    def normalized(cls, kind: str, value: str | None) -> Ident:
        return cls(type=kind, value=normalize_value(kind, value))

    def same(self, other: Ident | Identifier) -> bool:
        return self.type == other.type and self.value == normalize_value(other.type, other.value)

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "value": self.value} if self.value is not None else {"type": self.type}

    @property
    def key(self) -> str:
        return f"{self.type}:{self.value or ''}"


def normalize_value(kind: str, value: str | None) -> str | None:
    # Certificate fingerprints are hex; compare them case-insensitively.
    if value is not None and kind == "Fingerprint":
        return value.upper()
    return value


def identifier_valid(kind: str, value: str | None) -> bool:
    """Format check of an identifier value by type (REFERENCE.md §2)."""
    if value is None:
        return kind in {"AllPartners", "System"}
    patterns = {
        "Nip": NIP_RE,
        "Pesel": PESEL_RE,
        "Fingerprint": FINGERPRINT_RE,
        "InternalId": INTERNAL_ID_RE,
        "PeppolId": PEPPOL_ID_RE,
        "NipVatUe": NIP_VAT_UE_RE,
    }
    pattern = patterns.get(kind)
    if pattern is None:
        return kind == "AllPartners"
    return bool(pattern.match(value))


def internal_id_checksum_ok(value: str) -> bool:
    """InternalId ``{NIP}-{5 digits}``: the last digit is sum(digit × 1,3,1,3…) mod 10 over the 14 before it."""
    digits = value.replace("-", "")
    if len(digits) != 15 or not digits.isdigit():
        return False
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits[:14]))
    return total % 10 == int(digits[14])


class GrantKind(StrEnum):
    PERSON = "person"  # /permissions/persons/grants
    ENTITY = "entity"  # /permissions/entities/grants (accounting office)
    AUTHORIZATION = "authorization"  # /permissions/authorizations/grants (SelfInvoicing, RRInvoicing, ...)
    INDIRECT = "indirect"  # /permissions/indirect/grants
    SUBUNIT = "subunit"  # /permissions/subunits/grants (CredentialsManage in the subunit)
    EU_ADMIN = "euAdmin"  # /permissions/eu-entities/administration/grants
    EU_REPRESENTATIVE = "euRepresentative"  # /permissions/eu-entities/grants
    TESTDATA = "testdata"  # /testdata/permissions


class PermissionGrant(Record):
    KIND = "permission_grant"

    id: str
    kind: GrantKind
    scope: str  # one permission type
    # Where the permission is exercised: the grantor's context, except subunit and EU-admin grants, which apply in
    # the subunit's / the EU entity's context. For entity grants it is the client; for indirect ones the office.
    context: Ident
    grantor_context: Ident
    author: Ident
    authorized: Ident
    target: Ident | None = None  # indirect grants: Nip (selective), AllPartners or None (general), InternalId
    can_delegate: bool = False
    description: str
    subject_details: dict[str, Any] | None = None
    subunit_name: str | None = None
    eu_entity_name: str | None = None
    eu_entity_details: dict[str, Any] | None = None
    start_date: datetime
    revoked_at: datetime | None = None
    operation_reference: str | None = None

    def key(self) -> str:
        return self.id

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class PermissionOperation(Record):
    """An async grant/revoke (``…-EG-…``). The simulator applies it at once and reports the outcome on read."""

    KIND = "permission_operation"

    reference_number: str
    context: Ident
    created_at: datetime
    code: int = 200
    details: list[str] = []

    def key(self) -> str:
        return self.reference_number


OPERATION_DESCRIPTIONS: dict[int, str] = {
    100: "Operacja przyjęta do realizacji",
    200: "Operacja zakończona sukcesem",
    400: "Operacja zakończona niepowodzeniem",
    410: "Podane identyfikatory są niezgodne lub pozostają w niewłaściwej relacji",
    420: "Użyte poświadczenia nie mają uprawnień do wykonania tej operacji",
    430: "Kontekst identyfikatora nie odpowiada wymaganej roli lub uprawnieniom",
    440: "Operacja niedozwolona dla wskazanych powiązań identyfikatorów",
    450: "Operacja niedozwolona dla wskazanego identyfikatora lub jego typu",
    500: "Nieznany błąd",
    550: "Operacja została anulowana przez system",
}


class OperationRejected(Exception):
    """A grant or revoke accepted with 202 whose operation ends with a failure status (410, 430, 440, 450...)."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# -- TEST data (REFERENCE.md §18) -----------------------------------------------------------------------------------


class RegisteredSubunit(BaseModel):
    subjectNip: str
    description: str


class RegisteredSubject(Record):
    """``/testdata/subject``: an enforcement authority, a VAT group or a local-government unit (JST)."""

    KIND = "testdata_subject"

    nip: str
    subject_type: str  # EnforcementAuthority | VatGroup | JST
    description: str
    subunits: list[RegisteredSubunit] = []
    created_date: datetime

    def key(self) -> str:
        return self.nip


class RegisteredPerson(Record):
    """``/testdata/person``: a natural person who owns ``nip`` (NIP–PESEL link); a bailiff gets CourtBailiff."""

    KIND = "testdata_person"

    nip: str
    pesel: str
    is_bailiff: bool = False
    is_deceased: bool = False
    description: str
    created_date: datetime

    def key(self) -> str:
        return self.nip


class AttachmentConsent(Record):
    """``/testdata/attachment``: the e-Urząd Skarbowy opt-in to invoices with attachments (REFERENCE.md §5)."""

    KIND = "testdata_attachment"

    nip: str
    granted_at: datetime
    revoked_date: datetime | None = None

    def key(self) -> str:
        return self.nip

    def allowed(self, now: datetime) -> bool:
        return self.revoked_date is None or now < self.revoked_date


class ContextBlock(Record):
    KIND = "testdata_context_block"

    context: Ident
    blocked_at: datetime

    def key(self) -> str:
        return self.context.key


class PeppolProvider(Record):
    """A registered Peppol service provider (``GET /peppol/query``)."""

    KIND = "peppol_provider"

    id: str  # PeppolId ``P[A-Z]{2}[0-9]{6}``
    name: str
    date_created: datetime

    def key(self) -> str:
        return self.id


def register_peppol_provider(store: Store, provider_id: str, name: str, now: datetime) -> PeppolProvider:
    """Record a Peppol provider once (e.g. on its first authentication in a ``PeppolId`` context)."""
    existing = store.get(PeppolProvider, provider_id)
    if existing is not None:
        return existing
    provider = PeppolProvider(id=provider_id, name=name, date_created=now)
    store.put(provider)
    return provider


# -- reading ---------------------------------------------------------------------------------------------------------


def active_grants(store: Store) -> Iterable[PermissionGrant]:
    return (grant for grant in store.all(PermissionGrant) if grant.active)


def owned_nips(store: Store, subject: Identifier) -> set[str]:
    """NIPs ``subject`` owns: its own NIP, or those a test person with this PESEL was registered for."""
    if subject.type == "Nip":
        return {subject.value}
    if subject.type == "Pesel":
        return {person.nip for person in store.all(RegisteredPerson) if person.pesel == subject.value}
    return set()


def is_owner(store: Store, subject: Identifier, context: Identifier) -> bool:
    return context.type == "Nip" and context.value in owned_nips(store, subject)


def acts_as(store: Store, subject: Identifier, authorized: Ident) -> bool:
    """``subject`` is the grantee itself, or (for a grant to a NIP) the owner of that NIP."""
    if authorized.same(subject):
        return True
    return authorized.type == "Nip" and authorized.value in owned_nips(store, subject)


def delegable_scopes(store: Store, client: Ident | Identifier, office_nip: str) -> set[str]:
    """Scopes the client granted the office with ``canDelegate`` (what the office may pass on indirectly)."""
    return {
        grant.scope
        for grant in active_grants(store)
        if grant.kind is GrantKind.ENTITY
        and grant.can_delegate
        and grant.context.same(client)
        and grant.authorized.type == "Nip"
        and grant.authorized.value == office_nip
    }


def _indirect_target_matches(grant: PermissionGrant, context: Identifier) -> bool:
    target = grant.target
    if target is None or target.type == "AllPartners":
        return True
    return target.same(context)


def effective_permissions(store: Store, subject: Identifier, context: Identifier, now: datetime) -> frozenset[str]:
    """The permissions ``subject`` holds in ``context`` right now (empty: authentication ends with status 415)."""
    held: set[str] = set()
    if is_owner(store, subject, context):
        held |= OWNER_PERMISSIONS
    if context.type == "PeppolId" and subject.type == "PeppolId" and subject.value == context.value:
        # A Peppol provider in its own context sends PEF invoices for clients that granted it PefInvoicing
        # (REFERENCE.md §15 lists PefInvoiceWrite for providers; the exact rule is not documented).
        held.add("PefInvoiceWrite")
    grants = list(active_grants(store))
    for grant in grants:
        # Direct grants in this context; for an entity grant (kind ENTITY, context = the client) the office works
        # here under its own NIP (seal) or as its owner. Authorisations (SelfInvoicing, ...) are no person rights.
        if (
            grant.kind not in {GrantKind.INDIRECT, GrantKind.AUTHORIZATION}
            and grant.context.same(context)
            and acts_as(store, subject, grant.authorized)
        ):
            held.add(grant.scope)
    # Indirect: office O granted ``subject`` P for this client (or for all partners), and the client granted O
    # P with canDelegate.
    for grant in grants:
        if (
            grant.kind is GrantKind.INDIRECT
            and grant.authorized.same(subject)
            and grant.grantor_context.type == "Nip"
            and grant.grantor_context.value is not None
            and _indirect_target_matches(grant, context)
            and grant.scope in delegable_scopes(store, context, grant.grantor_context.value)
        ):
            held.add(grant.scope)
    return frozenset(held)


def context_blocked(store: Store, context: Identifier) -> bool:
    """``/testdata/context/block``: authentication into the context ends with status 480."""
    return store.get(ContextBlock, Ident.of(context).key) is not None


def person_deceased(store: Store, subject: Identifier) -> bool:
    """``/testdata/person`` with ``isDeceased``: authentication ends with status 470."""
    for person in store.all(RegisteredPerson):
        if person.is_deceased and (
            (subject.type == "Pesel" and person.pesel == subject.value)
            or (subject.type == "Nip" and person.nip == subject.value)
        ):
            return True
    return False


def attachment_allowed(store: Store, nip: str, now: datetime) -> bool:
    """Whether ``nip`` may send invoices with attachments (``/testdata/attachment``; REFERENCE.md §5)."""
    consent = store.get(AttachmentConsent, nip)
    return consent is not None and consent.allowed(now)


# -- roles (GET /permissions/query/entities/roles, POST …/subordinate-entities/roles) ---------------------------------


class EntityRole(BaseModel):
    role: str
    description: str
    start_date: datetime
    parent_nip: str | None = None


_ROLE_NAMES = {
    "EnforcementAuthority": ("EnforcementAuthority", None),
    "VatGroup": ("VatGroupUnit", "VatGroupSubUnit"),
    "JST": ("LocalGovernmentUnit", "LocalGovernmentSubUnit"),
}


def entity_roles(store: Store, nip: str) -> list[EntityRole]:
    """Roles of the entity ``nip``: its own test-subject type, membership of a VAT group/JST, a bailiff owner."""
    roles: list[EntityRole] = []
    for subject in store.all(RegisteredSubject):
        own, sub = _ROLE_NAMES.get(subject.subject_type, (None, None))
        if subject.nip == nip and own is not None:
            roles.append(EntityRole(role=own, description=subject.description, start_date=subject.created_date))
        for subunit in subject.subunits:
            if subunit.subjectNip == nip and sub is not None:
                roles.append(
                    EntityRole(
                        role=sub,
                        description=subunit.description,
                        start_date=subject.created_date,
                        parent_nip=subject.nip,
                    )
                )
    person = store.get(RegisteredPerson, nip)
    if person is not None and person.is_bailiff:
        roles.append(EntityRole(role="CourtBailiff", description=person.description, start_date=person.created_date))
    return roles


def subordinate_roles(store: Store, nip: str) -> list[tuple[str, EntityRole]]:
    """``(subordinate NIP, role)`` for the members of the VAT group / subordinate JSTs of ``nip``."""
    result: list[tuple[str, EntityRole]] = []
    subject = store.get(RegisteredSubject, nip)
    if subject is None:
        return result
    _, sub = _ROLE_NAMES.get(subject.subject_type, (None, None))
    if sub is None:
        return result
    for subunit in subject.subunits:
        role = EntityRole(role=sub, description=subunit.description, start_date=subject.created_date, parent_nip=nip)
        result.append((subunit.subjectNip, role))
    return result


def may_grant_enforcement(store: Store, context: Identifier) -> bool:
    """EnforcementOperations only in the context of an EnforcementAuthority or a CourtBailiff (spec)."""
    if context.type != "Nip":
        return False
    return any(role.role in {"EnforcementAuthority", "CourtBailiff"} for role in entity_roles(store, context.value))


def is_parent_of(store: Store, parent_nip: str, child_nip: str) -> bool:
    """The context is a VAT group or superior JST and ``child_nip`` is one of its members."""
    return any(child == child_nip for child, _ in subordinate_roles(store, parent_nip))


# -- writing ---------------------------------------------------------------------------------------------------------


def new_grant_id() -> str:
    return str(uuid.uuid4())


def find_active(
    store: Store, kind: GrantKind, context: Ident, authorized: Ident, scope: str, target: Ident | None = None
) -> PermissionGrant | None:
    for grant in active_grants(store):
        if (
            grant.kind is kind
            and grant.scope == scope
            and grant.context.key == context.key
            and grant.authorized.key == authorized.key
            and (grant.target.key if grant.target else None) == (target.key if target else None)
        ):
            return grant
    return None


def upsert_grant(store: Store, grant: PermissionGrant) -> PermissionGrant:
    """Store ``grant`` unless the same permission is already held; an existing one takes the new attributes
    (description, canDelegate, details) but keeps its id and start date."""
    existing = find_active(store, grant.kind, grant.context, grant.authorized, grant.scope, grant.target)
    if existing is None:
        store.put(grant)
        return grant
    existing.can_delegate = grant.can_delegate
    existing.description = grant.description
    existing.subject_details = grant.subject_details or existing.subject_details
    existing.subunit_name = grant.subunit_name or existing.subunit_name
    existing.eu_entity_name = grant.eu_entity_name or existing.eu_entity_name
    existing.eu_entity_details = grant.eu_entity_details or existing.eu_entity_details
    store.put(existing)
    return existing


def revoke(store: Store, grant: PermissionGrant, now: datetime) -> None:
    grant.revoked_at = now
    store.put(grant)


def revoke_where(store: Store, now: datetime, predicate: Callable[[PermissionGrant], bool]) -> int:
    count = 0
    for grant in list(active_grants(store)):
        if predicate(grant):
            revoke(store, grant, now)
            count += 1
    return count


def permission_state(store: Store, grant: PermissionGrant) -> str:
    """``Inactive`` for a selective indirect grant whose client no longer lets the office delegate that scope."""
    if (
        grant.kind is GrantKind.INDIRECT
        and grant.target is not None
        and grant.target.type in {"Nip", "InternalId"}
        and grant.grantor_context.value is not None
        and grant.scope not in delegable_scopes(store, grant.target, grant.grantor_context.value)
    ):
        return "Inactive"
    return "Active"
