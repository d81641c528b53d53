"""Login, refresh, logout and client credentials: public endpoints, authenticated by what their body carries.

They say so with ``public(reason)``: the route-rule test fails for any endpoint that has neither that nor a
credential dependency.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from auth_svc.dependencies import Service, client_ip, rate_limit_as_problem
from auth_svc.sessions.service import TokenPair
from platform_common.auth import public
from platform_common.problems import Problem

router = APIRouter(tags=["sessions"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_In):
    email: str = Field(max_length=320)
    password: SecretStr = Field(max_length=1024)
    otp: SecretStr | None = Field(default=None, max_length=16)
    # The organisation to act in, for users with several memberships (default: the first one).
    organisation_id: uuid.UUID | None = None


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105  # the OAuth token type, not a secret


class ServiceTokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105  # the OAuth token type, not a secret
    expires_in: int


class RefreshRequest(_In):
    refresh_token: SecretStr = Field(max_length=256)
    # Switch the organisation context (the user must be a member of it).
    organisation_id: uuid.UUID | None = None


class LogoutRequest(_In):
    refresh_token: SecretStr = Field(max_length=256)


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
        pair = await service.sessions.login(
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
    pair = await service.sessions.refresh(
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
    await service.sessions.logout(body.refresh_token.get_secret_value())
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
    return ServiceTokenResponse(**await service.sessions.service_token(fields["client_id"], fields["client_secret"]))
