"""TEST-only ``/testdata/*`` (REFERENCE.md §18).

Subjects, persons, permissions, the attachment opt-in and context blocks are public (no token, per-IP limit). The
limit overrides act on the caller's context or subject and need an access token. Every change is stored, so it
survives restarts; answers are a bare 200 as in the spec.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from ksef_sim.deps import access, public
from ksef_sim.domain import limits as limits_domain
from ksef_sim.domain.permissions import (
    AttachmentConsent,
    ContextBlock,
    GrantKind,
    Ident,
    PermissionGrant,
    RegisteredPerson,
    RegisteredSubject,
    RegisteredSubunit,
    identifier_valid,
    new_grant_id,
    revoke_where,
    upsert_grant,
)
from ksef_sim.errors import KsefError
from ksef_sim.ratelimit import API_GROUPS, PRODUCTION_LIMITS, Group, Limit
from ksef_sim.security import Caller
from ksef_sim.state import get_sim

router = APIRouter()

NIP_PATTERN = r"^[1-9]((\d[1-9])|([1-9]\d))\d{7}$"
PESEL_PATTERN = r"^\d{2}(?:0[1-9]|1[0-2]|2[1-9]|3[0-2]|4[1-9]|5[0-2]|6[1-9]|7[0-2]|8[1-9]|9[0-2])\d{7}$"

Nip = Annotated[str, Field(min_length=10, max_length=10, pattern=NIP_PATTERN)]
Description = Annotated[str, Field(min_length=5, max_length=256)]
PublicDep = Depends(public())
CallerDep = Annotated[Caller, Depends(access(Group.OTHER))]


def _ok() -> Response:
    return Response(status_code=200)


# -- subjects and persons ---------------------------------------------------------------------------------------


class SubunitIn(BaseModel):
    subjectNip: Nip
    description: Description


class SubjectCreateIn(BaseModel):
    subjectNip: Nip
    subjectType: Literal["EnforcementAuthority", "VatGroup", "JST"]
    subunits: list[SubunitIn] | None = None
    description: Description
    createdDate: datetime | None = None


class SubjectRemoveIn(BaseModel):
    subjectNip: Nip


@router.post("/testdata/subject", dependencies=[PublicDep])
async def create_subject(body: SubjectCreateIn, request: Request) -> Response:
    sim = get_sim(request)
    if sim.store.get(RegisteredSubject, body.subjectNip) is not None:
        raise KsefError(30001, f"Podmiot {body.subjectNip} już istnieje.")
    sim.store.put(
        RegisteredSubject(
            nip=body.subjectNip,
            subject_type=body.subjectType,
            description=body.description,
            subunits=[
                RegisteredSubunit(subjectNip=s.subjectNip, description=s.description) for s in body.subunits or []
            ],
            created_date=_aware(body.createdDate) or sim.clock.now(),
        )
    )
    return _ok()


@router.post("/testdata/subject/remove", dependencies=[PublicDep])
async def remove_subject(body: SubjectRemoveIn, request: Request) -> Response:
    # Removing a VAT group or JST removes its members with it: they are stored inside the subject.
    get_sim(request).store.delete(RegisteredSubject, body.subjectNip)
    return _ok()


class PersonCreateIn(BaseModel):
    nip: Nip
    pesel: Annotated[str, Field(min_length=11, max_length=11, pattern=PESEL_PATTERN)]
    isBailiff: bool
    description: Description
    isDeceased: bool | None = None
    createdDate: datetime | None = None


class PersonRemoveIn(BaseModel):
    nip: Nip


@router.post("/testdata/person", dependencies=[PublicDep])
async def create_person(body: PersonCreateIn, request: Request) -> Response:
    sim = get_sim(request)
    if sim.store.get(RegisteredPerson, body.nip) is not None:
        raise KsefError(30001, f"Osoba dla NIP {body.nip} już istnieje.")
    sim.store.put(
        RegisteredPerson(
            nip=body.nip,
            pesel=body.pesel,
            is_bailiff=body.isBailiff,
            is_deceased=bool(body.isDeceased),
            description=body.description,
            created_date=_aware(body.createdDate) or sim.clock.now(),
        )
    )
    return _ok()


@router.post("/testdata/person/remove", dependencies=[PublicDep])
async def remove_person(body: PersonRemoveIn, request: Request) -> Response:
    sim = get_sim(request)
    person = sim.store.get(RegisteredPerson, body.nip)
    if person is not None:
        # Spec: the system takes away all of the person's permissions.
        pesel = Ident(type="Pesel", value=person.pesel)
        with sim.store.batch():
            revoke_where(sim.store, sim.clock.now(), lambda g: g.authorized.key == pesel.key)
            sim.store.delete(RegisteredPerson, body.nip)
    return _ok()


# -- permissions ------------------------------------------------------------------------------------------------


class TestDataContextIn(BaseModel):
    type: Literal["Nip"]
    value: Annotated[str, Field(min_length=10, max_length=10)]


class TestDataAuthorizedIn(BaseModel):
    type: Literal["Nip", "Pesel", "Fingerprint"]
    value: Annotated[str, Field(min_length=10, max_length=64)]


class TestDataPermissionIn(BaseModel):
    description: Description
    permissionType: Literal[
        "InvoiceRead",
        "InvoiceWrite",
        "Introspection",
        "CredentialsRead",
        "CredentialsManage",
        "EnforcementOperations",
        "SubunitManage",
    ]


class TestDataGrantIn(BaseModel):
    contextIdentifier: TestDataContextIn
    authorizedIdentifier: TestDataAuthorizedIn
    permissions: list[TestDataPermissionIn]


class TestDataRevokeIn(BaseModel):
    contextIdentifier: TestDataContextIn
    authorizedIdentifier: TestDataAuthorizedIn


def _checked(context: TestDataContextIn, authorized: TestDataAuthorizedIn) -> tuple[Ident, Ident]:
    if not identifier_valid("Nip", context.value):
        raise KsefError(21405, "contextIdentifier: nieprawidłowy NIP.")
    if not identifier_valid(authorized.type, authorized.value):
        raise KsefError(21405, f"authorizedIdentifier: nieprawidłowa wartość identyfikatora typu {authorized.type}.")
    return Ident(type="Nip", value=context.value), Ident.normalized(authorized.type, authorized.value)


@router.post("/testdata/permissions", dependencies=[PublicDep])
async def grant_testdata_permissions(body: TestDataGrantIn, request: Request) -> Response:
    sim = get_sim(request)
    context, authorized = _checked(body.contextIdentifier, body.authorizedIdentifier)
    if not body.permissions:
        raise KsefError(21405, "permissions: lista nie może być pusta.")
    with sim.store.batch():
        for permission in body.permissions:
            upsert_grant(
                sim.store,
                PermissionGrant(
                    id=new_grant_id(),
                    kind=GrantKind.TESTDATA,
                    scope=permission.permissionType,
                    context=context,
                    grantor_context=context,
                    author=Ident(type="System"),
                    authorized=authorized,
                    description=permission.description,
                    start_date=sim.clock.now(),
                ),
            )
    return _ok()


@router.post("/testdata/permissions/revoke", dependencies=[PublicDep])
async def revoke_testdata_permissions(body: TestDataRevokeIn, request: Request) -> Response:
    sim = get_sim(request)
    context, authorized = _checked(body.contextIdentifier, body.authorizedIdentifier)
    direct = {GrantKind.TESTDATA, GrantKind.PERSON}
    with sim.store.batch():
        revoke_where(
            sim.store,
            sim.clock.now(),
            lambda g: g.kind in direct and g.context.key == context.key and g.authorized.key == authorized.key,
        )
    return _ok()


# -- attachment opt-in, context blocks ---------------------------------------------------------------------------


class AttachmentGrantIn(BaseModel):
    nip: Nip


class AttachmentRevokeIn(BaseModel):
    nip: Nip
    expectedEndDate: date | None = None


@router.post("/testdata/attachment", dependencies=[PublicDep])
async def grant_attachment(body: AttachmentGrantIn, request: Request) -> Response:
    sim = get_sim(request)
    sim.store.put(AttachmentConsent(nip=body.nip, granted_at=sim.clock.now()))
    return _ok()


@router.post("/testdata/attachment/revoke", dependencies=[PublicDep])
async def revoke_attachment(body: AttachmentRevokeIn, request: Request) -> Response:
    sim = get_sim(request)
    now = sim.clock.now()
    consent = sim.store.get(AttachmentConsent, body.nip)
    if consent is not None:
        # With ``expectedEndDate`` the opt-in lasts until that day begins; a past date ends it now.
        end = datetime.combine(body.expectedEndDate, time(), tzinfo=UTC) if body.expectedEndDate else now
        consent.revoked_date = max(end, now)
        sim.store.put(consent)
    return _ok()


class AuthContextIn(BaseModel):
    value: str
    type: Literal["Nip", "InternalId", "NipVatUe", "PeppolId"]


class ContextBlockIn(BaseModel):
    contextIdentifier: AuthContextIn | None = None


def _block_context(body: ContextBlockIn) -> Ident:
    if body.contextIdentifier is None:
        raise KsefError(21405, "contextIdentifier: pole jest wymagane.")
    identifier = body.contextIdentifier
    if not identifier_valid(identifier.type, identifier.value):
        raise KsefError(21405, f"contextIdentifier: nieprawidłowa wartość identyfikatora typu {identifier.type}.")
    return Ident(type=identifier.type, value=identifier.value)


@router.post("/testdata/context/block", dependencies=[PublicDep])
async def block_context(body: ContextBlockIn, request: Request) -> Response:
    sim = get_sim(request)
    sim.store.put(ContextBlock(context=_block_context(body), blocked_at=sim.clock.now()))
    return _ok()


@router.post("/testdata/context/unblock", dependencies=[PublicDep])
async def unblock_context(body: ContextBlockIn, request: Request) -> Response:
    get_sim(request).store.delete(ContextBlock, _block_context(body).key)
    return _ok()


# -- limits (authenticated; act on the caller's context or subject) ---------------------------------------------


class SessionLimitsIn(BaseModel):
    maxInvoiceSizeInMB: Annotated[int, Field(ge=0, le=5)]
    maxInvoiceWithAttachmentSizeInMB: Annotated[int, Field(ge=0, le=10)]
    maxInvoices: Annotated[int, Field(ge=0, le=100000)]


class SetSessionLimitsIn(BaseModel):
    onlineSession: SessionLimitsIn
    batchSession: SessionLimitsIn


@router.post("/testdata/limits/context/session")
async def set_session_limits(body: SetSessionLimitsIn, request: Request, caller: CallerDep) -> Response:
    limits_domain.set_context_limits(
        get_sim(request).store,
        caller.context,
        {"onlineSession": body.onlineSession.model_dump(), "batchSession": body.batchSession.model_dump()},
    )
    return _ok()


@router.delete("/testdata/limits/context/session")
async def reset_session_limits(request: Request, caller: CallerDep) -> Response:
    limits_domain.reset_context_limits(get_sim(request).store, caller.context)
    return _ok()


class EnrollmentOverrideIn(BaseModel):
    maxEnrollments: Annotated[int, Field(ge=0)] | None = None


class CertificateOverrideIn(BaseModel):
    maxCertificates: Annotated[int, Field(ge=0)] | None = None


class SetSubjectLimitsIn(BaseModel):
    subjectIdentifierType: Literal["Nip", "Pesel", "Fingerprint"] | None = None
    enrollment: EnrollmentOverrideIn | None = None
    certificate: CertificateOverrideIn | None = None


@router.post("/testdata/limits/subject/certificate")
async def set_certificate_limits(body: SetSubjectLimitsIn, request: Request, caller: CallerDep) -> Response:
    limits_domain.set_subject_limits(
        get_sim(request).store,
        caller.subject,
        max_enrollments=body.enrollment.maxEnrollments if body.enrollment else None,
        max_certificates=body.certificate.maxCertificates if body.certificate else None,
    )
    return _ok()


@router.delete("/testdata/limits/subject/certificate")
async def reset_certificate_limits(request: Request, caller: CallerDep) -> Response:
    limits_domain.reset_subject_limits(get_sim(request).store, caller.subject)
    return _ok()


class RateLimitValuesIn(BaseModel):
    # The spec puts no bounds here; a zero would lock the context out of DELETE /testdata/rate-limits too.
    perSecond: Annotated[int, Field(ge=1)]
    perMinute: Annotated[int, Field(ge=1)]
    perHour: Annotated[int, Field(ge=1)]


class RateLimitsOverrideIn(BaseModel):
    onlineSession: RateLimitValuesIn
    batchSession: RateLimitValuesIn
    invoiceSend: RateLimitValuesIn
    invoiceStatus: RateLimitValuesIn
    sessionList: RateLimitValuesIn
    sessionInvoiceList: RateLimitValuesIn
    sessionMisc: RateLimitValuesIn
    invoiceMetadata: RateLimitValuesIn
    invoiceExport: RateLimitValuesIn
    invoiceExportStatus: RateLimitValuesIn
    invoiceDownload: RateLimitValuesIn
    other: RateLimitValuesIn


class SetRateLimitsIn(BaseModel):
    rateLimits: RateLimitsOverrideIn


def _limiter_context(caller: Caller) -> str:
    # Same ``{type}:{value}`` prefix ``deps.access`` puts in front of the IP in the limiter key.
    return f"{caller.context.type}:{caller.context.value}"


@router.post("/testdata/rate-limits")
async def set_rate_limits(body: SetRateLimitsIn, request: Request, caller: CallerDep) -> Response:
    table: dict[Group, Limit] = {}
    for group in API_GROUPS:
        values: RateLimitValuesIn = getattr(body.rateLimits, group.value)
        table[group] = Limit(values.perSecond, values.perMinute, values.perHour)
    get_sim(request).limiter.set_context(_limiter_context(caller), table)
    return _ok()


@router.delete("/testdata/rate-limits")
async def reset_rate_limits(request: Request, caller: CallerDep) -> Response:
    get_sim(request).limiter.clear_context(_limiter_context(caller))
    return _ok()


@router.post("/testdata/rate-limits/production")
async def production_rate_limits(request: Request, caller: CallerDep) -> Response:
    get_sim(request).limiter.set_context(_limiter_context(caller), dict(PRODUCTION_LIMITS))
    return _ok()


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
