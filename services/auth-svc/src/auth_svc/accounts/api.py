"""The caller's own account (``/me``, TOTP) and password reset by mail (public, rate limited)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from auth_svc.dependencies import CurrentPrincipal, Service, client_ip, rate_limit_as_problem
from auth_svc.principal import Principal
from platform_common.auth import public
from platform_common.problems import Problem

router = APIRouter(tags=["accounts"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PasswordResetRequest(_In):
    email: str = Field(max_length=320)


class PasswordResetConfirm(_In):
    token: SecretStr = Field(max_length=256)
    new_password: SecretStr = Field(max_length=1024)


class TotpCode(_In):
    code: SecretStr = Field(max_length=16)


class TotpEnrolment(BaseModel):
    secret: str
    otpauth_uri: str


class MeMembership(BaseModel):
    organisation_id: uuid.UUID | None
    organisation_name: str | None
    kind: str | None
    role: str


class Me(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str | None
    totp_enabled: bool
    memberships: list[MeMembership]
    context: dict[str, Any]


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Mail a reset link if the account exists",
    dependencies=[Depends(public("for users who cannot log in; same answer for every e-mail, rate limited"))],
)
async def request_password_reset(body: PasswordResetRequest, request: Request, service: Service) -> dict[str, str]:
    with rate_limit_as_problem():
        await service.accounts.request_password_reset(body.email, ip=client_ip(request))
    return {"status": "accepted"}


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with the link",
    dependencies=[Depends(public("the single-use reset token in the body is the credential"))],
)
async def confirm_password_reset(body: PasswordResetConfirm, request: Request, service: Service) -> Response:
    await service.accounts.confirm_password_reset(
        body.token.get_secret_value(), body.new_password.get_secret_value(), ip=client_ip(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=Me, summary="The caller's account, memberships and token context")
async def me(principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    return await service.accounts.me(principal)


def _user(principal: CurrentPrincipal) -> Principal:
    if principal.ptype != "user":
        raise Problem(403, "Forbidden", "Only users have an account.", code="forbidden")
    return principal


UserPrincipal = Annotated[Principal, Depends(_user)]


@router.post("/me/totp", response_model=TotpEnrolment, summary="Start TOTP enrolment (the seed is shown once)")
async def totp_enrol(principal: UserPrincipal, service: Service) -> dict[str, str]:
    return await service.accounts.totp_enrol(principal)


@router.post("/me/totp/confirm", status_code=status.HTTP_204_NO_CONTENT, summary="Turn TOTP on with a first code")
async def totp_confirm(body: TotpCode, principal: UserPrincipal, service: Service) -> Response:
    await service.accounts.totp_confirm(principal, body.code.get_secret_value())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/me/totp/disable", status_code=status.HTTP_204_NO_CONTENT, summary="Turn TOTP off with a current code")
async def totp_disable(body: TotpCode, principal: UserPrincipal, service: Service) -> Response:
    await service.accounts.totp_disable(principal, body.code.get_secret_value())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
