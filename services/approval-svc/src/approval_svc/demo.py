"""Demo data for the embedded mode: the pending demo client has a consent request in flight, and its e-mail waits
in the embedded SMTP catcher (``/notify/dev/mail``). Idempotent: a request is made only when the office has no
integration with the client yet. The runner passes the office and its admin (approval-svc imports no service)."""

from __future__ import annotations

import uuid

from approval_svc.integrations.service import CLIENTS_MANAGE, ConsentRequest, Office
from approval_svc.wiring import Approval
from platform_common.auth.principal import Principal
from platform_common.runtime import ServiceRuntime

DEMO_CLIENT_EMAIL = "zarzad@hurtownia-nowak.example.com"
DEMO_RETURN_EMAIL = "admin@biuro.example.com"


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
