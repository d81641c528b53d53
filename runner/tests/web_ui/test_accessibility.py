"""The web UI for people who use it differently: axe-core finds no serious or critical violation on the main pages,
the login works from the keyboard alone, the client's buffer fits a phone's width, and English is one click away.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from auth_svc.demo import CLIENT_ACTIVE, CLIENT_OWNER, OFFICE_ADMIN, OPERATOR
from platform_common.testing.browser import Pages

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_NAME, NIP = CLIENT_ACTIVE

# Per account, the pages and the heading that says each one has rendered.
PAGES = {
    CLIENT_OWNER: [
        ("#/client/buffer", "Bufor zakupów i kosztów"),
        ("#/client/offices", "Biura rachunkowe i zgody"),
        ("#/client/ledger", "Kto czytał moje faktury"),
        ("#/client/ksef", "Dostęp i synchronizacja KSeF"),
    ],
    OFFICE_ADMIN: [
        ("#/office/clients", "Klienci biura"),
        (f"#/office/client/{NIP}/buffer", f"Klient {NIP}"),
        (f"#/office/client/{NIP}/sales", "Faktury sprzedaży"),
        (f"#/office/client/{NIP}/ksef", "Poświadczenie KSeF"),
        (f"#/office/client/{NIP}/log", "Rejestr komunikacji"),
        ("#/office/webhooks", "Webhooki"),
        ("#/office/api-keys", "Klucze API"),
    ],
    OPERATOR: [("#/ops", "Panel operatora KSeF")],
}


def _summary(violations: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in violations
    )


async def test_main_pages_have_no_serious_or_critical_axe_violations(hub: Any, pages: Pages, artefacts: Path) -> None:
    async with hub() as (app, client):
        await app.state.demo_month  # decisions, the approved month and the late arrival are in place
        base = str(client.base_url).rstrip("/")
        login = await pages.new(axe=True)
        await login.goto(base + "/")
        await expect(login.get_by_role("heading", name="Konta demonstracyjne")).to_be_visible()
        found = {"login": await pages.axe(login)}
        for email, routes in PAGES.items():
            page = await pages.new(axe=True)
            await pages.log_in(page, base, email)
            for route, heading in routes:
                await page.goto(f"{base}/{route}")
                await expect(page.get_by_role("heading", name=heading).first).to_be_visible()
                await expect(page.locator("main .loading")).to_have_count(0)
                found[route] = await pages.axe(page)
                await page.screenshot(path=artefacts / f"{route.strip('#/').replace('/', '_')}.png", full_page=True)
        assert {route: _summary(v) for route, v in found.items() if v} == {}
        assert len(found) == 1 + sum(len(r) for r in PAGES.values())


async def test_login_by_keyboard_alone_reaches_the_clients_buffer(hub: Any, pages: Pages) -> None:
    async with hub() as (app, client):
        await app.state.demo_month  # the current month's invoices are in the buffer
        page = await pages.new()
        await page.goto(str(client.base_url))
        await page.keyboard.press("Tab")  # the skip link comes first
        await expect(page.get_by_role("link", name="Przejdź do treści / Skip to content")).to_be_focused()
        await page.get_by_label("E-mail").focus()
        await page.keyboard.type(CLIENT_OWNER)
        await page.keyboard.press("Tab")
        await expect(page.get_by_label("Hasło")).to_be_focused()
        await page.keyboard.type("demo-password-2026")
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Bufor zakupów i kosztów")).to_be_visible()
        await expect(page.locator("main")).to_be_focused()  # focus follows the navigation
        decision = page.locator("[data-decision]:not([disabled])").first
        await decision.focus()
        await page.keyboard.press("ArrowDown")  # a native select: changed from the keyboard, saved on change
        await expect(page.get_by_role("status")).to_contain_text("Zapisano")


async def test_the_clients_buffer_fits_a_phone_and_speaks_english(hub: Any, pages: Pages, artefacts: Path) -> None:
    async with hub() as (app, client):
        await app.state.demo_month
        page = await pages.new(phone=True)
        await pages.log_in(page, str(client.base_url).rstrip("/"), CLIENT_OWNER)
        await expect(page.locator("tr[data-entry]").first).to_be_visible()
        # One card per invoice, each value labelled by its column, and nothing wider than the screen.
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        header_hidden = await page.evaluate("getComputedStyle(document.querySelector('thead')).position")
        assert header_hidden == "absolute"
        await page.screenshot(path=artefacts / "phone-pl.png", full_page=False)

        await page.get_by_role("button", name="Switch to English").click()
        await expect(page.get_by_role("heading", name="Purchase and cost buffer")).to_be_visible()
        assert await page.evaluate("document.documentElement.lang") == "en"
        await expect(page.locator("[data-decision] option:checked").first).to_have_text(
            re.compile("^(Unverified|Book|Don't book)$")
        )
        await page.screenshot(path=artefacts / "phone-en.png", full_page=False)
