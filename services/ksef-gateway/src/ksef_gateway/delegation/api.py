"""The office certificate (one per office NIP) and each client's delegated access.

``private_key`` and ``private_key_password`` are write-only ``SecretStr``s: no response, error or log carries
them. Who may register an office certificate: someone of an office holding ``ksef.credentials.manage`` (or a
platform service); the certificate itself must authenticate in KSeF as that office NIP, which binds it to the
office whatever the caller claims. Setting a client's delegated access by hand is for operators and tests
(approval-svc's ``integration.changed`` events set it in normal operation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ksef_gateway.delegation.domain import AccessState, DelegatedAccess
from ksef_gateway.delegation.service import Delegation, OfficeCertificateView, UnknownDelegation
from ksef_gateway.deps import actor_of, client_nip, credential_problem
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.vault.domain import CredentialError
from ksef_gateway.wiring import Gateway
from platform_common.auth import require
from platform_common.auth.principal import Principal
from platform_common.problems import Problem

router = APIRouter(tags=["delegation"])

CredentialManager = Annotated[Principal, Depends(require("ksef.credentials.manage"))]
ClientCredentialManager = Annotated[Principal, Depends(require("ksef.credentials.manage", client_nip_param="nip"))]
Operator = Annotated[Principal, Depends(require("ops"))]


def get_delegation(request: Request) -> Delegation:
    return Gateway.of(request.app.state.runtime).delegation


DelegationDep = Annotated[Delegation, Depends(get_delegation)]


def _office_caller(principal: Principal) -> None:
    if not (principal.is_service or principal.org_kind == "office"):
        raise Problem(
            403,
            "Forbidden",
            "Only an accounting office registers its own certificate.",
            code="forbidden",
        )


class OfficeCertificateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    certificate: str = Field(
        min_length=1, max_length=20_000, description="The office's certificate: PEM or base64 DER."
    )
    private_key: SecretStr = Field(
        min_length=1, max_length=20_000, description="Its private key: PEM or base64 DER (write-only)."
    )
    private_key_password: SecretStr | None = Field(
        default=None, max_length=1_000, description="The key's password, used once and never stored (write-only)."
    )
    environment: Environment | None = Field(default=None, description="KSeF environment; the gateway's default.")


class OfficeCertificateOut(BaseModel):
    office_nip: str
    environment: Environment
    subject: str
    serial_number: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    identity: str | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime

    @classmethod
    def of(cls, view: OfficeCertificateView) -> OfficeCertificateOut:
        cert = view.certificate
        return cls(
            office_nip=view.office_nip,
            environment=view.environment,
            subject=cert.subject,
            serial_number=cert.serial_number,
            fingerprint_sha256=cert.fingerprint_sha256,
            not_before=cert.not_before,
            not_after=cert.not_after,
            identity=cert.identity,
            created_by=view.created_by,
            created_at=view.created_at,
            updated_by=view.updated_by,
            updated_at=view.updated_at,
        )


@router.put(
    "/offices/{office_nip}/certificate",
    summary="Register or replace the office's certificate (used in the contexts of clients that granted the office)",
    response_model=OfficeCertificateOut,
    responses={
        200: {"description": "Replaced"},
        201: {"description": "Registered"},
        403: {"description": "The caller is not an accounting office"},
        422: {"description": "Malformed, or KSeF does not accept it in the office's own context"},
        503: {"description": "KSeF could not be reached; nothing was stored (Retry-After)"},
    },
)
async def put_office_certificate(
    office_nip: str,
    body: OfficeCertificateIn,
    principal: CredentialManager,
    delegation: DelegationDep,
    response: Response,
) -> OfficeCertificateOut:
    _office_caller(principal)
    nip = client_nip(office_nip)
    try:
        view, created = await delegation.register_office_certificate(
            nip, body.certificate, body.private_key, body.private_key_password, actor_of(principal), body.environment
        )
    except CredentialError as error:
        raise credential_problem(error) from None
    response.status_code = 201 if created else 200
    return OfficeCertificateOut.of(view)


def _no_certificate(office_nip: str) -> Problem:
    return Problem(
        404, "No office certificate", f"No certificate is registered for office {office_nip}.", code="no-credential"
    )


@router.get(
    "/offices/{office_nip}/certificate",
    summary="The office certificate (never its key)",
    response_model=OfficeCertificateOut,
)
async def get_office_certificate(
    office_nip: str, principal: CredentialManager, delegation: DelegationDep
) -> OfficeCertificateOut:
    _office_caller(principal)
    view = await delegation.office_certificate(client_nip(office_nip))
    if view is None:
        raise _no_certificate(office_nip)
    return OfficeCertificateOut.of(view)


@router.delete("/offices/{office_nip}/certificate", summary="Remove the office certificate", status_code=204)
async def delete_office_certificate(
    office_nip: str, principal: CredentialManager, delegation: DelegationDep
) -> Response:
    _office_caller(principal)
    if not await delegation.remove_office_certificate(client_nip(office_nip)):
        raise _no_certificate(office_nip)
    return Response(status_code=204)


class DelegatedAccessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    office_nip: str = Field(pattern=r"^\d{10}$", description="The office whose certificate the client granted.")
    active: bool = Field(default=True, description="false stops using the office certificate for this client.")
    send_sales: bool = Field(default=False, description="Also needs InvoiceWrite (sending sales invoices).")


class DelegatedAccessOut(BaseModel):
    client_nip: str
    office_nip: str
    mode: str
    active: bool
    send_sales: bool
    revision: int = Field(description="The integration revision last applied (0: set through this API only).")
    state: AccessState
    verified_at: datetime | None
    lost_at: datetime | None
    lost_reason: str | None
    ksef_code: int | None = Field(description="KSeF's refusal: the auth status (415, ...) or exception code (21301).")
    permissions_seen: list[str]
    checked_at: datetime | None
    check_error: str | None = Field(description="The last check KSeF did not answer (outage, 429).")
    next_check_at: datetime | None
    updated_by: str
    updated_at: datetime

    @classmethod
    def of(cls, access: DelegatedAccess) -> DelegatedAccessOut:
        return cls(
            client_nip=access.client_nip,
            office_nip=access.office_nip,
            mode=access.mode,
            active=access.active,
            send_sales=access.send_sales,
            revision=access.revision,
            state=access.state,
            verified_at=access.verified_at,
            lost_at=access.lost_at,
            lost_reason=access.lost_reason,
            ksef_code=access.ksef_code,
            permissions_seen=list(access.permissions),
            checked_at=access.checked_at,
            check_error=access.check_error,
            next_check_at=access.next_check_at,
            updated_by=access.updated_by,
            updated_at=access.updated_at,
        )


def _no_delegation(nip: str) -> Problem:
    return Problem(
        404, "No delegated access", f"Client {nip} is not served by an office's delegated access.", code="no-delegation"
    )


@router.get(
    "/clients/{nip}/delegation",
    summary="The client's delegated access and its last check",
    response_model=DelegatedAccessOut,
)
async def get_delegation_state(
    nip: str, principal: ClientCredentialManager, delegation: DelegationDep
) -> DelegatedAccessOut:
    access = await delegation.access(client_nip(nip))
    if access is None:
        raise _no_delegation(nip)
    return DelegatedAccessOut.of(access)


@router.put(
    "/clients/{nip}/delegation",
    summary="Set the client's delegated access by hand (operators, tests; normally integration.changed does)",
    response_model=DelegatedAccessOut,
)
async def put_delegation(
    nip: str, body: DelegatedAccessIn, principal: Operator, delegation: DelegationDep
) -> DelegatedAccessOut:
    access = await delegation.set_access(
        client_nip(nip),
        client_nip(body.office_nip),
        active=body.active,
        send_sales=body.send_sales,
        actor=actor_of(principal),
    )
    return DelegatedAccessOut.of(access)


@router.delete("/clients/{nip}/delegation", summary="Forget the client's delegated access", status_code=204)
async def delete_delegation(nip: str, principal: Operator, delegation: DelegationDep) -> Response:
    if not await delegation.remove_access(client_nip(nip)):
        raise _no_delegation(nip)
    return Response(status_code=204)


@router.post(
    "/clients/{nip}/delegation/check",
    summary="Check the client's grant in KSeF now (an authentication with the office certificate in its context)",
    response_model=DelegatedAccessOut,
)
async def check_delegation(
    nip: str, principal: ClientCredentialManager, delegation: DelegationDep
) -> DelegatedAccessOut:
    try:
        access = await delegation.check(client_nip(nip))
    except UnknownDelegation:
        raise _no_delegation(nip) from None
    return DelegatedAccessOut.of(access)
