"""``/permissions/*`` (REFERENCE.md §15): grants, revokes, operation status, queries, attachment opt-in status.

Grants and revokes answer 202 with an ``…-EG-…`` operation; the simulator applies them at once and the operation
reports the outcome (200, or 410/430/440/450 when the relation between identifiers forbids it). Input that is
malformed on its face is a synchronous 400 21405, as on the real service. Rules live in ``domain.permissions``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any, Generic, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from ksef_sim.clock import iso
from ksef_sim.deps import access
from ksef_sim.domain.permissions import (
    EU_ADMIN_PERMISSIONS,
    OPERATION_DESCRIPTIONS,
    AttachmentConsent,
    GrantKind,
    Ident,
    OperationRejected,
    PermissionGrant,
    PermissionOperation,
    active_grants,
    acts_as,
    delegable_scopes,
    entity_roles,
    identifier_valid,
    internal_id_checksum_ok,
    is_owner,
    is_parent_of,
    may_grant_enforcement,
    new_grant_id,
    permission_state,
    revoke,
    subordinate_roles,
    upsert_grant,
)
from ksef_sim.errors import Gone, KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.refs import REFERENCE_NUMBER_RE, RefType, reference_number
from ksef_sim.security import Caller
from ksef_sim.state import Sim, get_sim

router = APIRouter()

OPERATION_RETENTION = timedelta(days=30)  # REFERENCE.md §2: /permissions/operations/{ref} answers 410 after 30 days

T = TypeVar("T")

PageOffset = Annotated[int, Query(ge=0)]
PageSize = Annotated[int, Query(ge=10, le=100)]
Description = Annotated[str, Field(min_length=5, max_length=256)]
CallerDep = Annotated[Caller, Depends(access(Group.OTHER))]


# -- request schemas (field names as in the spec) ---------------------------------------------------------------


class SubjectIdentifierIn(BaseModel):
    type: Literal["Nip", "Pesel", "Fingerprint"]
    value: str = Field(min_length=10, max_length=64)


class PersonDetailsIn(BaseModel):
    firstName: str = Field(min_length=2, max_length=30)
    lastName: str = Field(min_length=2, max_length=81)


class PersonIdentifierIn(BaseModel):
    type: Literal["Pesel", "Nip"]
    value: str = Field(min_length=10, max_length=11)


class IdDocumentIn(BaseModel):
    type: str = Field(max_length=20)
    number: str = Field(max_length=20)
    country: str = Field(min_length=2, max_length=2)


class PersonByFpWithIdIn(PersonDetailsIn):
    identifier: PersonIdentifierIn


class PersonByFpNoIdIn(PersonDetailsIn):
    birthDate: date
    idDocument: IdDocumentIn


class EntityByFpIn(BaseModel):
    fullName: str = Field(max_length=100)
    address: str = Field(max_length=512)


class PersonSubjectDetailsIn(BaseModel):
    subjectDetailsType: Literal[
        "PersonByIdentifier", "PersonByFingerprintWithIdentifier", "PersonByFingerprintWithoutIdentifier"
    ]
    personById: PersonDetailsIn | None = None
    personByFpWithId: PersonByFpWithIdIn | None = None
    personByFpNoId: PersonByFpNoIdIn | None = None


class EuSubjectDetailsIn(BaseModel):
    subjectDetailsType: Literal[
        "PersonByFingerprintWithIdentifier", "PersonByFingerprintWithoutIdentifier", "EntityByFingerprint"
    ]
    personByFpWithId: PersonByFpWithIdIn | None = None
    personByFpNoId: PersonByFpNoIdIn | None = None
    entityByFp: EntityByFpIn | None = None


class EntityDetailsIn(BaseModel):
    fullName: str = Field(min_length=5, max_length=90)


PersonPermissionType = Literal[
    "CredentialsManage",
    "CredentialsRead",
    "InvoiceWrite",
    "InvoiceRead",
    "Introspection",
    "SubunitManage",
    "EnforcementOperations",
]


class PersonGrantIn(BaseModel):
    subjectIdentifier: SubjectIdentifierIn
    permissions: list[PersonPermissionType]
    description: Description
    subjectDetails: PersonSubjectDetailsIn


class EntityPermissionIn(BaseModel):
    type: Literal["InvoiceWrite", "InvoiceRead"]
    canDelegate: bool | None = None


class EntitySubjectIdentifierIn(BaseModel):
    type: Literal["Nip"]
    value: str = Field(min_length=10, max_length=10)


class EntityGrantIn(BaseModel):
    subjectIdentifier: EntitySubjectIdentifierIn
    permissions: list[EntityPermissionIn]
    description: Description
    subjectDetails: EntityDetailsIn


class AuthorizationSubjectIdentifierIn(BaseModel):
    type: Literal["Nip", "PeppolId"]
    value: str = Field(min_length=9, max_length=10)


class AuthorizationGrantIn(BaseModel):
    subjectIdentifier: AuthorizationSubjectIdentifierIn
    permission: Literal["SelfInvoicing", "RRInvoicing", "TaxRepresentative", "PefInvoicing"]
    description: Description
    subjectDetails: EntityDetailsIn


class TargetIdentifierIn(BaseModel):
    type: Literal["Nip", "AllPartners", "InternalId"]
    value: str | None = Field(default=None, min_length=10, max_length=16)


class IndirectGrantIn(BaseModel):
    subjectIdentifier: SubjectIdentifierIn
    targetIdentifier: TargetIdentifierIn | None = None
    permissions: list[Literal["InvoiceRead", "InvoiceWrite"]]
    description: Description
    subjectDetails: PersonSubjectDetailsIn


class SubunitContextIn(BaseModel):
    type: Literal["InternalId", "Nip"]
    value: str = Field(min_length=10, max_length=16)


class SubunitGrantIn(BaseModel):
    subjectIdentifier: SubjectIdentifierIn
    contextIdentifier: SubunitContextIn
    description: Description
    subunitName: str | None = Field(default=None, min_length=5, max_length=256)
    subjectDetails: PersonSubjectDetailsIn


class FingerprintIdentifierIn(BaseModel):
    type: Literal["Fingerprint"]
    value: str = Field(min_length=64, max_length=64)


class NipVatUeIn(BaseModel):
    type: Literal["NipVatUe"]
    value: str = Field(min_length=15, max_length=25)


class EuEntityDetailsIn(BaseModel):
    fullName: str = Field(max_length=100)
    address: str = Field(max_length=512)


class EuAdminGrantIn(BaseModel):
    subjectIdentifier: FingerprintIdentifierIn
    contextIdentifier: NipVatUeIn
    description: Description
    euEntityName: str = Field(min_length=5, max_length=256)
    subjectDetails: EuSubjectDetailsIn
    euEntityDetails: EuEntityDetailsIn


class EuGrantIn(BaseModel):
    subjectIdentifier: FingerprintIdentifierIn
    permissions: list[Literal["InvoiceWrite", "InvoiceRead"]]
    description: Description
    subjectDetails: EuSubjectDetailsIn


class ContextIdentifierIn(BaseModel):
    type: Literal["Nip", "InternalId"]
    value: str = Field(min_length=10, max_length=16)


class AuthorIdentifierIn(BaseModel):
    type: Literal["Nip", "Pesel", "Fingerprint", "System"]
    value: str | None = Field(default=None, min_length=10, max_length=64)


PermissionStateIn = Literal["Active", "Inactive"]


class PersonalQueryIn(BaseModel):
    contextIdentifier: ContextIdentifierIn | None = None
    targetIdentifier: TargetIdentifierIn | None = None
    permissionTypes: list[PersonPermissionType | Literal["VatUeManage"]] | None = None
    permissionState: PermissionStateIn | None = None


class PersonsQueryIn(BaseModel):
    authorIdentifier: AuthorIdentifierIn | None = None
    authorizedIdentifier: SubjectIdentifierIn | None = None
    contextIdentifier: ContextIdentifierIn | None = None
    targetIdentifier: TargetIdentifierIn | None = None
    permissionTypes: list[PersonPermissionType] | None = None
    permissionState: PermissionStateIn | None = None
    queryType: Literal["PermissionsInCurrentContext", "PermissionsGrantedInCurrentContext"]


class SubunitsQueryIn(BaseModel):
    subunitIdentifier: SubunitContextIn | None = None


class EntitiesQueryIn(BaseModel):
    contextIdentifier: ContextIdentifierIn | None = None


class NipIdentifierIn(BaseModel):
    type: Literal["Nip"]
    value: str = Field(min_length=10, max_length=10)


class SubordinateQueryIn(BaseModel):
    subordinateEntityIdentifier: NipIdentifierIn | None = None


class AuthorizationsQueryIn(BaseModel):
    authorizingIdentifier: NipIdentifierIn | None = None
    authorizedIdentifier: AuthorizationSubjectIdentifierIn | None = None
    queryType: Literal["Granted", "Received"]
    permissionTypes: list[Literal["SelfInvoicing", "TaxRepresentative", "RRInvoicing", "PefInvoicing"]] | None = None


class EuQueryIn(BaseModel):
    vatUeIdentifier: str | None = Field(default=None, pattern=r"^[A-Z]{2}[A-Z0-9+*]{2,13}$")
    authorizedFingerprintIdentifier: str | None = None
    permissionTypes: list[Literal["VatUeManage", "InvoiceWrite", "InvoiceRead", "Introspection"]] | None = None


# -- helpers -----------------------------------------------------------------------------------------------------


class _IdentLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def value(self) -> str | None: ...


def _ident(identifier: _IdentLike) -> Ident:
    return Ident.normalized(identifier.type, identifier.value)


def _check_identifier(kind: str, value: str | None, field: str) -> None:
    if not identifier_valid(kind, value):
        raise KsefError(21405, f"{field}: nieprawidłowa wartość identyfikatora typu {kind}.")


def _unique(values: Sequence[str], field: str) -> None:
    if not values:
        raise KsefError(21405, f"{field}: lista nie może być pusta.")
    if len(set(values)) != len(values):
        raise KsefError(21405, f"{field}: każda wartość może wystąpić tylko raz.")


def _person_details(details: PersonSubjectDetailsIn | EuSubjectDetailsIn) -> dict[str, Any]:
    """The stored ``subjectPersonDetails`` / ``subjectEntityDetails`` the queries render (spec response shapes)."""
    kind = details.subjectDetailsType
    if kind == "PersonByIdentifier" and isinstance(details, PersonSubjectDetailsIn):
        if details.personById is None:
            raise KsefError(21405, "subjectDetails.personById: wymagane dla PersonByIdentifier.")
        person = {"subjectDetailsType": kind, **details.personById.model_dump()}
        return {"subjectPersonDetails": person}
    if kind == "PersonByFingerprintWithIdentifier":
        if details.personByFpWithId is None:
            raise KsefError(21405, "subjectDetails.personByFpWithId: wymagane dla PersonByFingerprintWithIdentifier.")
        with_id = details.personByFpWithId
        person = {
            "subjectDetailsType": kind,
            "firstName": with_id.firstName,
            "lastName": with_id.lastName,
            "personIdentifier": with_id.identifier.model_dump(),
        }
        return {"subjectPersonDetails": person}
    if kind == "PersonByFingerprintWithoutIdentifier":
        if details.personByFpNoId is None:
            raise KsefError(21405, "subjectDetails.personByFpNoId: wymagane dla PersonByFingerprintWithoutIdentifier.")
        no_id = details.personByFpNoId
        person = {
            "subjectDetailsType": kind,
            "firstName": no_id.firstName,
            "lastName": no_id.lastName,
            "birthDate": no_id.birthDate.isoformat(),
            "idDocument": no_id.idDocument.model_dump(),
        }
        return {"subjectPersonDetails": person}
    if kind == "EntityByFingerprint" and isinstance(details, EuSubjectDetailsIn):
        if details.entityByFp is None:
            raise KsefError(21405, "subjectDetails.entityByFp: wymagane dla EntityByFingerprint.")
        entity = {"subjectDetailsType": kind, **details.entityByFp.model_dump()}
        return {"subjectEntityDetails": entity}
    raise KsefError(21405, f"subjectDetails.subjectDetailsType: {kind} niedozwolony.")


def _entity_details(details: EntityDetailsIn) -> dict[str, Any]:
    return {"subjectEntityDetails": {"subjectDetailsType": "EntityByIdentifier", "fullName": details.fullName}}


def _context(caller: Caller) -> Ident:
    return Ident.of(caller.context)


def _grant(
    sim: Sim,
    caller: Caller,
    *,
    kind: GrantKind,
    scope: str,
    authorized: Ident,
    description: str,
    context: Ident | None = None,
    **extra: Any,
) -> None:
    """Grant ``scope`` on the caller's behalf (in its context unless another is named), replacing an equal grant."""
    upsert_grant(
        sim.store,
        PermissionGrant(
            id=new_grant_id(),
            kind=kind,
            scope=scope,
            context=context or _context(caller),
            grantor_context=_context(caller),
            author=Ident.of(caller.subject),
            authorized=authorized,
            description=description,
            start_date=sim.clock.now(),
            **extra,
        ),
    )


def _operation(sim: Sim, caller: Caller, apply: Callable[[str], None]) -> dict[str, str]:
    """Run ``apply(reference)`` as an accepted operation: its ``OperationRejected`` becomes the final status."""
    now = sim.clock.now()
    ref = reference_number(RefType.PERMISSION_OPERATION, now)
    operation = PermissionOperation(reference_number=ref, context=_context(caller), created_at=now)
    # No store.batch() here: a rejection is raised before anything is written, and a rolled-back batch would
    # drop the whole record cache.
    try:
        apply(ref)
    except OperationRejected as rejected:
        operation.code = rejected.code
        operation.details = [rejected.detail]
    sim.store.put(operation)
    return {"referenceNumber": ref}


def _page(items: list[T], offset: int, size: int) -> tuple[list[T], bool]:
    start = offset * size  # pageOffset is a page index (REFERENCE.md §2)
    return items[start : start + size], len(items) > start + size


def _sorted(grants: list[PermissionGrant]) -> list[PermissionGrant]:
    # Spec: sorted by startDate descending, then id ascending.
    by_id = sorted(grants, key=lambda g: g.id)
    return sorted(by_id, key=lambda g: g.start_date, reverse=True)


def _details(grant: PermissionGrant, *keys: str) -> dict[str, Any]:
    details = grant.subject_details or {}
    return {key: details[key] for key in keys if key in details}


# -- grants -------------------------------------------------------------------------------------------------------
# Every grant endpoint runs the same steps: the caller's permission, the request's own 21405 checks, then an
# accepted operation that checks the relation between the identifiers and stores one grant per scope. What differs
# is a row of ``GRANT_ROUTES``: the request model, the grant kind and how a valid request becomes a ``GrantPlan``.


Admit = Callable[[Sim, Caller], None]


def _admit_any(_sim: Sim, _caller: Caller) -> None:
    return None


@dataclass(frozen=True)
class GrantPlan:
    """What a request that passed its own checks grants: ``scopes`` to ``authorized``, once ``admit`` lets it
    (raising ``OperationRejected`` when the caller's context may not grant it: the operation's final status)."""

    authorized: Ident
    scopes: Sequence[str]
    admit: Admit = _admit_any
    context: Ident | None = None  # where the grants apply; the caller's context unless named
    fields: Mapping[str, Any] = field(default_factory=dict)  # PermissionGrant fields every grant shares
    per_scope: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True)
class GrantRoute(Generic[B]):
    name: str  # the endpoint's name: the operationId and summary of the OpenAPI document derive from it
    path: str
    body: type[B]
    kind: GrantKind
    permission: str  # what the caller must hold in its context
    plan: Callable[[B], GrantPlan]


def _plan_persons(body: PersonGrantIn) -> GrantPlan:
    _check_identifier(body.subjectIdentifier.type, body.subjectIdentifier.value, "subjectIdentifier")
    _unique(body.permissions, "permissions")
    details = _person_details(body.subjectDetails)

    def admit(sim: Sim, caller: Caller) -> None:
        if "EnforcementOperations" in body.permissions and not may_grant_enforcement(sim.store, caller.context):
            raise OperationRejected(
                430, "Uprawnienie EnforcementOperations wymaga roli EnforcementAuthority lub CourtBailiff kontekstu."
            )

    return GrantPlan(
        authorized=Ident.normalized(body.subjectIdentifier.type, body.subjectIdentifier.value),
        scopes=body.permissions,
        admit=admit,
        fields={"subject_details": details},
    )


def _plan_entities(body: EntityGrantIn) -> GrantPlan:
    _check_identifier("Nip", body.subjectIdentifier.value, "subjectIdentifier")
    _unique([p.type for p in body.permissions], "permissions")
    office = Ident(type="Nip", value=body.subjectIdentifier.value)

    def admit(_sim: Sim, caller: Caller) -> None:
        if caller.context.type not in {"Nip", "InternalId"}:
            raise OperationRejected(430, "Uprawnienia do obsługi faktur nadaje podmiot identyfikowany NIP.")
        if office.same(caller.context):
            raise OperationRejected(450, "Nie można nadać uprawnień podmiotowi kontekstu.")

    return GrantPlan(
        authorized=office,
        scopes=[p.type for p in body.permissions],
        admit=admit,
        fields={"subject_details": _entity_details(body.subjectDetails)},
        per_scope={p.type: {"can_delegate": bool(p.canDelegate)} for p in body.permissions},
    )


def _plan_authorizations(body: AuthorizationGrantIn) -> GrantPlan:
    subject = body.subjectIdentifier
    _check_identifier(subject.type, subject.value, "subjectIdentifier")
    authorized = Ident(type=subject.type, value=subject.value)

    def admit(_sim: Sim, caller: Caller) -> None:
        if caller.context.type != "Nip":
            raise OperationRejected(430, "Uprawnienia podmiotowe nadaje podmiot identyfikowany NIP.")
        # PEF invoicing is granted to a Peppol provider; the other authorisations to an entity with a NIP.
        if (body.permission == "PefInvoicing") != (subject.type == "PeppolId"):
            raise OperationRejected(
                450, f"Uprawnienia {body.permission} nie można nadać identyfikatorowi {subject.type}."
            )
        if authorized.same(caller.context):
            raise OperationRejected(450, "Nie można nadać uprawnień podmiotowi kontekstu.")

    return GrantPlan(
        authorized=authorized,
        scopes=[body.permission],
        admit=admit,
        fields={"subject_details": _entity_details(body.subjectDetails)},
    )


def _plan_indirect(body: IndirectGrantIn) -> GrantPlan:
    _check_identifier(body.subjectIdentifier.type, body.subjectIdentifier.value, "subjectIdentifier")
    _unique(body.permissions, "permissions")
    target_in = body.targetIdentifier
    target: Ident | None = None
    if target_in is not None:
        if target_in.type == "AllPartners":
            target = Ident(type="AllPartners")
        else:
            _check_identifier(target_in.type, target_in.value, "targetIdentifier")
            target = Ident(type=target_in.type, value=target_in.value)
    details = _person_details(body.subjectDetails)

    def admit(sim: Sim, caller: Caller) -> None:
        if caller.context.type != "Nip":
            raise OperationRejected(430, "Uprawnienia pośrednie nadaje pośrednik identyfikowany NIP.")
        office = caller.context.value
        if target is not None and target.type in {"Nip", "InternalId"}:
            # Selective: only after the client let this office pass on at least one permission (canDelegate).
            if not delegable_scopes(sim.store, target, office):
                raise OperationRejected(
                    430, "Klient nie nadał podmiotowi kontekstu uprawnień z prawem do dalszego przekazywania."
                )
        elif not any(
            g.kind is GrantKind.ENTITY and g.can_delegate and g.authorized.same(caller.context)
            for g in active_grants(sim.store)
        ):
            raise OperationRejected(430, "Podmiot kontekstu nie otrzymał uprawnień z prawem do dalszego przekazywania.")

    return GrantPlan(
        authorized=Ident.normalized(body.subjectIdentifier.type, body.subjectIdentifier.value),
        scopes=body.permissions,
        admit=admit,
        fields={"target": target, "subject_details": details},
    )


def _plan_subunits(body: SubunitGrantIn) -> GrantPlan:
    _check_identifier(body.subjectIdentifier.type, body.subjectIdentifier.value, "subjectIdentifier")
    unit = body.contextIdentifier
    _check_identifier(unit.type, unit.value, "contextIdentifier")
    if unit.type == "InternalId" and not internal_id_checksum_ok(unit.value):
        raise KsefError(21405, "contextIdentifier: nieprawidłowa cyfra kontrolna identyfikatora wewnętrznego.")
    details = _person_details(body.subjectDetails)

    def admit(sim: Sim, caller: Caller) -> None:
        if caller.context.type != "Nip":
            raise OperationRejected(430, "Jednostki podrzędne tworzy podmiot identyfikowany NIP.")
        if unit.type == "InternalId" and not unit.value.startswith(f"{caller.context.value}-"):
            raise OperationRejected(410, "Identyfikator wewnętrzny nie należy do podmiotu kontekstu.")
        if unit.type == "Nip" and not is_parent_of(sim.store, caller.context.value, unit.value):
            raise OperationRejected(440, "Wskazany NIP nie jest podmiotem podrzędnym podmiotu kontekstu.")

    return GrantPlan(
        authorized=Ident.normalized(body.subjectIdentifier.type, body.subjectIdentifier.value),
        scopes=["CredentialsManage"],
        admit=admit,
        context=Ident(type=unit.type, value=unit.value),
        fields={"subunit_name": body.subunitName, "subject_details": details},
    )


def _plan_eu_admin(body: EuAdminGrantIn) -> GrantPlan:
    _check_identifier("Fingerprint", body.subjectIdentifier.value, "subjectIdentifier")
    _check_identifier("NipVatUe", body.contextIdentifier.value, "contextIdentifier")
    details = _person_details(body.subjectDetails)

    def admit(_sim: Sim, caller: Caller) -> None:
        if caller.context.type != "Nip" or not body.contextIdentifier.value.startswith(f"{caller.context.value}-"):
            raise OperationRejected(410, "Pierwszy człon kontekstu złożonego musi być NIP-em podmiotu kontekstu.")

    return GrantPlan(
        authorized=Ident(type="Fingerprint", value=body.subjectIdentifier.value.upper()),
        scopes=EU_ADMIN_PERMISSIONS,
        admit=admit,
        context=Ident(type="NipVatUe", value=body.contextIdentifier.value),
        fields={
            "subject_details": details,
            "eu_entity_name": body.euEntityName,
            "eu_entity_details": body.euEntityDetails.model_dump(),
        },
    )


def _plan_eu(body: EuGrantIn) -> GrantPlan:
    _check_identifier("Fingerprint", body.subjectIdentifier.value, "subjectIdentifier")
    _unique(body.permissions, "permissions")
    details = _person_details(body.subjectDetails)

    def admit(_sim: Sim, caller: Caller) -> None:
        if caller.context.type != "NipVatUe":
            raise OperationRejected(430, "Reprezentantów podmiotu unijnego uprawnia się w kontekście złożonym.")

    return GrantPlan(
        authorized=Ident(type="Fingerprint", value=body.subjectIdentifier.value.upper()),
        scopes=body.permissions,
        admit=admit,
        fields={"subject_details": details},
    )


GRANT_ROUTES: tuple[GrantRoute[Any], ...] = (
    GrantRoute(
        "grant_persons",
        "/permissions/persons/grants",
        PersonGrantIn,
        GrantKind.PERSON,
        "CredentialsManage",
        _plan_persons,
    ),
    GrantRoute(
        "grant_entities",
        "/permissions/entities/grants",
        EntityGrantIn,
        GrantKind.ENTITY,
        "CredentialsManage",
        _plan_entities,
    ),
    GrantRoute(
        "grant_authorizations",
        "/permissions/authorizations/grants",
        AuthorizationGrantIn,
        GrantKind.AUTHORIZATION,
        "CredentialsManage",
        _plan_authorizations,
    ),
    GrantRoute(
        "grant_indirect",
        "/permissions/indirect/grants",
        IndirectGrantIn,
        GrantKind.INDIRECT,
        "CredentialsManage",
        _plan_indirect,
    ),
    GrantRoute(
        "grant_subunits",
        "/permissions/subunits/grants",
        SubunitGrantIn,
        GrantKind.SUBUNIT,
        "SubunitManage",
        _plan_subunits,
    ),
    GrantRoute(
        "grant_eu_admin",
        "/permissions/eu-entities/administration/grants",
        EuAdminGrantIn,
        GrantKind.EU_ADMIN,
        "CredentialsManage",
        _plan_eu_admin,
    ),
    GrantRoute(
        "grant_eu",
        "/permissions/eu-entities/grants",
        EuGrantIn,
        GrantKind.EU_REPRESENTATIVE,
        "VatUeManage",
        _plan_eu,
    ),
)


def _grant_endpoint(route: GrantRoute[Any]) -> Callable[..., Coroutine[Any, Any, dict[str, str]]]:
    async def endpoint(body: Any, request: Request, caller: CallerDep) -> dict[str, str]:
        caller.require_any(route.permission)
        sim = get_sim(request)
        plan = route.plan(body)

        def apply(ref: str) -> None:
            plan.admit(sim, caller)
            for scope in plan.scopes:
                _grant(
                    sim,
                    caller,
                    kind=route.kind,
                    scope=scope,
                    authorized=plan.authorized,
                    description=body.description,
                    context=plan.context,
                    operation_reference=ref,
                    **plan.fields,
                    **plan.per_scope.get(scope, {}),
                )

        return _operation(sim, caller, apply)

    # FastAPI reads the body's model from the signature: each route's own, as if written out by hand.
    endpoint.__annotations__ = {**endpoint.__annotations__, "body": route.body}
    return endpoint


for _route in GRANT_ROUTES:
    router.add_api_route(_route.path, _grant_endpoint(_route), methods=["POST"], status_code=202, name=_route.name)


# -- revokes ------------------------------------------------------------------------------------------------------

PermissionIdPath = Annotated[str, Path(min_length=36, max_length=36)]


def _revocable(sim: Sim, caller: Caller, permission_id: str) -> PermissionGrant:
    grant = sim.store.get(PermissionGrant, permission_id)
    here = _context(caller)
    visible = (
        grant is not None
        and grant.active
        and (
            grant.grantor_context.key == here.key
            or (
                grant.context.key == here.key
                and grant.kind
                in {GrantKind.PERSON, GrantKind.TESTDATA, GrantKind.EU_REPRESENTATIVE, GrantKind.EU_ADMIN}
            )
        )
    )
    if grant is None or not visible:
        raise KsefError(21405, f"Uprawnienie o identyfikatorze {permission_id} nie istnieje.")
    return grant


@router.delete("/permissions/common/grants/{permissionId}", status_code=202)
async def revoke_common(permissionId: PermissionIdPath, request: Request, caller: CallerDep) -> dict[str, str]:
    caller.require_any("CredentialsManage", "VatUeManage", "SubunitManage")
    sim = get_sim(request)
    grant = _revocable(sim, caller, permissionId)
    if grant.kind is GrantKind.AUTHORIZATION:
        raise KsefError(21405, "Uprawnienia podmiotowe odbiera się przez /permissions/authorizations/grants.")

    def apply(ref: str) -> None:
        revoke(sim.store, grant, sim.clock.now())

    return _operation(sim, caller, apply)


@router.delete("/permissions/authorizations/grants/{permissionId}", status_code=202)
async def revoke_authorization(permissionId: PermissionIdPath, request: Request, caller: CallerDep) -> dict[str, str]:
    caller.require_any("CredentialsManage")
    sim = get_sim(request)
    grant = _revocable(sim, caller, permissionId)
    if grant.kind is not GrantKind.AUTHORIZATION:
        raise KsefError(21405, "To nie jest uprawnienie podmiotowe; użyj /permissions/common/grants.")

    def apply(ref: str) -> None:
        revoke(sim.store, grant, sim.clock.now())

    return _operation(sim, caller, apply)


# -- operation status, attachment status ---------------------------------------------------------------------------


@router.get("/permissions/operations/{referenceNumber}")
async def operation_status(
    referenceNumber: Annotated[str, Path(min_length=36, max_length=36)],
    request: Request,
    caller: CallerDep,
) -> dict[str, Any]:
    sim = get_sim(request)
    operation = (
        sim.store.get(PermissionOperation, referenceNumber) if REFERENCE_NUMBER_RE.match(referenceNumber) else None
    )
    if operation is None or operation.context.key != _context(caller).key:
        raise KsefError(21405, f"Operacja o numerze referencyjnym {referenceNumber} nie istnieje.")
    if sim.clock.now() >= operation.created_at + OPERATION_RETENTION:
        raise Gone(f"Status operacji {referenceNumber} nie jest już dostępny (minęło 30 dni).")
    status: dict[str, Any] = {"code": operation.code, "description": OPERATION_DESCRIPTIONS[operation.code]}
    if operation.details:
        status["details"] = operation.details
    return {"status": status}


@router.get("/permissions/attachments/status")
async def attachment_status(request: Request, caller: CallerDep) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead")
    sim = get_sim(request)
    consent = sim.store.get(AttachmentConsent, caller.context.value) if caller.context.type == "Nip" else None
    if consent is None:
        return {"isAttachmentAllowed": False, "revokedDate": None}
    return {
        "isAttachmentAllowed": consent.allowed(sim.clock.now()),
        "revokedDate": iso(consent.revoked_date) if consent.revoked_date else None,
    }


# -- queries ------------------------------------------------------------------------------------------------------


def _common_row(sim: Sim, grant: PermissionGrant) -> dict[str, Any]:
    return {"id": grant.id, "description": grant.description, "startDate": iso(grant.start_date)}


def _context_json(ident: Ident) -> dict[str, Any] | None:
    # The personal/persons schemas only know Nip and InternalId contexts.
    return ident.as_json() if ident.type in {"Nip", "InternalId"} else None


def _with(row: dict[str, Any], **optional: Any) -> dict[str, Any]:
    row.update({k: v for k, v in optional.items() if v is not None})
    return row


def _state_ok(sim: Sim, grant: PermissionGrant, wanted: str | None) -> bool:
    return wanted is None or permission_state(sim.store, grant) == wanted


@router.post("/permissions/query/personal/grants")
async def query_personal(
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
    body: PersonalQueryIn | None = None,
) -> dict[str, Any]:
    sim = get_sim(request)
    query = body or PersonalQueryIn()
    here = _context(caller)
    owner = is_owner(sim.store, caller.subject, caller.context)
    selected: list[PermissionGrant] = []
    for grant in active_grants(sim.store):
        if grant.kind is GrantKind.AUTHORIZATION:
            continue
        if grant.kind is GrantKind.INDIRECT:
            # As the intermediary's person, or working for the target: named, or any partner that let the
            # intermediary delegate this scope (a general grant).
            general = grant.target is None or grant.target.type == "AllPartners"
            mine = grant.authorized.same(caller.subject) and (
                grant.grantor_context.key == here.key
                or (grant.target is not None and grant.target.key == here.key)
                or (
                    general
                    and grant.grantor_context.value is not None
                    and grant.scope in delegable_scopes(sim.store, here, grant.grantor_context.value)
                )
            )
        elif grant.kind is GrantKind.ENTITY:
            mine = (grant.context.key == here.key and acts_as(sim.store, caller.subject, grant.authorized)) or (
                owner and grant.authorized.key == here.key
            )
        else:
            mine = grant.context.key == here.key and acts_as(sim.store, caller.subject, grant.authorized)
        if not mine:
            continue
        if query.contextIdentifier and grant.context.key != _ident(query.contextIdentifier).key:
            continue
        if query.targetIdentifier and (grant.target is None or grant.target.key != _ident(query.targetIdentifier).key):
            continue
        if query.permissionTypes and grant.scope not in query.permissionTypes:
            continue
        if not _state_ok(sim, grant, query.permissionState):
            continue
        selected.append(grant)
    page, has_more = _page(_sorted(selected), pageOffset, pageSize)
    rows = []
    for grant in page:
        row = _common_row(sim, grant)
        row.update(
            permissionScope=grant.scope,
            permissionState=permission_state(sim.store, grant),
            canDelegate=grant.can_delegate,
        )
        rows.append(
            _with(
                row,
                contextIdentifier=_context_json(grant.context),
                authorizedIdentifier=grant.authorized.as_json(),
                targetIdentifier=grant.target.as_json() if grant.target else None,
                **_details(grant, "subjectPersonDetails", "subjectEntityDetails"),
            )
        )
    return {"permissions": rows, "hasMore": has_more}


@router.post("/permissions/query/persons/grants")
async def query_persons(
    body: PersonsQueryIn,
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead", "SubunitManage")
    sim = get_sim(request)
    here = _context(caller)
    kinds_here = {GrantKind.PERSON, GrantKind.TESTDATA, GrantKind.ENTITY, GrantKind.SUBUNIT}
    selected: list[PermissionGrant] = []
    for grant in active_grants(sim.store):
        if grant.context.type not in {"Nip", "InternalId"}:
            continue
        if body.queryType == "PermissionsInCurrentContext":
            # Whoever may work here, plus the persons this context authorised indirectly.
            mine = (grant.kind in kinds_here and grant.context.key == here.key) or (
                grant.kind is GrantKind.INDIRECT and grant.grantor_context.key == here.key
            )
        else:
            # What the authenticated client granted from this context (here, in its subunits, indirectly).
            mine = (
                grant.kind in {GrantKind.PERSON, GrantKind.ENTITY, GrantKind.INDIRECT, GrantKind.SUBUNIT}
                and grant.grantor_context.key == here.key
                and grant.author.same(caller.subject)
            )
        if not mine:
            continue
        if body.authorIdentifier and not (
            grant.author.type == body.authorIdentifier.type
            and (body.authorIdentifier.value is None or grant.author.value == body.authorIdentifier.value)
        ):
            continue
        if body.authorizedIdentifier and grant.authorized.key != _ident(body.authorizedIdentifier).key:
            continue
        if body.contextIdentifier and grant.context.key != _ident(body.contextIdentifier).key:
            continue
        if body.targetIdentifier and (grant.target is None or grant.target.key != _ident(body.targetIdentifier).key):
            continue
        if body.permissionTypes and grant.scope not in body.permissionTypes:
            continue
        if not _state_ok(sim, grant, body.permissionState):
            continue
        selected.append(grant)
    page, has_more = _page(_sorted(selected), pageOffset, pageSize)
    rows = []
    for grant in page:
        row = _common_row(sim, grant)
        row.update(
            authorizedIdentifier=grant.authorized.as_json(),
            authorIdentifier=grant.author.as_json(),
            permissionScope=grant.scope,
            permissionState=permission_state(sim.store, grant),
            canDelegate=grant.can_delegate,
        )
        rows.append(
            _with(
                row,
                contextIdentifier=_context_json(grant.context),
                targetIdentifier=grant.target.as_json() if grant.target else None,
                **_details(grant, "subjectPersonDetails", "subjectEntityDetails"),
            )
        )
    return {"permissions": rows, "hasMore": has_more}


@router.post("/permissions/query/subunits/grants")
async def query_subunits(
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
    body: SubunitsQueryIn | None = None,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead", "SubunitManage")
    sim = get_sim(request)
    here = _context(caller)
    wanted = _ident(body.subunitIdentifier).key if body and body.subunitIdentifier else None
    selected = [
        g
        for g in active_grants(sim.store)
        if g.kind is GrantKind.SUBUNIT
        and g.grantor_context.key == here.key
        and (wanted is None or g.context.key == wanted)
        and g.author.value is not None
    ]
    page, has_more = _page(_sorted(selected), pageOffset, pageSize)
    rows = []
    for grant in page:
        row = _common_row(sim, grant)
        row.update(
            authorizedIdentifier=grant.authorized.as_json(),
            subunitIdentifier=grant.context.as_json(),
            authorIdentifier=grant.author.as_json(),
            permissionScope="CredentialsManage",
        )
        rows.append(_with(row, subunitName=grant.subunit_name, **_details(grant, "subjectPersonDetails")))
    return {"permissions": rows, "hasMore": has_more}


@router.post("/permissions/query/entities/grants")
async def query_entities(
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
    body: EntitiesQueryIn | None = None,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead")
    sim = get_sim(request)
    here = _context(caller)
    wanted = _ident(body.contextIdentifier).key if body and body.contextIdentifier else None
    selected = [
        g
        for g in active_grants(sim.store)
        if g.kind is GrantKind.ENTITY
        and g.authorized.key == here.key
        and g.context.type in {"Nip", "InternalId"}
        and (wanted is None or g.context.key == wanted)
    ]
    page, has_more = _page(_sorted(selected), pageOffset, pageSize)
    rows = []
    for grant in page:
        row = _common_row(sim, grant)
        row.update(
            contextIdentifier=grant.context.as_json(), permissionScope=grant.scope, canDelegate=grant.can_delegate
        )
        rows.append(row)
    return {"permissions": rows, "hasMore": has_more}


@router.get("/permissions/query/entities/roles")
async def query_roles(
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead")
    sim = get_sim(request)
    roles = entity_roles(sim.store, caller.context.value) if caller.context.type == "Nip" else []
    roles.sort(key=lambda r: r.role)
    roles.sort(key=lambda r: r.start_date, reverse=True)
    page, has_more = _page(roles, pageOffset, pageSize)
    rows = []
    for role in page:
        row: dict[str, Any] = {"role": role.role, "description": role.description, "startDate": iso(role.start_date)}
        if role.parent_nip:
            row["parentEntityIdentifier"] = {"type": "Nip", "value": role.parent_nip}
        rows.append(row)
    return {"roles": rows, "hasMore": has_more}


@router.post("/permissions/query/subordinate-entities/roles")
async def query_subordinate_roles(
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
    body: SubordinateQueryIn | None = None,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead", "SubunitManage")
    sim = get_sim(request)
    wanted = body.subordinateEntityIdentifier.value if body and body.subordinateEntityIdentifier else None
    found = subordinate_roles(sim.store, caller.context.value) if caller.context.type == "Nip" else []
    found = [(nip, role) for nip, role in found if wanted is None or nip == wanted]
    found.sort(key=lambda item: item[0])
    found.sort(key=lambda item: item[1].start_date, reverse=True)
    page, has_more = _page(found, pageOffset, pageSize)
    rows = [
        {
            "subordinateEntityIdentifier": {"type": "Nip", "value": nip},
            "role": role.role,
            "description": role.description,
            "startDate": iso(role.start_date),
        }
        for nip, role in page
    ]
    return {"roles": rows, "hasMore": has_more}


@router.post("/permissions/query/authorizations/grants")
async def query_authorizations(
    body: AuthorizationsQueryIn,
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead", "PefInvoiceWrite")
    sim = get_sim(request)
    here = _context(caller)
    selected: list[PermissionGrant] = []
    for grant in active_grants(sim.store):
        if grant.kind is not GrantKind.AUTHORIZATION:
            continue
        if body.queryType == "Granted":
            if grant.grantor_context.key != here.key:
                continue
            if body.authorizedIdentifier and grant.authorized.key != _ident(body.authorizedIdentifier).key:
                continue
        else:
            if grant.authorized.key != here.key:
                continue
            if body.authorizingIdentifier and grant.context.key != _ident(body.authorizingIdentifier).key:
                continue
        if body.permissionTypes and grant.scope not in body.permissionTypes:
            continue
        selected.append(grant)
    page, has_more = _page(_sorted(selected), pageOffset, pageSize)
    rows = []
    for grant in page:
        row = _common_row(sim, grant)
        row.update(
            authorizedEntityIdentifier=grant.authorized.as_json(),
            authorizingEntityIdentifier=grant.context.as_json(),
            authorizationScope=grant.scope,
        )
        author = grant.author.as_json() if grant.author.type in {"Nip", "Pesel", "Fingerprint"} else None
        rows.append(_with(row, authorIdentifier=author, **_details(grant, "subjectEntityDetails")))
    return {"authorizationGrants": rows, "hasMore": has_more}


@router.post("/permissions/query/eu-entities/grants")
async def query_eu_entities(
    request: Request,
    caller: CallerDep,
    pageOffset: PageOffset = 0,
    pageSize: PageSize = 10,
    body: EuQueryIn | None = None,
) -> dict[str, Any]:
    caller.require_any("CredentialsManage", "CredentialsRead", "VatUeManage")
    sim = get_sim(request)
    query = body or EuQueryIn()
    here = _context(caller)
    eu_kinds = {GrantKind.EU_ADMIN, GrantKind.EU_REPRESENTATIVE}
    all_eu = [g for g in sim.store.all(PermissionGrant) if g.kind in eu_kinds]
    names = {g.context.key: (g.eu_entity_name, g.eu_entity_details) for g in all_eu if g.kind is GrantKind.EU_ADMIN}
    selected: list[PermissionGrant] = []
    for grant in all_eu:
        if not grant.active or grant.context.value is None:
            continue
        # A NIP context sees the EU entities it set up; a NipVatUe context sees its own grants.
        mine = grant.context.value.startswith(f"{here.value}-") if here.type == "Nip" else grant.context.key == here.key
        if not mine:
            continue
        vat_ue = grant.context.value.split("-", 1)[1]
        if query.vatUeIdentifier and vat_ue != query.vatUeIdentifier:
            continue
        if (
            query.authorizedFingerprintIdentifier
            and grant.authorized.value != query.authorizedFingerprintIdentifier.upper()
        ):
            continue
        if query.permissionTypes and grant.scope not in query.permissionTypes:
            continue
        selected.append(grant)
    page, has_more = _page(_sorted(selected), pageOffset, pageSize)
    rows = []
    for grant in page:
        assert grant.context.value is not None
        name, entity_details = names.get(grant.context.key, (None, None))
        row = _common_row(sim, grant)
        row.update(
            authorIdentifier=grant.author.as_json(),
            vatUeIdentifier=grant.context.value.split("-", 1)[1],
            euEntityName=name or "Podmiot unijny",
            authorizedFingerprintIdentifier=grant.authorized.value,
            permissionScope=grant.scope,
        )
        rows.append(
            _with(
                row, euEntityDetails=entity_details, **_details(grant, "subjectPersonDetails", "subjectEntityDetails")
            )
        )
    return {"permissions": rows, "hasMore": has_more}
