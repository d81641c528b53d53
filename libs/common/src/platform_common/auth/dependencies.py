"""FastAPI dependencies that authenticate and authorise every request.

    BufferReader = Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]

    @router.get("/clients/{nip}/invoices")
    async def invoices(nip: str, principal: BufferReader): ...

    @router.get("/status", dependencies=[Depends(public("status page for load balancers"))])

Answers: 401 (problem details + ``WWW-Authenticate``) without a valid credential; 404 when the client NIP
named by the request is outside the principal's NIPs or, for an office, when the integration with that client is
not active right now (``ClientAccessGate``: another organisation's client, a revoked one and one that does not
exist look exactly alike); 403 when the principal may see the client but lacks the permission; 503
when auth-svc is needed and unreachable. Credentials: ``Authorization: Bearer <JWT>``,
``Authorization: Bearer khk_...`` (API key) or ``X-API-Key: khk_...``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError

from platform_common.auth.authenticator import Authenticator, AuthUnavailable
from platform_common.auth.principal import Principal
from platform_common.auth.rules import AuthRule, RuleKind, mark
from platform_common.auth.tokens import InvalidToken
from platform_common.nip import InvalidNip, normalize_nip
from platform_common.problems import Problem

log = logging.getLogger(__name__)

REALM = "ksef-hub"

_bearer = HTTPBearer(
    auto_error=False, description="An access JWT from auth-svc (/login, /oauth/token) or an API key (khk_...)."
)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key (khk_...).")


class ClientAccessGate(Protocol):
    """The live answer to "may this office read this client now?" (``platform_common.client_access``)."""

    async def allows(self, office_id: uuid.UUID, client_nip: str) -> bool: ...


def install_authenticator(app: FastAPI, authenticator: Authenticator) -> None:
    app.state.authenticator = authenticator


def install_client_access(app: FastAPI, gate: ClientAccessGate) -> None:
    app.state.client_access = gate


def get_authenticator(request: Request) -> Authenticator:
    authenticator = getattr(request.app.state, "authenticator", None)
    if not isinstance(authenticator, Authenticator):
        raise RuntimeError("app.state.authenticator is missing: build the app with create_service_app")
    return authenticator


def unauthorized(detail: str, *, invalid: bool) -> Problem:
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")
    return Problem(
        401,
        "Unauthorized",
        detail,
        code="invalid-credential" if invalid else "unauthenticated",
        headers={"WWW-Authenticate": challenge},
    )


def forbidden(detail: str, *, permission: str | None = None) -> Problem:
    headers = {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'}
    extensions = {"permission": permission} if permission else {}
    return Problem(403, "Forbidden", detail, code="forbidden", headers=headers, **extensions)


def not_found() -> Problem:
    """The answer for a resource the caller may not know about: the same as for one that does not exist."""
    return Problem(404, "Not Found", "The resource does not exist.", code="not-found")


def path_client_nip(nip: str) -> str:
    """A client NIP named in a path: its ten digits exactly, with a valid checksum (422 problem details otherwise).
    One spelling per client: URLs, cache keys and projection rows must not differ by dashes or a PL prefix."""
    try:
        normalized = normalize_nip(nip)
    except InvalidNip as exc:
        raise Problem(422, "Invalid NIP", f"{nip!r} is not a valid NIP: {exc}.", code="invalid-nip") from None
    if normalized != nip:
        raise Problem(422, "Invalid NIP", "Write the NIP as its ten digits only.", code="invalid-nip")
    return normalized


async def ensure_client(request: Request, principal: Principal, client_nip: str) -> None:
    """404 unless the principal may touch this client now (use it too for NIPs found in a body or a record).

    An office's token does not list its clients; the service's projection of the integrations decides, on every
    request, so a revoked client is closed at once. A service without the projection refuses offices altogether
    (fail closed) rather than trust a wildcard."""
    if not principal.can_access_client(client_nip):
        raise not_found()
    if principal.org_kind != "office" or principal.is_service:
        return
    path_client_nip(client_nip)  # a malformed NIP is the caller's mistake to hear about, whoever they are
    gate = getattr(request.app.state, "client_access", None)
    if gate is None:
        log.error(
            "%s %s: an office asks for a client but this app has no client-access projection",
            request.method,
            request.url.path,
        )
        raise not_found()
    if principal.org is None:
        raise not_found()
    try:
        allowed = await gate.allows(principal.org, client_nip)
    except SQLAlchemyError as exc:
        log.warning(
            "client access cannot be checked on %s %s: %s", request.method, request.url.path, type(exc).__name__
        )
        raise Problem(
            503,
            "Service Unavailable",
            "Access to this client cannot be checked right now; try again shortly.",
            code="access-unavailable",
            headers={"Retry-After": "5"},
        ) from None
    if not allowed:
        raise not_found()


def ensure_permission(principal: Principal, permission: str) -> None:
    if permission not in principal.perms:
        raise forbidden(f"This needs the {permission} permission.", permission=permission)


async def _authenticate(
    request: Request, bearer: HTTPAuthorizationCredentials | None, api_key: str | None
) -> Principal:
    credential = bearer.credentials.strip() if bearer is not None else (api_key or "").strip()
    if not credential:
        raise unauthorized("Authentication required: send a bearer token or an API key.", invalid=False)
    try:
        principal = await get_authenticator(request).authenticate(credential)
    except InvalidToken as exc:
        # The reason goes to the log (never the credential); the caller learns only that it failed.
        log.info("authentication failed on %s %s: %s", request.method, request.url.path, exc)
        raise unauthorized("The credential is invalid, expired or revoked.", invalid=True) from None
    except AuthUnavailable as exc:
        log.warning("authentication unavailable on %s %s: %s", request.method, request.url.path, exc)
        raise Problem(
            503,
            "Service Unavailable",
            "Credentials cannot be checked right now; try again shortly.",
            code="auth-unavailable",
            headers={"Retry-After": "5"},
        ) from None
    request.state.principal = principal
    return principal


async def authenticated(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """Any valid credential; the endpoint decides the rest itself."""
    return await _authenticate(request, bearer, api_key)


mark(authenticated, AuthRule(RuleKind.AUTHENTICATED))

CurrentPrincipal = Annotated[Principal, Depends(authenticated)]


def _client_nip(request: Request, param: str) -> str | None:
    value = request.path_params.get(param)
    if value is None:
        value = request.query_params.get(param)
    return None if value is None else str(value)


def require(permission: str, *, client_nip_param: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """A principal holding ``permission``; with ``client_nip_param``, also allowed the client NIP found in
    that path or query parameter (404 otherwise, checked before the permission)."""
    if not permission or not isinstance(permission, str):
        raise ValueError("require() needs a permission name")

    async def dependency(request: Request, principal: CurrentPrincipal) -> Principal:
        if client_nip_param is not None:
            nip = _client_nip(request, client_nip_param)
            if nip is not None:
                await ensure_client(request, principal, nip)
        ensure_permission(principal, permission)
        return principal

    dependency.__name__ = f"require_{permission.replace('.', '_')}"
    return mark(dependency, AuthRule(RuleKind.PERMISSION, permission=permission, client_nip_param=client_nip_param))


def internal(permission: str | None = None) -> Callable[..., Awaitable[Principal]]:
    """Another service of the platform (a client-credentials token), optionally holding ``permission``."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.is_service:
            raise forbidden("Only platform services may call this endpoint.")
        if permission is not None:
            ensure_permission(principal, permission)
        return principal

    dependency.__name__ = "internal" + (f"_{permission.replace('.', '_')}" if permission else "")
    return mark(dependency, AuthRule(RuleKind.INTERNAL, permission=permission))


def public(reason: str) -> Callable[[], None]:
    """Marks an endpoint as deliberately open (health, JWKS, login ...); ``reason`` is shown by the rule check."""
    if not reason or not reason.strip():
        raise ValueError("public() needs a reason")

    def dependency() -> None:
        return None

    dependency.__name__ = "public"
    return mark(dependency, AuthRule(RuleKind.PUBLIC, reason=reason.strip()))
