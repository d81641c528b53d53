"""Login, tokens, JWKS, introspection, invitations, password reset and the caller's own account.

Public endpoints (login, refresh, logout, client credentials, JWKS, invitation acceptance, password reset)
are authenticated by what their body carries, and say so with ``public(reason)``: the route-rule test fails
for any endpoint that has neither that nor a credential dependency. Everything else needs a bearer credential.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response, status

from auth_svc.api.deps import CurrentPrincipal, Service, ServicePrincipal, client_ip, rate_limit_as_problem
from auth_svc.api.schemas import (
    IntrospectRequest,
    InvitationAccept,
    LoginRequest,
    LogoutRequest,
    Me,
    Membership,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    ServiceTokenResponse,
    TokenResponse,
    TotpCode,
    TotpEnrolment,
)
from auth_svc.principal import Principal
from auth_svc.service import TokenPair
from platform_common.auth import public
from platform_common.problems import Problem

router = APIRouter(tags=["sessions"])


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        token_type=pair.token_type,
    )


@router.post(
    "/login",
    response_model=TokenResponse,
    summary="E-mail + password (+ TOTP code) -> tokens",
    dependencies=[Depends(public("the password (and TOTP code) in the body is the credential"))],
)
async def login(body: LoginRequest, request: Request, service: Service) -> TokenResponse:
    with rate_limit_as_problem():
        pair = await service.login(
            body.email,
            body.password.get_secret_value(),
            otp=body.otp.get_secret_value() if body.otp else None,
            organisation_id=body.organisation_id,
            ip=client_ip(request),
        )
    return _tokens(pair)


@router.post(
    "/token/refresh",
    response_model=TokenResponse,
    summary="Rotate a refresh token",
    dependencies=[Depends(public("the refresh token in the body is the credential"))],
)
async def refresh(body: RefreshRequest, request: Request, service: Service) -> TokenResponse:
    pair = await service.refresh(
        body.refresh_token.get_secret_value(), organisation_id=body.organisation_id, ip=client_ip(request)
    )
    return _tokens(pair)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the refresh token's family",
    dependencies=[Depends(public("the refresh token in the body is the credential"))],
)
async def logout(body: LogoutRequest, service: Service) -> Response:
    await service.logout(body.refresh_token.get_secret_value())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _client_credentials(request: Request) -> dict[str, str]:
    """RFC 6749 4.4: form-encoded (or JSON) body; the client may authenticate with HTTP Basic instead."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, str] = {}
    try:
        if ctype == "application/json":
            parsed = json.loads(raw or b"{}")
            if isinstance(parsed, dict):
                fields = {k: v for k, v in parsed.items() if isinstance(v, str)}
        else:
            fields = {k: v[0] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "Bad request", "Unreadable body.", code="invalid-request", error="invalid_request") from None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise Problem(401, "Unauthorized", code="invalid-client", error="invalid_client") from None
        fields.setdefault("client_id", client_id)
        fields.setdefault("client_secret", secret)
    return fields


@router.post(
    "/oauth/token",
    response_model=ServiceTokenResponse,
    summary="Client credentials -> service token",
    dependencies=[Depends(public("the client id and secret (body or HTTP Basic) are the credential"))],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type", "client_id", "client_secret"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                        },
                    }
                }
            }
        }
    },
)
async def oauth_token(
    fields: Annotated[dict[str, str], Depends(_client_credentials)], service: Service
) -> ServiceTokenResponse:
    if fields.get("grant_type") != "client_credentials":
        raise Problem(400, "Unsupported grant type", code="unsupported-grant-type", error="unsupported_grant_type")
    if not fields.get("client_id") or not fields.get("client_secret"):
        raise Problem(401, "Unauthorized", code="invalid-client", error="invalid_client")
    return ServiceTokenResponse(**await service.service_token(fields["client_id"], fields["client_secret"]))


@router.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify access tokens",
    dependencies=[Depends(public("public keys every verifier fetches; nothing secret"))],
)
async def jwks(response: Response, service: Service) -> dict[str, Any]:
    # Verifiers refetch on an unknown kid, so a short cache is safe across rotations.
    response.headers["Cache-Control"] = "public, max-age=300"
    return await service.keys.jwks()


@router.post("/internal/introspect", summary="Is this API key (or access token) active, and for what?")
async def introspect(body: IntrospectRequest, _caller: ServicePrincipal, service: Service) -> dict[str, Any]:
    return await service.introspect(
        api_key=body.api_key.get_secret_value() if body.api_key else None,
        token=body.token.get_secret_value() if body.token else None,
    )


@router.post(
    "/invitations/accept",
    response_model=Membership,
    summary="Use an invitation link's token",
    dependencies=[Depends(public("the single-use invitation token in the body is the credential"))],
)
async def accept_invitation(body: InvitationAccept, request: Request, service: Service) -> dict[str, Any]:
    return await service.accept_invitation(
        body.token.get_secret_value(),
        body.password.get_secret_value() if body.password else None,
        body.display_name,
        ip=client_ip(request),
    )


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Mail a reset link if the account exists",
    dependencies=[Depends(public("for users who cannot log in; same answer for every e-mail, rate limited"))],
)
async def request_password_reset(body: PasswordResetRequest, request: Request, service: Service) -> dict[str, str]:
    with rate_limit_as_problem():
        await service.request_password_reset(body.email, ip=client_ip(request))
    return {"status": "accepted"}


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with the link",
    dependencies=[Depends(public("the single-use reset token in the body is the credential"))],
)
async def confirm_password_reset(body: PasswordResetConfirm, request: Request, service: Service) -> Response:
    await service.confirm_password_reset(
        body.token.get_secret_value(), body.new_password.get_secret_value(), ip=client_ip(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=Me, summary="The caller's account, memberships and token context")
async def me(principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
    return await service.me(principal)


def _user(principal: CurrentPrincipal) -> Principal:
    if principal.ptype != "user":
        raise Problem(403, "Forbidden", "Only users have an account.", code="forbidden")
    return principal


UserPrincipal = Annotated[Principal, Depends(_user)]


@router.post("/me/totp", response_model=TotpEnrolment, summary="Start TOTP enrolment (the seed is shown once)")
async def totp_enrol(principal: UserPrincipal, service: Service) -> dict[str, str]:
    return await service.totp_enrol(principal)


@router.post("/me/totp/confirm", status_code=status.HTTP_204_NO_CONTENT, summary="Turn TOTP on with a first code")
async def totp_confirm(body: TotpCode, principal: UserPrincipal, service: Service) -> Response:
    await service.totp_confirm(principal, body.code.get_secret_value())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/me/totp/disable", status_code=status.HTTP_204_NO_CONTENT, summary="Turn TOTP off with a current code")
async def totp_disable(body: TotpCode, principal: UserPrincipal, service: Service) -> Response:
    await service.totp_disable(principal, body.code.get_secret_value())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
