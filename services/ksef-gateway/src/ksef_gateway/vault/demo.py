"""Demo credentials for the embedded mode (``make run``): the demo clients' KSeF tokens go into the vault through
the same use case as ``PUT /clients/{nip}/credential`` (checked in KSeF, encrypted, then synced).

Idempotent: a context that already holds a usable credential keeps it, so a restart neither asks for a new token
nor replaces one an operator registered. The token itself comes from the caller (the runner issues it in its
simulator); this module never talks to the simulator directly (the gateway must not depend on it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import SecretStr

from ksef_gateway.ksef.environments import Environment
from ksef_gateway.vault.domain import CredentialKind, Scope
from ksef_gateway.vault.service import CredentialSetup, CredentialView, Vault

log = logging.getLogger(__name__)

DEMO_ACTOR = "system:embedded-demo"


@dataclass(frozen=True)
class DemoCredential:
    view: CredentialView
    registered: bool  # False: a usable credential was there already


async def ensure_demo_credential(
    vault: Vault,
    context_nip: str,
    issue_token: Callable[[], Awaitable[str]],
    *,
    environment: Environment = Environment.SIM,
    scope: Scope = Scope.READ_SEND,
) -> DemoCredential:
    """Register a KSeF token for ``context_nip`` unless the vault already holds a usable credential for it.

    ``issue_token`` is only called when a token is needed (KSeF shows a token once, so a stored one cannot be
    read back; an unusable one is replaced by a fresh token). Raises ``CredentialError`` as ``Vault.register``.
    """
    existing = await vault.status(context_nip)
    if existing is not None and existing.status.usable:
        return DemoCredential(existing, registered=False)
    token = SecretStr(await issue_token())
    setup = CredentialSetup(kind=CredentialKind.KSEF_TOKEN, scope=scope, environment=environment, token=token)
    view, _created = await vault.register(context_nip, setup, DEMO_ACTOR)
    log.info("demo KSeF token registered for context %s (%s)", context_nip, environment.value)
    return DemoCredential(view, registered=True)
