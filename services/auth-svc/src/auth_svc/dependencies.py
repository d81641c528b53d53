"""Dependencies of the HTTP layer: the service object and the caller (``Principal``).

auth-svc verifies bearer tokens with its own key store and API keys against its own tables: it is the issuer,
so ``platform_common.auth`` (a JWKS fetch and an introspection call, both to auth-svc itself) would only add
round trips. Its dependencies carry the same rule markers instead (``platform_common.auth.rules.mark``), so
``assert_every_route_has_a_rule`` checks auth-svc like every other service. Rules that depend on the
organisation in the path (404 outside it, 403 inside without the permission) are decided by the capabilities'
services (``organisations.domain.check_access``); the dependencies only say who may get that far.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request

from auth_svc.clock import system_clock
from auth_svc.principal import Principal
from auth_svc.roles import Perm
from auth_svc.sessions.service import RateLimited
from auth_svc.settings import AuthSettings
from auth_svc.wiring import AuthService
from platform_common.auth.api_keys import looks_like_api_key
from platform_common.auth.rules import AuthRule, RuleKind, mark
from platform_common.problems import Problem
from platform_common.runtime import ServiceRuntime


def auth_service(app: FastAPI) -> AuthService:
    """The app's one ``AuthService`` (its key cache lives as long as the app). Tests set ``.clock`` on it."""
    service: AuthService | None = getattr(app.state, "auth_service", None)
    if service is None:
        runtime: ServiceRuntime = app.state.runtime
        settings = app.state.settings
        assert isinstance(settings, AuthSettings)
        service = AuthService(runtime.db.sessionmaker, runtime.outbox, settings, clock=system_clock)
        app.state.auth_service = service
    return service


def get_service(request: Request) -> AuthService:
    return auth_service(request.app)


Service = Annotated[AuthService, Depends(get_service)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": 'Bearer realm="ksef-hub"'})


async def get_principal(request: Request, service: Service) -> Principal:
    """``Authorization: Bearer <JWT or khk_ API key>`` or ``X-API-Key: khk_...``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("Use the Bearer scheme.")
    else:
        credential = (request.headers.get("x-api-key") or "").strip()
        if not credential:
            raise _unauthorized("Authentication required.")
    if looks_like_api_key(credential):
        principal = await service.api_keys.authenticate(credential)
        if principal is None:
            raise _unauthorized("The API key is invalid or revoked.")
        return principal
    try:
        return await service.sessions.verify_access_token(credential)
    except Problem:
        raise _unauthorized("The token is invalid or expired.") from None


mark(get_principal, AuthRule(RuleKind.AUTHENTICATED))

CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_service(principal: CurrentPrincipal) -> Principal:
    """Internal endpoints: only other services of the platform (client-credentials tokens)."""
    if not principal.is_service:
        raise Problem(403, "Forbidden", "Only platform services may call internal endpoints.", code="forbidden")
    return principal


mark(require_service, AuthRule(RuleKind.INTERNAL))

ServicePrincipal = Annotated[Principal, Depends(require_service)]


def require_ops(principal: CurrentPrincipal) -> Principal:
    """Platform operations (signing keys): only the ``ops`` permission, whatever the organisation."""
    if not principal.is_ops:
        raise Problem(403, "Forbidden", "Only platform operators may do this.", code="forbidden")
    return principal


mark(require_ops, AuthRule(RuleKind.PERMISSION, permission=Perm.OPS))

OpsPrincipal = Annotated[Principal, Depends(require_ops)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@contextmanager
def rate_limit_as_problem() -> Iterator[None]:
    try:
        yield
    except RateLimited as exc:
        raise HTTPException(
            429, detail="Too many attempts; try again later.", headers={"Retry-After": str(exc.retry_after_s)}
        ) from None
