"""Demo accounts for the embedded mode (``make run``). The credentials are public: README lists them.

Idempotent: the runner calls ``ensure_demo_data`` on every start; existing users keep their passwords.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from auth_svc.clock import system_clock
from auth_svc.roles import OrgKind, RelationState, Role
from auth_svc.settings import AuthSettings
from auth_svc.wiring import AuthService
from platform_common.runtime import ServiceRuntime

DEMO_PASSWORD = "demo-password-2026"  # noqa: S105  # published in the README on purpose

OFFICE = ("Biuro Rachunkowe Demo Sp. z o.o.", "5260250216")
CLIENT_ACTIVE = ("Piekarnia Kowalski Sp. z o.o.", "7777777702")
CLIENT_PENDING = ("Hurtownia Nowak S.A.", "1112223303")

OPERATOR = "ops@ksef-hub.example.com"
OFFICE_ADMIN = "admin@biuro.example.com"
ACCOUNTANT = "ksiegowa@biuro.example.com"
CLIENT_OWNER = "wlasciciel@piekarnia.example.com"
CLIENT_MEMBER = "pracownik@piekarnia.example.com"
# The pending client's owner: the consent request's mail goes to this address, and once the office has activated
# the integration this account decides that client's invoices (the whole handshake walkable in the web UI).
PENDING_CLIENT_OWNER = "zarzad@hurtownia-nowak.example.com"


@dataclass(frozen=True)
class DemoAccount:
    email: str
    role: Role
    organisation: tuple[str, str] | None  # (name, NIP) of OFFICE, CLIENT_ACTIVE or CLIENT_PENDING; None: the platform
    clients: tuple[str, ...] | None = None  # an accountant's clients (NIPs); None: every client of the office


# Every demo account, in the order the login page lists them (the web UI's /ui-config reads this too).
ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount(CLIENT_OWNER, Role.CLIENT_OWNER, CLIENT_ACTIVE),
    DemoAccount(CLIENT_MEMBER, Role.CLIENT_MEMBER, CLIENT_ACTIVE),
    DemoAccount(PENDING_CLIENT_OWNER, Role.CLIENT_OWNER, CLIENT_PENDING),
    DemoAccount(OFFICE_ADMIN, Role.OFFICE_ADMIN, OFFICE),
    DemoAccount(ACCOUNTANT, Role.OFFICE_ACCOUNTANT, OFFICE, clients=(CLIENT_ACTIVE[1],)),
    DemoAccount(OPERATOR, Role.OPS, None),
)


@dataclass
class DemoData:
    office_id: uuid.UUID
    client_ids: dict[str, uuid.UUID]
    users: dict[str, uuid.UUID] = field(default_factory=dict)
    password: str = DEMO_PASSWORD


async def ensure_demo_data(
    runtime: ServiceRuntime,
    service: AuthService | None = None,
    *,
    password: str = DEMO_PASSWORD,
    pending_client_owner: bool = True,
) -> DemoData:
    """One office with an active client (and a pending one), and a user for every role; ``password`` is set on the
    accounts created now (the runner takes another one to serve beyond loopback)."""
    if service is None:
        settings = runtime.settings
        assert isinstance(settings, AuthSettings)
        service = AuthService(runtime.db.sessionmaker, runtime.outbox, settings, clock=system_clock)
    office = await service.organisations.ensure(OrgKind.OFFICE, *OFFICE)
    active = await service.organisations.ensure(OrgKind.CLIENT, *CLIENT_ACTIVE)
    pending = await service.organisations.ensure(OrgKind.CLIENT, *CLIENT_PENDING)
    # In a real deployment approval-svc activates a relation after the client's consent.
    await service.relations.ensure(office, active, RelationState.ACTIVE)
    await service.relations.ensure(office, pending, RelationState.PENDING)
    data = DemoData(
        office_id=office, client_ids={CLIENT_ACTIVE[1]: active, CLIENT_PENDING[1]: pending}, password=password
    )
    orgs = {OFFICE: office, CLIENT_ACTIVE: active, CLIENT_PENDING: pending}
    for account in ACCOUNTS:
        if account.email == PENDING_CLIENT_OWNER and not pending_client_owner:
            continue
        org = orgs[account.organisation] if account.organisation is not None else None
        clients = [data.client_ids[nip] for nip in account.clients] if account.clients is not None else None
        data.users[account.email], _ = await service.members.ensure_user(
            account.email, password, org, account.role, client_ids=clients
        )
    await service.keys.current()
    return data
