"""The client decides a consent request inside the web UI: the company's owner, signed in, agrees without the
e-mailed link; the office's return address gets the activation code, and the link in the earlier mail is spent."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import expect

from approval_svc.demo import DEMO_CLIENT_EMAIL, DEMO_RETURN_EMAIL
from auth_svc.demo import CLIENT_PENDING, DEMO_PASSWORD, OFFICE, OFFICE_ADMIN, PENDING_CLIENT_OWNER
from ksef_hub.onboarding import CODE, CONSENT_LINK, PlatformClient
from platform_common.testing import wait_until
from platform_common.testing.browser import Pages

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _mails(client: httpx.AsyncClient) -> PlatformClient:
    """The runner's mail catcher, read afresh at every look (mail_interval 0)."""
    return PlatformClient(client, DEMO_PASSWORD, mail_interval=0)


async def test_the_owner_agrees_in_the_application_and_the_link_is_spent(
    hub: Any, pages: Pages, artefacts: Path
) -> None:
    async with hub() as (_app, client):
        links: list[dict[str, Any]] = []

        async def request_mailed() -> bool:
            links[:] = await _mails(client).mails(DEMO_CLIENT_EMAIL, CONSENT_LINK)
            return bool(links)

        # The demo's request for the pending client is in flight: its link went to the client by mail.
        await wait_until(request_mailed, timeout=60, what="the demo consent request's mail")
        link = CONSENT_LINK.search(links[0]["text"])
        assert link
        base = str(client.base_url).rstrip("/")
        page = await pages.new()
        await pages.log_in(page, base, PENDING_CLIENT_OWNER)
        await page.goto(f"{base}/#/client/offices")
        row = page.locator(f'tr[data-office="{OFFICE[1]}"]')
        await expect(row.locator("[data-state]")).to_have_attribute("data-state", "requested")
        form = row.get_by_role("form", name=f"Zgoda dla biura {OFFICE[0]}")
        await form.get_by_label("Token KSeF").check()
        await page.screenshot(path=artefacts / "1-request.png", full_page=True)
        await form.get_by_role("button", name="Wyrażam zgodę").click()
        await expect(row.locator("[data-state]")).to_have_attribute("data-state", "consented")
        await page.screenshot(path=artefacts / "2-consented.png", full_page=True)

        codes: list[dict[str, Any]] = []

        async def code_mailed() -> bool:
            codes[:] = await _mails(client).mails(DEMO_RETURN_EMAIL, CODE)
            return bool(codes)

        await wait_until(code_mailed, timeout=60, what="the activation code at the office's return address")
        login = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
        office = {"Authorization": f"Bearer {login.json()['access_token']}"}
        me = (await client.get("/auth/me", headers=office)).json()
        listed = await client.get(f"/approval/offices/{me['context']['org']}/integrations", headers=office)
        (integration,) = [i for i in listed.json() if i["client_nip"] == CLIENT_PENDING[1]]
        assert integration["state"] == "consented" and integration["access_mode"] == "token"
        assert not integration["consented_by"].startswith("link:"), "decided by the signed-in owner, not the link"
        # Decided once: the link of the earlier mail no longer opens the decision.
        address = urlsplit(link.group(0))
        spent = await client.get(f"{address.path}?{address.query}")
        assert spent.status_code == 410, spent.text
