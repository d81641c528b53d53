"""Server-rendered pages (Jinja2, Polish and English, no JavaScript): the client's consent page and the office's
activation-code form.

- The consent page is reached by the one-time link only; the link's token travels in the query on GET (the
  platform's log filter redacts ``token=``) and in the form body on POST, never in a path.
- A signed-in visitor (``Authorization`` header, or the web UI's ``ksef_hub_access`` cookie) is checked against
  the request: the office itself, or a user of another company, is refused.
- CSRF: every form carries a random value that must equal a ``SameSite=Strict`` cookie set with the page
  (double submit). A cross-site POST carries no such cookie, so it is refused before anything changes.
- Pages are never cached or framed and send no referrer (the consent URL holds the token).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from approval_svc.integrations.api import ApprovalDep
from approval_svc.integrations.domain import IntegrationError
from approval_svc.integrations.service import ConsentDecision
from approval_svc.settings import ApprovalSettings
from platform_common.auth import public
from platform_common.auth.authenticator import AuthUnavailable
from platform_common.auth.dependencies import get_authenticator
from platform_common.auth.principal import Principal
from platform_common.auth.rules import AuthRule, RuleKind, mark
from platform_common.auth.tokens import InvalidToken

router = APIRouter(tags=["pages"], include_in_schema=False)

ACCESS_COOKIE = "ksef_hub_access"
CSRF_COOKIE = "approval_csrf"
CSRF_FIELD = "csrf"
Language = Literal["pl", "en"]

_templates = Environment(
    loader=PackageLoader("approval_svc.integrations", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}


class PageError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _language(request: Request, default: str = "pl") -> Language:
    chosen = request.query_params.get("lang")
    if chosen in ("pl", "en"):
        return chosen  # type: ignore[return-value]
    accept = request.headers.get("accept-language", "")
    if not chosen and accept[:2].lower() == "en":
        return "en"
    return "en" if default == "en" else "pl"


def _render(
    request: Request, page: str, language: Language, status: int = 200, *, csrf: str | None = None, **context: Any
) -> HTMLResponse:
    template = _templates.get_template(f"{page}.{language}.html")
    response = HTMLResponse(template.render(language=language, csrf=csrf, **context), status_code=status)
    response.headers.update(_HEADERS)
    response.headers["Content-Language"] = language
    if csrf is not None:
        settings: ApprovalSettings = request.app.state.settings
        base = urlsplit(settings.public_url)
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            httponly=True,
            samesite="strict",
            secure=base.scheme == "https",
            path=base.path or "/",
        )
    return response


def _outcome(request: Request, language: Language, status: int, code: str, message: str) -> HTMLResponse:
    return _render(request, "outcome", language, status, code=code, message=message)


async def _visitor(request: Request) -> Principal | None:
    """The signed-in visitor, if a credential came with the request; a bad one is an error, never ignored."""
    header = request.headers.get("authorization", "")
    credential = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(ACCESS_COOKIE, "")
    if not credential:
        return None
    try:
        return await get_authenticator(request).authenticate(credential)
    except InvalidToken:
        raise PageError(401, "invalid-credential", "Your sign-in has expired or is invalid: sign in again.") from None
    except AuthUnavailable:
        raise PageError(503, "auth-unavailable", "Sign-ins cannot be checked right now; try again shortly.") from None


async def page_principal(request: Request) -> Principal | None:
    return await _visitor(request)


# Authenticated by the page itself (a sign-in page is shown without a credential, not a bare 401).
mark(page_principal, AuthRule(RuleKind.AUTHENTICATED))
PagePrincipal = Annotated[Principal | None, Depends(page_principal)]


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the platform has already bounded its size)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise PageError(415, "unsupported-form", "Send the form as application/x-www-form-urlencoded.")
    try:
        parsed = parse_qs((await request.body()).decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "bad-form", "The form could not be read.") from None
    return {k: v[0] for k, v in parsed.items()}


def _check_csrf(request: Request, form: dict[str, str]) -> None:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, form.get(CSRF_FIELD, "")):
        raise PageError(403, "csrf", "The form expired or came from another site: open the page again.")


def _error(request: Request, language: Language, exc: IntegrationError | PageError) -> HTMLResponse:
    return _outcome(request, language, exc.status, exc.code, str(exc))


@router.get("/consent", response_class=HTMLResponse, dependencies=[Depends(public("the link is the credential"))])
async def consent_page(request: Request, app: ApprovalDep) -> HTMLResponse:
    language = _language(request)
    try:
        visitor = await _visitor(request)
        view = await app.integrations.consent_page(request.query_params.get("token", ""), visitor)
        language = _language(request, view["client_language"])
        token = request.query_params.get("token", "")
        return _render(request, "consent", language, csrf=secrets.token_urlsafe(24), integration=view, token=token)
    except (IntegrationError, PageError) as exc:
        return _error(request, language, exc)


@router.post("/consent", response_class=HTMLResponse, dependencies=[Depends(public("the link is the credential"))])
async def consent_decision(request: Request, app: ApprovalDep) -> HTMLResponse:
    language = _language(request)
    try:
        form = await _form(request)
        language = "en" if form.get("lang") == "en" else "pl"
        _check_csrf(request, form)
        visitor = await _visitor(request)
        decision = form.get("decision")
        if decision not in ("agree", "refuse"):
            raise PageError(422, "decision", "Choose to agree or to refuse.")
        mode = form.get("access_mode") or None
        if mode not in (None, "grant", "token"):
            raise PageError(422, "access-mode", "Choose how the office gets into KSeF: grant or token.")
        view = await app.integrations.decide(
            form.get("token", ""),
            visitor,
            ConsentDecision(agree=decision == "agree", access_mode=mode),  # type: ignore[arg-type]
        )
        return _render(request, "decided", language, integration=view)
    except (IntegrationError, PageError) as exc:
        return _error(request, language, exc)


@router.get("/integrations/{integration_id}/activate", response_class=HTMLResponse)
async def activation_form(
    integration_id: uuid.UUID, request: Request, app: ApprovalDep, principal: PagePrincipal
) -> HTMLResponse:
    language = _language(request)
    try:
        if principal is None:
            raise PageError(401, "sign-in", "Sign in to KSeF Hub as a member of the office, then open this page again.")
        view = await app.integrations.get(principal, integration_id)
        return _render(request, "activate", language, csrf=secrets.token_urlsafe(24), integration=view, error=None)
    except (IntegrationError, PageError) as exc:
        return _error(request, language, exc)


@router.post("/integrations/{integration_id}/activate", response_class=HTMLResponse)
async def activation_submit(
    integration_id: uuid.UUID, request: Request, app: ApprovalDep, principal: PagePrincipal
) -> HTMLResponse:
    language = _language(request)
    try:
        form = await _form(request)
        language = "en" if form.get("lang") == "en" else "pl"
        _check_csrf(request, form)
        if principal is None:
            raise PageError(401, "sign-in", "Sign in to KSeF Hub as a member of the office, then open this page again.")
        try:
            view = await app.integrations.activate(principal, integration_id, form.get("code", "")[:40])
        except IntegrationError as exc:
            if exc.code != "wrong-code":
                raise
            # A wrong code: the same form again with the message and a fresh CSRF value.
            view = await app.integrations.get(principal, integration_id)
            return _render(
                request,
                "activate",
                language,
                exc.status,
                csrf=secrets.token_urlsafe(24),
                integration=view,
                error=str(exc),
            )
        return _render(request, "activated", language, integration=view)
    except (IntegrationError, PageError) as exc:
        return _error(request, language, exc)
