"""An organisation's API keys, and introspection of a key (or token) for the other services."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from auth_svc.dependencies import CurrentPrincipal, Service, ServicePrincipal

router = APIRouter(tags=["api-keys"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    perms: list[str] = Field(min_length=1)
    # Limit to these client NIPs (default: every client the organisation may touch at the time of use).
    nips: list[str] | None = None
    expires_at: datetime | None = None


class ApiKey(BaseModel):
    id: str
    name: str
    perms: list[str]
    nips: list[str] | None
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKey):
    # Shown this once; auth-svc keeps only a hash of its secret part.
    key: str


class IntrospectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(default=None, max_length=256)
    token: SecretStr | None = Field(default=None, max_length=8192)


@router.post("/organisations/{org_id}/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_api_key(org_id: uuid.UUID, body: ApiKeyCreate, principal: CurrentPrincipal, service: Service) -> Any:
    """The key is in this response only; store it now."""
    issued = await service.api_keys.create(principal, org_id, body.name, body.perms, body.nips, body.expires_at)
    return {**issued.record, "key": issued.key}


@router.get("/organisations/{org_id}/api-keys", response_model=list[ApiKey])
async def list_api_keys(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.api_keys.list(principal, org_id)


@router.delete("/organisations/{org_id}/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(org_id: uuid.UUID, key_id: str, principal: CurrentPrincipal, service: Service) -> Response:
    await service.api_keys.revoke(principal, org_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/internal/introspect", summary="Is this API key (or access token) active, and for what?")
async def introspect(body: IntrospectRequest, _caller: ServicePrincipal, service: Service) -> dict[str, Any]:
    return await service.api_keys.introspect(
        api_key=body.api_key.get_secret_value() if body.api_key else None,
        token=body.token.get_secret_value() if body.token else None,
    )
