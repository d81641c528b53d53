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
