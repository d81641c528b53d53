"""Request and response bodies. Secrets arrive as ``SecretStr`` so that no repr or log line can show them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


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


class IntrospectRequest(_In):
    api_key: SecretStr | None = Field(default=None, max_length=256)
    token: SecretStr | None = Field(default=None, max_length=8192)


class OrganisationCreate(_In):
    kind: Literal["office", "client"]
    name: str = Field(min_length=1, max_length=200)
    nip: str | None = Field(default=None, max_length=20)


class OrganisationUpdate(_In):
    name: str = Field(min_length=1, max_length=200)


class Organisation(BaseModel):
    id: uuid.UUID
    kind: str
    name: str
    nip: str | None
    created_at: datetime


class ClientCreate(_In):
    nip: str = Field(max_length=20)
    name: str = Field(min_length=1, max_length=200)


class Client(BaseModel):
    client_id: uuid.UUID
    name: str
    nip: str | None
    state: Literal["pending", "active", "inactive"]
    created_at: datetime
    updated_at: datetime


class RelationStateUpdate(_In):
    office_id: uuid.UUID
    client_id: uuid.UUID | None = None
    client_nip: str | None = Field(default=None, max_length=20)
    state: Literal["pending", "active", "inactive"]


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


class ApiKeyCreate(_In):
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
    # Shown this once; auth-svc keeps only a hash of it.
    key: str


class AuditEntry(BaseModel):
    id: int
    occurred_at: datetime
    event: str
    actor_type: str | None
    actor_id: str | None
    subject_id: str | None
    ip: str | None
    details: dict[str, Any]


class SigningKey(BaseModel):
    kid: str
    created_at: datetime
    retired_at: datetime | None
    status: Literal["current", "previous", "withdrawn"]


class Rotation(BaseModel):
    kid: str
    keys: list[SigningKey]
