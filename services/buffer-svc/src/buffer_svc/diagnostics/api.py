"""``GET /clients/{nip}/whoami``: who buffer-svc takes the caller for, when reading that client's buffer.

A diagnostic for ERP integrators checking an API key's scope, and the first endpoint that goes through the
shared verification (``platform_common.auth``): it needs ``buffer.read`` and the client NIP within the
credential's NIPs (404 otherwise, exactly as for a client that does not exist).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from platform_common.auth import Principal, require

router = APIRouter(tags=["diagnostics"])

BufferReader = Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]


class Caller(BaseModel):
    id: str
    ptype: str
    org: str | None
    org_kind: str | None
    roles: list[str]
    perms: list[str]
    nips: list[str]


class WhoAmI(BaseModel):
    client_nip: str
    # Only the buffer permissions are listed: this service speaks for nothing else.
    caller: Caller


@router.get("/clients/{nip}/whoami", response_model=WhoAmI, summary="The caller as seen for this client's buffer")
async def whoami(nip: str, principal: BufferReader) -> WhoAmI:
    buffer_perms = {p for p in principal.perms if p.startswith("buffer.")}
    return WhoAmI(client_nip=nip, caller=Caller(**principal.summary(buffer_perms)))
