"""Who may act on an organisation's resources, without I/O.

A caller acting outside its organisation gets 404 (it must not learn that another tenant's resource exists),
inside it 403 when the permission is missing. Platform operators (``ops``) may read and administer every
organisation, except where ``ops_allowed=False`` (creating API keys, which act on tenant data); what they do
inside a tenant is audited for that tenant (``Tx.audit`` marks it ``operator``).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Row

from auth_svc.errors import forbidden, not_found
from auth_svc.principal import Principal
from platform_common.nip import InvalidNip, normalize_nip
from platform_common.problems import Problem


def check_access(
    org: Row[Any] | None, actor: Principal, org_id: uuid.UUID, perm: str | None, *, ops_allowed: bool = True
) -> Row[Any]:
    if actor.is_ops and org is not None:
        if not ops_allowed:
            raise forbidden()
        return org
    if org is None or actor.org != org_id:
        raise not_found("Organisation")
    if perm is not None and not actor.has(perm):
        raise forbidden()
    return org


def parse_nip(value: str) -> str:
    try:
        return normalize_nip(value)
    except InvalidNip as exc:
        raise Problem(422, "Invalid NIP", f"{exc}.", code="invalid-nip") from None


def org_view(org: Row[Any]) -> dict[str, Any]:
    return {"id": org.id, "kind": org.kind, "name": org.name, "nip": org.nip, "created_at": org.created_at}
