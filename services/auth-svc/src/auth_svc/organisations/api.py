"""``/organisations``: accounting offices and client companies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from auth_svc.dependencies import CurrentPrincipal, Service

router = APIRouter(tags=["organisations"])


class OrganisationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["office", "client"]
    name: str = Field(min_length=1, max_length=200)
    nip: str | None = Field(default=None, max_length=20)


class OrganisationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class Organisation(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    nip: str | None
    created_at: datetime


@router.post("/organisations", status_code=status.HTTP_201_CREATED, response_model=Organisation)
async def create_organisation(body: OrganisationCreate, principal: CurrentPrincipal, service: Service) -> Any:
    """An accounting office or a client company (platform operators only)."""
    return await service.organisations.create(principal, body.kind, body.name, body.nip)


@router.get("/organisations", response_model=list[Organisation])
async def list_organisations(principal: CurrentPrincipal, service: Service) -> Any:
    return await service.organisations.list(principal)


@router.get("/organisations/{org_id}", response_model=Organisation)
async def get_organisation(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.organisations.get(principal, org_id)


@router.patch("/organisations/{org_id}", response_model=Organisation)
async def rename_organisation(
    org_id: uuid.UUID, body: OrganisationUpdate, principal: CurrentPrincipal, service: Service
) -> Any:
    return await service.organisations.rename(principal, org_id, body.name)
