"""The integrations' JSON API: the office asks, activates and ends; either side suspends, resumes and revokes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from approval_svc.integrations.domain import IntegrationError, Transition
from approval_svc.integrations.service import ConsentDecision, ConsentRequest
from approval_svc.wiring import Approval
from platform_common.auth import CurrentPrincipal
from platform_common.problems import Problem

router = APIRouter(tags=["integrations"])


def approval(request: Request) -> Approval:
    return Approval.of(request.app.state.runtime)


ApprovalDep = Annotated[Approval, Depends(approval)]


def problem(error: IntegrationError) -> Problem:
    titles = {
        403: "Forbidden",
        404: "Not Found",
        409: "Conflict",
        410: "Gone",
        422: "Unprocessable Content",
        423: "Locked",
        503: "Service Unavailable",
    }
    return Problem(error.status, titles.get(error.status, "Refused"), str(error), code=error.code)


class ConsentRequestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_nip: str = Field(max_length=20)
    client_name: str | None = Field(default=None, max_length=200)
    # A person at the client: an existing user of the client company, or somebody the consent invites.
    client_email: EmailStr
    # Where the activation code goes (the office's own mailbox).
    return_email: EmailStr
    # Reading purchase invoices, decisions and descriptions is always asked; sending sales invoices is optional.
    send_sales: bool = False
    client_language: Literal["pl", "en"] = "pl"
    return_language: Literal["pl", "en"] = "pl"


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=40)


class ConsentDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["agree", "refuse"]
    # How the office gets into KSeF: a grant in KSeF to the office's NIP, or a token the office enters. Asked on agree.
    access_mode: Literal["grant", "token"] | None = None


class Scope(BaseModel):
    read_purchases: bool
    send_sales: bool


class Access(BaseModel):
    status: Literal["verified", "lost"] | None
    checked_at: datetime | None
    reason: str | None


class CodeStatus(BaseModel):
    state: Literal["pending", "expired", "locked"]
    expires_at: datetime | None
    attempts_left: int


class Integration(BaseModel):
    id: uuid.UUID
    office_id: uuid.UUID
    office_nip: str
    office_name: str
    client_nip: str
    client_name: str | None
    client_email: str
    return_email: str
    scope: Scope
    state: Literal["requested", "consented", "active", "suspended", "revoked", "refused", "expired"]
    revision: int
    access_mode: Literal["grant", "token"] | None
    access: Access
    requested_at: datetime
    requested_by: str
    consent_expires_at: datetime | None
    consented_at: datetime | None
    consented_by: str | None
    activated_at: datetime | None
    activated_by: str | None
    ended_at: datetime | None
    ended_by: str | None
    suspended_by: Literal["office", "client"] | None
    activation_code: CodeStatus | None
    updated_at: datetime


def _credential_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-api-key")}


@router.post(
    "/offices/{office_id}/integrations",
    status_code=status.HTTP_201_CREATED,
    response_model=Integration,
    summary="Ask a client company for consent (an e-mail with a one-time link goes to the client)",
)
async def request_consent(
    office_id: uuid.UUID, body: ConsentRequestIn, request: Request, principal: CurrentPrincipal, app: ApprovalDep
) -> Any:
    try:
        if principal.org != office_id:
            raise IntegrationError("not-found", "The office does not exist.", status=404)
        office = await app.offices.office(office_id, _credential_headers(request))
        return await app.integrations.request(principal, office, ConsentRequest(**body.model_dump()))
    except IntegrationError as exc:
        raise problem(exc) from None


@router.get("/offices/{office_id}/integrations", response_model=list[Integration])
async def list_integrations(office_id: uuid.UUID, principal: CurrentPrincipal, app: ApprovalDep) -> Any:
    try:
        return await app.integrations.list_for(principal, office_id)
    except IntegrationError as exc:
        raise problem(exc) from None


@router.get("/client/integrations", response_model=list[Integration], summary="A client company's offices")
async def list_client_integrations(principal: CurrentPrincipal, app: ApprovalDep) -> Any:
    try:
        return await app.integrations.list_of_client(principal)
    except IntegrationError as exc:
        raise problem(exc) from None


@router.get("/integrations/{integration_id}", response_model=Integration)
async def get_integration(integration_id: uuid.UUID, principal: CurrentPrincipal, app: ApprovalDep) -> Any:
    try:
        return await app.integrations.get(principal, integration_id)
    except IntegrationError as exc:
        raise problem(exc) from None


@router.post(
    "/integrations/{integration_id}/activation",
    response_model=Integration,
    summary="Enter the activation code the client's consent sent to the return address",
)
async def activate(integration_id: uuid.UUID, body: ActivationIn, principal: CurrentPrincipal, app: ApprovalDep) -> Any:
    try:
        return await app.integrations.activate(principal, integration_id, body.code)
    except IntegrationError as exc:
        raise problem(exc) from None


@router.post(
    "/integrations/{integration_id}/renewal",
    response_model=Integration,
    summary="Send a new consent link (a refused, expired, locked or revoked request starts again)",
)
async def renew(integration_id: uuid.UUID, principal: CurrentPrincipal, app: ApprovalDep) -> Any:
    try:
        return await app.integrations.renew(principal, integration_id)
    except IntegrationError as exc:
        raise problem(exc) from None


# Registered before the transitions' route, whose path would otherwise take "consent" and refuse it as a change.
@router.post(
    "/integrations/{integration_id}/consent",
    response_model=Integration,
    summary="The client company's owner, signed in, agrees or refuses (the e-mailed link is spent with it)",
)
async def decide(
    integration_id: uuid.UUID, body: ConsentDecisionIn, principal: CurrentPrincipal, app: ApprovalDep
) -> Any:
    try:
        decision = ConsentDecision(agree=body.decision == "agree", access_mode=body.access_mode)
        return await app.integrations.decide_signed_in(principal, integration_id, decision)
    except IntegrationError as exc:
        raise problem(exc) from None


_TRANSITIONS = {"suspension": Transition.SUSPEND, "resumption": Transition.RESUME, "revocation": Transition.REVOKE}


@router.post(
    "/integrations/{integration_id}/{change}",
    response_model=Integration,
    summary="Suspend, resume or revoke (either side; a suspension is lifted by the side that imposed it)",
)
async def change_state(
    integration_id: uuid.UUID,
    change: Literal["suspension", "resumption", "revocation"],
    principal: CurrentPrincipal,
    app: ApprovalDep,
) -> Any:
    try:
        return await app.integrations.change_state(principal, integration_id, _TRANSITIONS[change])
    except IntegrationError as exc:
        raise problem(exc) from None
