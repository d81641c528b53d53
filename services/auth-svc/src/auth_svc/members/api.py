"""Members, invitations (and accepting one), unlocking, and the role -> permission table."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from auth_svc.dependencies import CurrentPrincipal, Service, client_ip
from auth_svc.roles import ROLE_PERMISSIONS
from platform_common.auth import public

router = APIRouter(tags=["members"])


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemberInvite(_In):
    email: str = Field(max_length=320)
    role: str
    # Office accountants only: the clients they may work on (absent = all the office's clients).
    client_ids: list[uuid.UUID] | None = None


class Invitation(BaseModel):
    id: uuid.UUID
    email: str
    role: str
    expires_at: datetime
    created_at: datetime | None = None


class MemberUpdate(_In):
    role: str | None = None
    # Present and a list: limit an accountant to these clients; present and null: lift the limit.
    client_ids: list[uuid.UUID] | None = None


class Member(BaseModel):
    user_id: uuid.UUID
    email: str
    display_name: str | None
    role: str
    restricted: bool
    client_ids: list[uuid.UUID] | None
    locked: bool
    locked_until: datetime | None
    failed_logins: int
    totp_enabled: bool
    member_since: datetime


class InvitationAccept(_In):
    token: SecretStr = Field(max_length=256)
    password: SecretStr | None = Field(default=None, max_length=1024)
    display_name: str | None = Field(default=None, max_length=200)


class Membership(BaseModel):
    user_id: uuid.UUID
    organisation_id: uuid.UUID
    role: str


@router.get("/organisations/{org_id}/members", response_model=list[Member])
async def list_members(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    """Members with their role, client limits and lock state."""
    return await service.members.list_members(principal, org_id)


@router.post("/organisations/{org_id}/members", status_code=status.HTTP_201_CREATED, response_model=Invitation)
async def invite_member(org_id: uuid.UUID, body: MemberInvite, principal: CurrentPrincipal, service: Service) -> Any:
    """Invite by e-mail: the link goes out sealed in the ``user.invited`` event; nothing secret is returned."""
    return await service.members.invite(principal, org_id, body.email, body.role, body.client_ids)


@router.get("/organisations/{org_id}/invitations", response_model=list[Invitation])
async def list_invitations(org_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.members.list_invitations(principal, org_id)


@router.delete("/organisations/{org_id}/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_invitation(
    org_id: uuid.UUID, invitation_id: uuid.UUID, principal: CurrentPrincipal, service: Service
) -> Response:
    await service.members.revoke_invitation(principal, org_id, invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.patch("/organisations/{org_id}/members/{user_id}", response_model=Member)
async def update_member(
    org_id: uuid.UUID, user_id: uuid.UUID, body: MemberUpdate, principal: CurrentPrincipal, service: Service
) -> Any:
    return await service.members.update_member(
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
    await service.members.remove_member(principal, org_id, user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/organisations/{org_id}/users/{user_id}/unlock", response_model=Member)
async def unlock_user(org_id: uuid.UUID, user_id: uuid.UUID, principal: CurrentPrincipal, service: Service) -> Any:
    return await service.members.unlock_user(principal, org_id, user_id)


@router.post(
    "/invitations/accept",
    response_model=Membership,
    summary="Use an invitation link's token",
    dependencies=[Depends(public("the single-use invitation token in the body is the credential"))],
)
async def accept_invitation(body: InvitationAccept, request: Request, service: Service) -> dict[str, Any]:
    return await service.members.accept_invitation(
        body.token.get_secret_value(),
        body.password.get_secret_value() if body.password else None,
        body.display_name,
        ip=client_ip(request),
    )


@router.get("/roles", summary="The role -> permission table")
async def roles(_principal: CurrentPrincipal) -> dict[str, list[str]]:
    return {str(role): sorted(str(p) for p in perms) for role, perms in ROLE_PERMISSIONS.items()}
