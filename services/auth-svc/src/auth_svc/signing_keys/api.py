"""The JWKS every verifier fetches, and the operators' view and rotation of signing keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from auth_svc.dependencies import OpsPrincipal, Service
from platform_common.auth import public

router = APIRouter(tags=["signing-keys"])


class SigningKey(BaseModel):
    kid: str
    created_at: datetime
    retired_at: datetime | None
    status: Literal["current", "previous", "withdrawn"]


class Rotation(BaseModel):
    kid: str
    keys: list[SigningKey]


@router.get(
    "/.well-known/jwks.json",
    summary="Public keys that verify access tokens",
    dependencies=[Depends(public("public keys every verifier fetches; nothing secret"))],
)
async def jwks(response: Response, service: Service) -> dict[str, Any]:
    # Verifiers refetch on an unknown kid, so a short cache is safe across rotations.
    response.headers["Cache-Control"] = "public, max-age=300"
    return await service.keys.jwks()


@router.get("/admin/signing-keys", response_model=list[SigningKey])
async def signing_keys(principal: OpsPrincipal, service: Service) -> Any:
    return await service.signing_keys.overview(principal)


@router.post("/admin/signing-keys/rotate", response_model=Rotation)
async def rotate_signing_key(principal: OpsPrincipal, service: Service) -> Any:
    """A new key signs from now on; the previous one stays in the JWKS until its last token has expired."""
    return await service.signing_keys.rotate(principal)
