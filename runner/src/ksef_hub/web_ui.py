"""The web UI at ``/``: the static bundle ``ui/`` builds (``make setup`` runs ``npm ci`` and ``npm run build``),
served as it is, and the demo accounts for its login page.

The bundle only calls the services' public REST APIs on this origin, as it would behind the distributed mode's
ingress; nothing here reads a service's data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

import auth_svc.demo
from platform_common.auth import public

ASSETS_PATH = "/assets"
CONFIG_PATH = "/ui-config"

# Scripts from this origin only (the bundle and its vendored chart library); API data is rendered as text, never
# as markup. Images and frames may be blob: URLs (QR codes, the invoice preview fetched with the bearer token).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "frame-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_NOT_BUILT = """<!doctype html><html lang="en"><meta charset="utf-8"><title>KSeF Hub</title>
<h1>KSeF Hub</h1><p>The web UI is not built in {where}. Run <code>make setup</code> (it needs Node.js and npm), or
open the APIs directly: <a href="/services">/services</a>.</p>
<p lang="pl">Interfejs WWW nie jest zbudowany. Uruchom <code>make setup</code>.</p></html>"""


def ui_dir() -> Path:
    """KSEF_HUB_UI_DIR, else the repository's ``ui/dist`` (this file is runner/src/ksef_hub/web_ui.py)."""
    configured = os.environ.get("KSEF_HUB_UI_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "ui" / "dist"


def demo_accounts() -> list[dict[str, Any]]:
    return [
        {
            "email": a.email,
            "role": a.role.value,
            "organisation": a.organisation[0] if a.organisation is not None else None,
        }
        for a in auth_svc.demo.ACCOUNTS
    ]


def install_web_ui(app: FastAPI, *, demo: bool, demo_password: str) -> None:
    """``/`` (the bundle's page), ``/assets`` (its files) and ``/ui-config`` (what the login page lists)."""
    root = ui_dir()
    index = root / "index.html"
    router = APIRouter(tags=["web ui"])

    @router.get(
        "/",
        response_model=None,
        include_in_schema=False,
        dependencies=[Depends(public("the web UI's page; it holds no data"))],
    )
    async def page() -> FileResponse | HTMLResponse:
        if not index.is_file():
            return HTMLResponse(_NOT_BUILT.format(where=root), status_code=503, headers=HEADERS)
        return FileResponse(index, media_type="text/html", headers=HEADERS)

    @router.get(
        CONFIG_PATH,
        summary="What the web UI's login page shows: the demo accounts, and their password only if it is the README's",
        dependencies=[Depends(public("the demo accounts are published in the README"))],
    )
    async def config() -> dict[str, Any]:
        published = demo_password == auth_svc.demo.DEMO_PASSWORD
        return {
            "demo": demo,
            "accounts": demo_accounts() if demo else [],
            "password": demo_password if demo and published else None,
        }

    app.include_router(router)
    if root.is_dir():
        app.mount(ASSETS_PATH, StaticFiles(directory=root, check_dir=False), name="web-ui")
