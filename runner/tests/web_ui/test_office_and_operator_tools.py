"""The office's API keys (the key shown once, never again) and the webhook delivery log with replay; the operators'
dashboard showing every service ready, the demo clients' KSeF state and the hourly chart."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from auth_svc.demo import CLIENT_ACTIVE, DEMO_PASSWORD, OFFICE_ADMIN, OPERATOR
from platform_common.testing import wait_until
from platform_common.testing.browser import Pages

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_an_api_key_is_shown_once_and_a_delivery_can_be_replayed(hub: Any, pages: Pages, artefacts: Path) -> None:
    async with hub() as (app, client):
        await app.state.demo_sales  # events for the demo office's webhook subscription
        await app.state.demo_month
        base = str(client.base_url).rstrip("/")
        page = await pages.new()
        await pages.log_in(page, base, OFFICE_ADMIN)

        await page.goto(f"{base}/#/office/api-keys")
        form = page.locator("form.card")
        await form.get_by_label("Nazwa").fill("ERP Optima")
        await form.get_by_label("buffer.read").check()
        await form.get_by_role("button", name="Utwórz klucz").click()
        shown = form.locator("code")
        await expect(shown).to_have_text(re.compile(r"^\S{20,}$"))
        key = await shown.inner_text()
        await page.reload()
        await expect(page.get_by_role("cell", name="ERP Optima")).to_be_visible()
        assert key not in await page.content(), "the key is never shown again"
        listed = await client.get("/buffer/clients/" + CLIENT_ACTIVE[1] + "/whoami", headers={"X-API-Key": key})
        assert listed.status_code == 200, listed.text  # the key shown works

        office = await _bearer(client)  # once: logging in on every poll would meet the login throttle
        (subscription,) = (await client.get("/notify/webhooks/subscriptions", headers=office)).json()

        async def all_delivered() -> bool:
            metrics = await client.get(f"/notify/webhooks/subscriptions/{subscription['id']}/metrics", headers=office)
            return bool(metrics.json()["backlog"] == 0 and metrics.json()["successes"] > 0)

        # The demo's events all delivered: the log's newest page no longer moves under the test.
        await wait_until(all_delivered, timeout=90, what="the demo office's webhooks delivered")
        await page.goto(f"{base}/#/office/webhooks")
        await page.get_by_role("button", name="Dziennik dostarczeń").first.click()
        # A delivered one: a new attempt can then come only from the replay.
        deliveries = page.locator("tr[data-delivery]", has_text="delivered")
        await expect(deliveries.first).to_be_visible()
        first_id = await deliveries.first.get_attribute("data-delivery")
        assert first_id
        before = (await client.get(f"/notify/webhooks/deliveries/{first_id}", headers=office)).json()
        await deliveries.first.get_by_role("button", name="Wyślij ponownie").click()

        async def replayed() -> bool:
            now = (await client.get(f"/notify/webhooks/deliveries/{first_id}", headers=office)).json()
            return bool(now["attempts"] > before["attempts"])

        await wait_until(replayed, timeout=30, what="the replayed delivery's new attempt")
        await page.screenshot(path=artefacts / "webhooks.png", full_page=True)


async def _bearer(client: Any) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_the_operators_dashboard_shows_services_clients_and_the_trend(
    hub: Any, pages: Pages, artefacts: Path
) -> None:
    async with hub() as (app, client):
        await app.state.demo_month
        page = await pages.new()
        await pages.log_in(page, str(client.base_url).rstrip("/"), OPERATOR)
        await expect(page.get_by_role("heading", name="Panel operatora KSeF")).to_be_visible()
        for service in ("auth", "gateway", "buffer", "approval", "notify"):
            await expect(page.locator(f'tr[data-service="{service}"]')).to_contain_text("ready")
        await expect(page.locator('tr[data-service="buffer"]')).to_contain_text("buffer-svc.purchases.invoice-fetched")
        active = page.locator(f'tr[data-nip="{CLIENT_ACTIVE[1]}"]')
        await expect(active).to_contain_text("Subject2: ok")
        await expect(page.locator(".chart canvas")).to_have_count(1)
        # Webhook failures per client come from notify-svc's operators' endpoint, which an office may not read.
        await expect(page.get_by_role("columnheader", name=re.compile("^Webhooki"))).to_be_visible()
        assert (await client.get("/notify/ops/webhooks/clients", headers=await _bearer(client))).status_code == 403
        await page.screenshot(path=artefacts / "ops.png", full_page=True)
