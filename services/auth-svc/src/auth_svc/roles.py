"""Roles, the permissions they map to, and which organisation kind each role belongs to.

auth-svc owns this table; every other service only sees the resulting permission strings in tokens.
"""

from __future__ import annotations

from enum import StrEnum


class OrgKind(StrEnum):
    OFFICE = "office"
    CLIENT = "client"


class RelationState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    INACTIVE = "inactive"


class Role(StrEnum):
    OFFICE_ADMIN = "office_admin"
    OFFICE_ACCOUNTANT = "office_accountant"
    CLIENT_OWNER = "client_owner"
    CLIENT_MEMBER = "client_member"
    OPS = "ops"


class Perm(StrEnum):
    KSEF_READ = "ksef.read"
    KSEF_SEND = "ksef.send"
    KSEF_SEND_AUTO = "ksef.send.auto"
    KSEF_CREDENTIALS_MANAGE = "ksef.credentials.manage"
    BUFFER_READ = "buffer.read"
    BUFFER_DECIDE = "buffer.decide"
    BUFFER_IMPORT = "buffer.import"
    MONTH_APPROVE = "month.approve"
    WEBHOOKS_MANAGE = "webhooks.manage"
    USERS_MANAGE = "users.manage"
    CLIENTS_MANAGE = "clients.manage"
    AUDIT_READ = "audit.read"
    OPS = "ops"
    # Only in service tokens: the bearer is another service of the platform.
    INTERNAL = "internal"


USER_PERMISSIONS: frozenset[Perm] = frozenset(Perm) - {Perm.INTERNAL}

ROLE_PERMISSIONS: dict[Role, frozenset[Perm]] = {
    Role.OFFICE_ADMIN: USER_PERMISSIONS - {Perm.OPS},
    # Limited to the clients assigned to the accountant when the membership is restricted.
    Role.OFFICE_ACCOUNTANT: frozenset(
        {Perm.KSEF_READ, Perm.KSEF_SEND, Perm.BUFFER_READ, Perm.BUFFER_DECIDE, Perm.BUFFER_IMPORT}
    ),
    Role.CLIENT_OWNER: frozenset(
        {
            Perm.KSEF_READ,
            Perm.KSEF_SEND,
            Perm.KSEF_SEND_AUTO,
            Perm.KSEF_CREDENTIALS_MANAGE,
            Perm.BUFFER_READ,
            Perm.BUFFER_DECIDE,
            Perm.MONTH_APPROVE,
            Perm.WEBHOOKS_MANAGE,
            Perm.USERS_MANAGE,
            Perm.AUDIT_READ,
        }
    ),
    Role.CLIENT_MEMBER: frozenset({Perm.KSEF_READ, Perm.BUFFER_READ, Perm.BUFFER_DECIDE}),
    # Platform operators: operations plus reading everywhere, never acting on a tenant's behalf.
    Role.OPS: frozenset({Perm.OPS, Perm.KSEF_READ, Perm.BUFFER_READ, Perm.AUDIT_READ}),
}

ROLE_ORG_KIND: dict[Role, OrgKind | None] = {
    Role.OFFICE_ADMIN: OrgKind.OFFICE,
    Role.OFFICE_ACCOUNTANT: OrgKind.OFFICE,
    Role.CLIENT_OWNER: OrgKind.CLIENT,
    Role.CLIENT_MEMBER: OrgKind.CLIENT,
    Role.OPS: None,
}

# The roles that administer their organisation (members, API keys); an organisation keeps at least one.
ADMIN_ROLES: frozenset[Role] = frozenset({Role.OFFICE_ADMIN, Role.CLIENT_OWNER})

ALL_CLIENTS = "*"


def permissions_of(roles: list[Role] | tuple[Role, ...] | frozenset[Role]) -> list[str]:
    perms: set[Perm] = set()
    for role in roles:
        perms |= ROLE_PERMISSIONS[role]
    return sorted(str(p) for p in perms)


def role_fits(role: Role, kind: OrgKind) -> bool:
    return ROLE_ORG_KIND[role] == kind
