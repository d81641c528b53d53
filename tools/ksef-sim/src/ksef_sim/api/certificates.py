"""KSeF certificates (REFERENCE.md §17): limits, enrollment from a CSR, status, retrieve, query, revoke.

Enrollment is processed at once: the certificate is issued by the simulator CA when the request is accepted, so
the first status poll already answers 200 with the serial number. Certificates belong to the authenticated
subject, whatever the context.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ksef_sim.clock import iso
from ksef_sim.crypto import b64decode
from ksef_sim.deps import access
from ksef_sim.domain.auth import Ident
from ksef_sim.domain.certificates import (
    CertificateEnrollment,
    CertificateStatus,
    CsrError,
    KsefCertificate,
    SimCa,
    enrollment_data,
    issue,
    limits_for,
    load_csr,
)
from ksef_sim.errors import Forbidden, Gone, KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Caller
from ksef_sim.state import get_sim

router = APIRouter()

# REFERENCE.md §2: enrollment statuses are kept 30 days.
ENROLLMENT_RETENTION = timedelta(days=30)
SERIAL = r"^[0-9A-F]{16}$"
CertificateType = Literal["Authentication", "Offline"]
Caller_ = Annotated[Caller, Depends(access(Group.OTHER))]


class CertificateLimit(BaseModel):
    remaining: int
    limit: int


class CertificateLimitsResponse(BaseModel):
    canRequest: bool
    enrollment: CertificateLimit
    certificate: CertificateLimit


class CertificateEnrollmentDataResponse(BaseModel):
    commonName: str
    countryName: str
    givenName: str | None = None
    surname: str | None = None
    serialNumber: str | None = None
    uniqueIdentifier: str | None = None
    organizationName: str | None = None
    organizationIdentifier: str | None = None


class EnrollCertificateRequest(BaseModel):
    certificateName: str = Field(min_length=5, max_length=100, pattern=r"^[a-zA-Z0-9_\-\ ąćęłńóśźżĄĆĘŁŃÓŚŹŻ]+$")
    certificateType: CertificateType
    csr: str
    validFrom: datetime | None = None


class EnrollCertificateResponse(BaseModel):
    referenceNumber: str
    timestamp: str


class StatusInfo(BaseModel):
    code: int
    description: str
    details: list[str] | None = None


class CertificateEnrollmentStatusResponse(BaseModel):
    requestDate: str
    status: StatusInfo
    certificateSerialNumber: str | None = None


class RetrieveCertificatesRequest(BaseModel):
    certificateSerialNumbers: list[Annotated[str, Field(pattern=SERIAL)]] = Field(min_length=1, max_length=10)


class RetrieveCertificatesListItem(BaseModel):
    certificate: str
    certificateName: str
    certificateSerialNumber: str
    certificateType: str


class RetrieveCertificatesResponse(BaseModel):
    certificates: list[RetrieveCertificatesListItem]


class RevokeCertificateRequest(BaseModel):
    revocationReason: Literal["Unspecified", "Superseded", "KeyCompromise"] | None = None


class QueryCertificatesRequest(BaseModel):
    certificateSerialNumber: str | None = Field(default=None, pattern=SERIAL)
    name: str | None = None
    type: CertificateType | None = None
    status: Literal["Active", "Blocked", "Revoked", "Expired"] | None = None
    expiresAfter: datetime | None = None


class CertificateSubjectIdentifier(BaseModel):
    type: str
    value: str


class CertificateListItem(BaseModel):
    certificateSerialNumber: str
    name: str
    type: str
    commonName: str
    status: str
    subjectIdentifier: CertificateSubjectIdentifier
    validFrom: str
    validTo: str
    lastUseDate: str | None = None
    requestDate: str


class QueryCertificatesResponse(BaseModel):
    certificates: list[CertificateListItem]
    hasMore: bool


# Descriptions of the certificate codes as the spec lists them (errors.DESCRIPTIONS covers the common ones).
CODES = {
    25001: "Brak możliwości pobrania danych do CSR dla wykorzystanego sposobu uwierzytelnienia.",
    25002: "Brak możliwości złożenia wniosku certyfikacyjnego dla wykorzystanego sposobu uwierzytelnienia.",
    25003: "Dane w CSR nie zgadzają się z danymi w użytym wektorze uwierzytelniającym.",
    25004: "Niepoprawny format CSR lub niepoprawny podpis CSR.",
    25005: "Wniosek certyfikacyjny o podanym numerze referencyjnym nie istnieje.",
    25006: "Osiągnięto limit możliwych do złożenia wniosków certyfikacyjnych.",
    25007: "Osiągnięto limit dopuszczalnej liczby posiadanych certyfikatów.",
    25008: "Certyfikat o podanym numerze seryjnym nie istnieje.",
    25009: "Nie można odwołać wskazanego certyfikatu, ponieważ jest już odwołany, zablokowany lub nieważny.",
    25010: "Nieprawidłowy typ lub długość klucza.",
    25011: "Nieprawidłowy algorytm podpisu CSR.",
}


def _error(code: int, *details: str) -> KsefError:
    return KsefError(code, *details, description=CODES[code])


ENROLLMENT_STATUS = {
    100: "Wniosek przyjęty do realizacji",
    200: "Wniosek obsłużony (certyfikat wygenerowany)",
    400: "Wniosek odrzucony",
}


def _not_by_token(caller: Caller, code: int) -> None:
    # Enrollment needs a signature-based authentication (REFERENCE.md §17).
    if caller.auth_method == "Token":
        raise _error(code)


def _owned(request: Request, caller: Caller) -> list[KsefCertificate]:
    subject = Ident.of(caller.subject)
    return [c for c in get_sim(request).store.all(KsefCertificate) if c.subject == subject]


def _enrollments(request: Request, caller: Caller) -> list[CertificateEnrollment]:
    subject = Ident.of(caller.subject)
    return [e for e in get_sim(request).store.all(CertificateEnrollment) if e.subject == subject]


def _limits(request: Request, caller: Caller) -> CertificateLimitsResponse:
    now = get_sim(request).clock.now()
    enrollment_limit, certificate_limit = limits_for(caller.subject)
    active = sum(1 for c in _owned(request, caller) if c.status(now) is CertificateStatus.ACTIVE)
    enrollment = CertificateLimit(
        remaining=max(0, enrollment_limit - len(_enrollments(request, caller))), limit=enrollment_limit
    )
    certificate = CertificateLimit(remaining=max(0, certificate_limit - active), limit=certificate_limit)
    return CertificateLimitsResponse(
        canRequest=enrollment.remaining > 0 and certificate.remaining > 0,
        enrollment=enrollment,
        certificate=certificate,
    )


@router.get("/certificates/limits")
async def certificate_limits(request: Request, caller: Caller_) -> CertificateLimitsResponse:
    return _limits(request, caller)


@router.get("/certificates/enrollments/data", response_model_exclude_none=True)
async def enrollment_data_endpoint(caller: Caller_) -> CertificateEnrollmentDataResponse:
    _not_by_token(caller, 25001)
    return CertificateEnrollmentDataResponse(**enrollment_data(caller.subject))


@router.post("/certificates/enrollments", status_code=202)
async def enroll(request: Request, body: EnrollCertificateRequest, caller: Caller_) -> EnrollCertificateResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    _not_by_token(caller, 25002)
    try:
        der = b64decode(body.csr)
    except ValueError as exc:
        raise KsefError(21405, "csr: wartość nie jest poprawnym Base64.") from exc
    try:
        csr = load_csr(der, caller.subject)
    except CsrError as exc:
        raise _error(exc.code, exc.detail) from exc
    limits = _limits(request, caller)
    if limits.enrollment.remaining <= 0:
        raise _error(25006)
    if limits.certificate.remaining <= 0:
        raise _error(25007)
    ca = SimCa.load_or_create(sim.store, now)
    certificate = issue(
        ca,
        csr,
        name=body.certificateName,
        certificate_type=body.certificateType,
        subject=caller.subject,
        now=now,
        valid_from=body.validFrom,
    )
    enrollment = CertificateEnrollment(
        reference_number=reference_number(RefType.CERTIFICATE_ENROLLMENT, now),
        request_date=now,
        subject=Ident.of(caller.subject),
        status_code=200,
        certificate_serial_number=certificate.serial_number,
    )
    with sim.store.batch():
        sim.store.put(certificate)
        sim.store.put(enrollment)
    return EnrollCertificateResponse(referenceNumber=enrollment.reference_number, timestamp=iso(now))


@router.get("/certificates/enrollments/{referenceNumber}", response_model_exclude_none=True)
async def enrollment_status(
    request: Request,
    referenceNumber: Annotated[str, Path(min_length=36, max_length=36)],
    caller: Caller_,
) -> CertificateEnrollmentStatusResponse:
    sim = get_sim(request)
    enrollment = sim.store.get(CertificateEnrollment, referenceNumber)
    if enrollment is None or enrollment.subject != Ident.of(caller.subject):
        raise _error(25005)
    if sim.clock.now() >= enrollment.request_date + ENROLLMENT_RETENTION:
        raise Gone("Operacja wygasła i nie jest już dostępna.")
    return CertificateEnrollmentStatusResponse(
        requestDate=iso(enrollment.request_date),
        status=StatusInfo(
            code=enrollment.status_code,
            description=ENROLLMENT_STATUS.get(enrollment.status_code, "Nieznany błąd"),
            details=enrollment.status_details or None,
        ),
        certificateSerialNumber=enrollment.certificate_serial_number,
    )


@router.post("/certificates/retrieve")
async def retrieve(
    request: Request, body: RetrieveCertificatesRequest, caller: Caller_
) -> RetrieveCertificatesResponse:
    owned = {c.serial_number: c for c in _owned(request, caller)}
    found = [owned[s] for s in dict.fromkeys(body.certificateSerialNumbers) if s in owned]
    return RetrieveCertificatesResponse(
        certificates=[
            RetrieveCertificatesListItem(
                certificate=c.der_b64,
                certificateName=c.name,
                certificateSerialNumber=c.serial_number,
                certificateType=c.type,
            )
            for c in found
        ]
    )


@router.post("/certificates/{certificateSerialNumber}/revoke", status_code=204)
async def revoke(
    request: Request,
    certificateSerialNumber: Annotated[str, Path(pattern=SERIAL)],
    caller: Caller_,
    body: RevokeCertificateRequest | None = None,
) -> Response:
    sim = get_sim(request)
    now = sim.clock.now()
    if caller.auth_method == "Token":
        raise Forbidden(
            "auth-method-not-allowed",
            "Ta operacja nie jest dostępna dla użytej metody uwierzytelnienia.",
            {"authenticationMethodCategory": caller.auth_method},
        )
    certificate = sim.store.get(KsefCertificate, certificateSerialNumber)
    if certificate is None or certificate.subject != Ident.of(caller.subject):
        raise _error(25008)
    if certificate.status(now) is not CertificateStatus.ACTIVE:
        raise _error(25009)
    certificate.revoked_at = now
    certificate.revocation_reason = (body.revocationReason if body else None) or "Unspecified"
    sim.store.put(certificate)
    return Response(status_code=204)


@router.post("/certificates/query", response_model_exclude_none=True)
async def query(
    request: Request,
    caller: Caller_,
    body: QueryCertificatesRequest | None = None,
    pageSize: Annotated[int, Query(ge=10, le=50)] = 10,
    pageOffset: Annotated[int, Query(ge=0)] = 0,
) -> QueryCertificatesResponse:
    now = get_sim(request).clock.now()
    criteria = body or QueryCertificatesRequest()
    matches = []
    for c in _owned(request, caller):
        status = c.status(now)
        if criteria.certificateSerialNumber and c.serial_number != criteria.certificateSerialNumber:
            continue
        if criteria.name and criteria.name.casefold() not in c.name.casefold():
            continue
        if criteria.type and c.type != criteria.type:
            continue
        if criteria.status and status.value != criteria.status:
            continue
        if criteria.expiresAfter and c.valid_to <= criteria.expiresAfter:
            continue
        matches.append((c, status))
    matches.sort(key=lambda item: (item[0].request_date, item[0].serial_number), reverse=True)
    start = pageOffset * pageSize
    page = matches[start : start + pageSize]
    return QueryCertificatesResponse(
        certificates=[
            CertificateListItem(
                certificateSerialNumber=c.serial_number,
                name=c.name,
                type=c.type,
                commonName=c.common_name,
                status=status.value,
                subjectIdentifier=CertificateSubjectIdentifier(type=c.subject.type, value=c.subject.value),
                validFrom=iso(c.valid_from),
                validTo=iso(c.valid_to),
                lastUseDate=iso(c.last_use_date) if c.last_use_date else None,
                requestDate=iso(c.request_date),
            )
            for c, status in page
        ],
        hasMore=start + pageSize < len(matches),
    )
