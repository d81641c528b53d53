"""How the runner serves the web UI: the page with its CSP, the bundle's files, the login page's demo accounts (the
password only when it is the README's), and a clear page when the bundle was never built."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import auth_svc.demo
from ksef_hub.embedded import create_embedded_app
from ksef_hub.web_ui import ui_dir


async def _get(tmp_path: Path, path: str, **kwargs: object) -> httpx.Response:
    app = create_embedded_app(tmp_path / "data", **kwargs)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000") as c:
        return await c.get(path)


async def test_the_page_and_its_modules_are_served_with_a_same_origin_script_policy(tmp_path: Path) -> None:
    assert (ui_dir() / "index.html").is_file(), "make setup builds ui/dist"
    page = await _get(tmp_path, "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/assets/app/main.js">' in page.text
    module = await _get(tmp_path, "/assets/app/main.js")
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]
    chart = await _get(tmp_path, "/assets/vendor/uPlot.esm.js")
    assert chart.status_code == 200, "the chart library is vendored into the bundle"


async def test_the_login_page_lists_the_demo_accounts_and_the_published_password_only(tmp_path: Path) -> None:
    published = (await _get(tmp_path / "a", "/ui-config")).json()
    assert published["demo"] is True and published["password"] == auth_svc.demo.DEMO_PASSWORD
    emails = {a["email"] for a in published["accounts"]}
    assert {auth_svc.demo.CLIENT_OWNER, auth_svc.demo.OFFICE_ADMIN, auth_svc.demo.OPERATOR} <= emails
    own = (await _get(tmp_path / "b", "/ui-config", demo_password="an operator's own one")).json()
    assert own["accounts"] and own["password"] is None
    off = (await _get(tmp_path / "c", "/ui-config", demo=False)).json()
    assert off == {"demo": False, "accounts": [], "password": None}


async def test_an_unbuilt_bundle_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSEF_HUB_UI_DIR", str(tmp_path / "nowhere"))
    page = await _get(tmp_path, "/")
    assert page.status_code == 503 and "make setup" in page.text
    assert (await _get(tmp_path, "/services")).json()["product"] == "KSeF Hub"
