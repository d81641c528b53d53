"""Organisations, their clients, members, invitations, API keys and audit log; signing-key operations.

Who may do what is decided in the service (``AuthService._org_access``): another organisation's resources
answer 404, a missing permission in one's own organisation 403.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from auth_svc.api.deps import CurrentPrincipal, OpsPrincipal, Service, ServicePrincipal
from auth_svc.api.schemas import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    AuditEntry,
    Client,
    ClientCreate,
    Invitation,
    Member,
    MemberInvite,
    MemberUpdate,
    Organisation,
    OrganisationCreate,
    OrganisationUpdate,
    RelationStateUpdate,
    Rotation,
    SigningKey,
)

router = APIRouter(tags=["organisations"])
admin_router = APIRouter(tags=["operations"])


@router.post("/organisations", status_code=status.HTTP_201_CREATED, response_model=Organisation)
async def create_organisation(body: OrganisationCreate, principal: CurrentPrincipal, service: Service) -> Any:
    """An accounting office or a client company (platform operators only)."""
    return await service.create_organisation(principal, body.kind, body.name, body.nip)


@router.get("/organisations", response_model=list[Organisation])
async def list_organisations(principal: CurrentPrincipal, service: Service) -> Any:
    return await service.list_organisations(principal)


@router.get("/organisations/{org_id}", response_model=Organisation)
async def get_organisation(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.get_organisation(principal, org_id)


@router.patch("/organisations/{org_id}", response_model=Organisation)
async def rename_organisation(
    org_id: uuid.UUID, body: OrganisationUpdate, principal: CurrentPrincipal, service: Service
) -> Any:
    return await service.rename_organisation(principal, org_id, body.name)


@router.get("/organisations/{org_id}/clients", response_model=list[Client])
async def list_clients(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    """The office's client companies with the state of each relation (accountants: their assigned ones)."""
    return await service.list_clients(principal, org_id)


@router.post("/organisations/{org_id}/clients", status_code=status.HTTP_201_CREATED, response_model=Client)
async def add_client(org_id: uuid.UUID, body: ClientCreate, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.add_client(principal, org_id, body.nip, body.name)


@router.delete("/organisations/{org_id}/clients/{client_id}", response_model=Client)
async def end_client_relation(
    org_id: uuid.UUID, client_id: uuid.UUID, principal: CurrentPrincipal, service: Service
) -> Any:
    """The office stops working for the client: the relation becomes inactive (it is kept for the record)."""
    return await service.set_relation_state(principal, org_id, "inactive", client_id=client_id)


@router.put("/internal/relations", response_model=Client, summary="approval-svc reports an integration state")
async def set_relation_state(body: RelationStateUpdate, caller: ServicePrincipal, service: Service) -> Any:
    return await service.set_relation_state(
        caller, body.office_id, body.state, client_id=body.client_id, client_nip=body.client_nip
    )


@router.get("/organisations/{org_id}/members", response_model=list[Member])
async def list_members(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    """Members with their role, client limits and lock state."""
    return await service.list_members(principal, org_id)


@router.post("/organisations/{org_id}/members", status_code=status.HTTP_201_CREATED, response_model=Invitation)
async def invite_member(org_id: uuid.UUID, body: MemberInvite, principal: CurrentPrincipal, service: Service) -> Any:
    """Invite by e-mail: the link goes out through the ``user.invited`` event; nothing secret is returned."""
    issued = await service.invite(principal, org_id, body.email, body.role, body.client_ids)
    return issued.record


@router.get("/organisations/{org_id}/invitations", response_model=list[Invitation])
async def list_invitations(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.list_invitations(principal, org_id)


@router.delete("/organisations/{org_id}/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_invitation(
    org_id: uuid.UUID, invitation_id: uuid.UUID, principal: CurrentPrincipal, service: Service
) -> Response:
    await service.revoke_invitation(principal, org_id, invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/organisations/{org_id}/members/{user_id}", response_model=Member)
async def update_member(
    org_id: uuid.UUID, user_id: uuid.UUID, body: MemberUpdate, principal: CurrentPrincipal, service: Service
) -> Any:
    return await service.update_member(
        principal,
        org_id,
        user_id,
        role=body.role,
        client_ids=body.client_ids,
        set_clients="client_ids" in body.model_fields_set,
    )


@router.delete("/organisations/{org_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    org_id: uuid.UUID, user_id: uuid.UUID, principal: CurrentPrincipal, service: Service
) -> Response:
    await service.remove_member(principal, org_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/organisations/{org_id}/users/{user_id}/unlock", response_model=Member)
async def unlock_user(org_id: uuid.UUID, user_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.unlock_user(principal, org_id, user_id)


@router.post("/organisations/{org_id}/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_api_key(org_id: uuid.UUID, body: ApiKeyCreate, principal: CurrentPrincipal, service: Service) -> Any:
    """The key is in this response only; store it now."""
    issued = await service.create_api_key(principal, org_id, body.name, body.perms, body.nips, body.expires_at)
    return {**issued.record, "key": issued.secret}


@router.get("/organisations/{org_id}/api-keys", response_model=list[ApiKey])
async def list_api_keys(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.list_api_keys(principal, org_id)


@router.delete("/organisations/{org_id}/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(org_id: uuid.UUID, key_id: str, principal: CurrentPrincipal, service: Service) -> Response:
    await service.revoke_api_key(principal, org_id, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/organisations/{org_id}/audit", response_model=list[AuditEntry])
async def audit_log(
    org_id: uuid.UUID,
    principal: CurrentPrincipal,
    service: Service,
    event: str | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """Security events of the organisation, newest first; page with ``before_id``."""
    return await service.audit_log(principal, org_id, event=event, before_id=before_id, limit=limit)


@admin_router.get("/roles", summary="The role -> permission table")
async def roles(_principal: CurrentPrincipal, service: Service) -> dict[str, list[str]]:
    return service.role_permissions()


@admin_router.get("/admin/signing-keys", response_model=list[SigningKey])
async def signing_keys(principal: OpsPrincipal, service: Service) -> Any:
    return await service.signing_keys(principal)


@admin_router.post("/admin/signing-keys/rotate", response_model=Rotation)
async def rotate_signing_key(principal: OpsPrincipal, service: Service) -> Any:
    """A new key signs from now on; the previous one stays in the JWKS until its last token has expired."""
    return await service.rotate_signing_key(principal)
