"""An office's client companies, and approval-svc's report of an integration's state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from auth_svc.dependencies import CurrentPrincipal, Service, ServicePrincipal

router = APIRouter(tags=["relations"])


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nip: str = Field(max_length=20)
    name: str = Field(min_length=1, max_length=200)


class Client(BaseModel):
    client_id: uuid.UUID
    name: str
    nip: str | None
    state: Literal["pending", "active", "inactive"]
    created_at: datetime
    updated_at: datetime


class RelationStateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    office_id: uuid.UUID
    client_id: uuid.UUID | None = None
    client_nip: str | None = Field(default=None, max_length=20)
    state: Literal["pending", "active", "inactive"]


@router.get("/organisations/{org_id}/clients", response_model=list[Client])
async def list_clients(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    """The office's client companies with the state of each relation (accountants: their assigned ones)."""
    return await service.relations.list_clients(principal, org_id)


@router.post("/organisations/{org_id}/clients", status_code=status.HTTP_201_CREATED, response_model=Client)
async def add_client(org_id: uuid.UUID, body: ClientCreate, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.relations.add_client(principal, org_id, body.nip, body.name)


@router.delete("/organisations/{org_id}/clients/{client_id}", response_model=Client)
async def end_client_relation(
    org_id: uuid.UUID, client_id: uuid.UUID, principal: CurrentPrincipal, service: Service
) -> Any:
    """The office stops working for the client: the relation becomes inactive (it is kept for the record)."""
    return await service.relations.set_state(principal, org_id, "inactive", client_id=client_id)


@router.put("/internal/relations", response_model=Client, summary="approval-svc reports an integration state")
async def set_relation_state(body: RelationStateUpdate, caller: ServicePrincipal, service: Service) -> Any:
    return await service.relations.set_state(
        caller, body.office_id, body.state, client_id=body.client_id, client_nip=body.client_nip
    )
