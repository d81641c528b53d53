"""What every capability's router shares: the gateway of the request's runtime, the ``ksef.read`` principal, and
the client NIP in a path (its ten digits exactly, with a valid checksum; 422 problem details otherwise)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ksef_gateway.vault.domain import CredentialError
from ksef_gateway.wiring import Gateway
from platform_common.auth import require
from platform_common.auth.dependencies import path_client_nip
from platform_common.auth.principal import Principal
from platform_common.problems import Problem


def gateway(request: Request) -> Gateway:
    return Gateway.of(request.app.state.runtime)


GatewayDep = Annotated[Gateway, Depends(gateway)]
# Reading a client's KSeF data (sync state, invoices, communication log): ksef.read, the closest permission
# auth-svc has for it.
KsefReader = Annotated[Principal, Depends(require("ksef.read", client_nip_param="nip"))]

client_nip = path_client_nip


def actor_of(principal: Principal) -> str:
    """Who changed a credential, as the vault and the delegation records keep it."""
    return f"{principal.ptype}:{principal.id}"[:200]


def credential_problem(error: CredentialError) -> Problem:
    headers = {"Retry-After": str(round(error.retry_after_s))} if error.retry_after_s is not None else None
    return Problem(error.status, error.title, error.detail, code=error.code, headers=headers, **error.extensions)
