"""Browser tests: Debian's Chromium, headless, driven by Playwright through ``executable_path`` (never a browser
download), and axe-core for accessibility checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

# As the machine's own check runs it: without the background-networking flags Chromium keeps calling Google's
# hosts, which this machine's closed network refuses (and tests must never send traffic beyond loopback).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def chromium_path() -> str:
    path = os.environ.get("KSEF_HUB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError(f"Chromium not found at {path}: `make test` installs Debian's package (scripts/browser.sh)")
    return path


class Pages:
    """Pages in fresh contexts (each its own sessionStorage: another person), and the script errors they raised."""

    def __init__(self, browser: Browser, axe_script: Path) -> None:
        self.browser = browser
        self.axe_script = axe_script
        self.errors: list[str] = []

    async def new(self, *, locale: str = "pl-PL", phone: bool = False, axe: bool = False) -> Page:
        """``axe``: the page's CSP is bypassed so that axe-core can be injected (the bundle's CSP allows this
        origin's scripts only)."""
        viewport = {"width": 390, "height": 844} if phone else {"width": 1366, "height": 900}
        context = await self.browser.new_context(
            locale=locale,
            viewport=viewport,  # type: ignore[arg-type]
            bypass_csp=axe,
            accept_downloads=True,
            is_mobile=phone,
            has_touch=phone,
        )
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.set_default_timeout(30_000)
        return page

    @staticmethod
    async def log_in(page: Page, base: str, email: str) -> None:
        """Sign in as a demo account the way a first-time visitor does: its button on the login page fills the form
        (the password is the README's), then "Zaloguj"; done when the signed-in header shows."""
        await page.goto(base + "/")
        await page.get_by_role("button", name=f"Użyj: {email}").click()
        await page.get_by_role("button", name="Zaloguj").click()
        await expect(page.get_by_role("button", name="Wyloguj")).to_be_visible()

    async def axe(self, page: Page) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now."""
        await page.add_script_tag(path=str(self.axe_script))
        result = await page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
