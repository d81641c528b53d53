"""Demo data for the embedded mode: the active demo client has an active integration (so every service's access
projection opens it), and the pending demo client has a consent request in flight, its e-mail waiting in the
embedded SMTP catcher (``/notify/dev/mail``). Idempotent: nothing is made for a client the office already has an
integration with. The runner passes the office and its admin (approval-svc imports no service)."""

from __future__ import annotations

import uuid

from approval_svc.integrations.service import CLIENTS_MANAGE, ConsentRequest, Office
from approval_svc.wiring import Approval
from platform_common.auth.principal import Principal
from platform_common.runtime import ServiceRuntime

DEMO_CLIENT_EMAIL = "zarzad@hurtownia-nowak.example.com"
DEMO_RETURN_EMAIL = "admin@biuro.example.com"
DEMO_ACTIVE_CLIENT_EMAIL = "wlasciciel@piekarnia.example.com"


async def ensure_demo_active(
    runtime: ServiceRuntime, office: Office, admin_id: uuid.UUID, client_nip: str, client_name: str
) -> bool:
    """The active demo client's integration, recorded as agreed before the platform; whether it was made now."""
    return await Approval.of(runtime).integrations.record_established(
        office, client_nip, client_name, DEMO_ACTIVE_CLIENT_EMAIL, by=str(admin_id)
    )


async def ensure_demo_request(
    runtime: ServiceRuntime, office: Office, admin_id: uuid.UUID, client_nip: str, client_name: str
) -> bool:
    """Ask the demo client for consent unless already asked; whether a request was made now."""
    integrations = Approval.of(runtime).integrations
    admin = Principal(
        id=str(admin_id), ptype="user", org=office.id, org_kind="office", perms=frozenset({CLIENTS_MANAGE})
    )
    if any(i["client_nip"] == client_nip for i in await integrations.list_for(admin, office.id)):
        return False
    await integrations.request(
        admin,
        office,
        ConsentRequest(
            client_nip=client_nip,
            client_email=DEMO_CLIENT_EMAIL,
            return_email=DEMO_RETURN_EMAIL,
            client_name=client_name,
            send_sales=True,
        ),
    )
    return True


async def demo_month_untouched(runtime: ServiceRuntime, client_nip: str, period: str) -> bool:
    """Whether the month was never approved (nor unlocked): the demo approves it once, never over a user's steps."""
    return int((await Approval.of(runtime).months.month(client_nip, period))["revision"]) == 0


async def demo_month_counted(runtime: ServiceRuntime, client_nip: str, period: str, entries: int) -> bool:
    """Whether this service has counted the month's invoices, all decided (buffer-svc's events reached it)."""
    counts = (await Approval.of(runtime).months.month(client_nip, period))["counts"]
    return bool(counts["entries"] >= entries and counts["unverified"] == 0)


async def approve_demo_month(runtime: ServiceRuntime, owner: Principal, client_nip: str, period: str) -> None:
    await Approval.of(runtime).months.approve(owner, client_nip, period)
