"""The whole loop in a real browser, as the issue tells it: the office asks for consent in the web UI → the client
consents through the link the SMTP catcher holds → the office enters the activation code → the client's invoices
appear → the client decides one, takes a suggestion for the next, decides the rest in bulk and approves the month →
the office downloads the ERP bundle and imports through the booking gate. Screenshots are kept as artefacts.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import expect

from approval_svc.demo import DEMO_CLIENT_EMAIL, DEMO_RETURN_EMAIL
from auth_svc.demo import CLIENT_PENDING, DEMO_PASSWORD, OFFICE_ADMIN, PENDING_CLIENT_OWNER
from ksef_hub.onboarding import CODE, CONSENT_LINK, PlatformClient
from platform_common.testing import wait_until
from platform_common.testing.browser import Pages

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _mails(client: httpx.AsyncClient) -> PlatformClient:
    """The runner's mail catcher, read afresh at every look (mail_interval 0)."""
    return PlatformClient(client, DEMO_PASSWORD, mail_interval=0)


CLIENT_NAME, CLIENT_NIP = CLIENT_PENDING


async def _bearer(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _next_mail(client: httpx.AsyncClient, recipient: str, pattern: re.Pattern[str], seen: int) -> dict[str, Any]:
    """The newest mail to ``recipient`` matching ``pattern`` once there are more than ``seen`` of them."""
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found[:] = await _mails(client).mails(recipient, pattern)
        return len(found) > seen

    await wait_until(arrived, timeout=60, what=f"a new mail to {recipient}")
    return found[0]  # the catcher lists newest first


async def _first_sync_done(client: httpx.AsyncClient, office: dict[str, str]) -> int:
    """Waits for the client's first sync to finish, buffer-svc to hold every invoice it fetched and approval-svc's
    months (counted from buffer-svc's events, a moment later) to count them all."""
    stored: list[int] = []

    async def done() -> bool:
        sync = (await client.get(f"/gateway/clients/{CLIENT_NIP}/sync", headers=office)).json()
        months = await client.get(f"/buffer/clients/{CLIENT_NIP}/months", headers=office)
        if months.status_code != 200 or not sync.get("subjects"):
            return False
        approval = await client.get(f"/approval/clients/{CLIENT_NIP}/months", headers=office)
        in_buffer = sum(m["entries"] for m in months.json())
        counted = sum(m["counts"]["entries"] for m in approval.json()) if approval.status_code == 200 else -1
        finished = all(s["backfilled"] and not s["running"] for s in sync["subjects"])
        stored[:] = [sync["invoices_stored"]]
        return finished and sync["invoices_stored"] > 0 and in_buffer == counted == sync["invoices_stored"]

    await wait_until(done, timeout=120, what="the first sync of the new client, all in the buffer")
    return stored[0]


async def test_office_and_client_walk_the_whole_loop_in_the_browser(hub: Any, pages: Pages, artefacts: Path) -> None:
    async with hub() as (app, client):
        await app.state.demo_ksef  # the demo clients' KSeF tokens are in the vault
        base = str(client.base_url).rstrip("/")

        # 1. The office asks the client for consent through the form.
        office_page = await pages.new()
        await pages.log_in(office_page, base, OFFICE_ADMIN)
        await expect(office_page.get_by_role("heading", name="Klienci biura")).to_be_visible()
        seen = len(await _mails(client).mails(DEMO_CLIENT_EMAIL, CONSENT_LINK))
        form = office_page.get_by_role("form", name="Poproś klienta o zgodę")
        await form.get_by_label("NIP klienta").fill(CLIENT_NIP)
        await form.get_by_label("Nazwa firmy klienta").fill(CLIENT_NAME)
        await form.get_by_label("E-mail klienta (tu trafi link)").fill(DEMO_CLIENT_EMAIL)
        await expect(form.get_by_label("E-mail zwrotny biura (tu trafi kod aktywacyjny)")).to_have_value(OFFICE_ADMIN)
        await form.get_by_role("button", name="Wyślij prośbę o zgodę").click()
        row = office_page.locator(f'tr[data-client="{CLIENT_NIP}"]')
        await expect(row.locator("[data-state]")).to_have_attribute("data-state", "requested")
        await office_page.screenshot(path=artefacts / "1-office-requested.png", full_page=True)

        # 2. The client opens the link from the mail (another person, another browser context) and consents.
        request_mail = await _next_mail(client, DEMO_CLIENT_EMAIL, CONSENT_LINK, seen)
        link = CONSENT_LINK.search(request_mail["text"])
        assert link
        consent_page = await pages.new()
        seen_codes = len(await _mails(client).mails(DEMO_RETURN_EMAIL, CODE))
        await consent_page.goto(link.group(0))
        await consent_page.get_by_label(re.compile("Token KSeF")).check()
        await consent_page.get_by_role("button", name="Wyrażam zgodę").click()
        await expect(consent_page.get_by_role("heading", level=1)).to_have_text("Dziękujemy za zgodę")
        await consent_page.screenshot(path=artefacts / "2-client-consented.png", full_page=True)

        # 3. The code reaches the office's return address; the office enters it in the web UI.
        code_mail = await _next_mail(client, DEMO_RETURN_EMAIL, CODE, seen_codes)
        code = CODE.search(code_mail["text"])
        assert code
        await office_page.reload()
        await expect(row.locator("[data-state]")).to_have_attribute("data-state", "consented")
        await row.locator(f'[data-code="{CLIENT_NIP}"]').fill(code.group(1))
        await row.get_by_role("button", name="Aktywuj").click()
        await expect(row.locator("[data-state]")).to_have_attribute("data-state", "active")
        # Requested and activated by the office's admin, consented by the link's holder: dates and actors.
        await expect(row).to_contain_text(f"przez {OFFICE_ADMIN}")
        await expect(row).to_contain_text(f"przez link:{DEMO_CLIENT_EMAIL}")
        await office_page.screenshot(path=artefacts / "3-office-active.png", full_page=True)

        # 4. The invoices appear: in the office's view of the client.
        office = await _bearer(client, OFFICE_ADMIN)
        total = await _first_sync_done(client, office)
        await row.get_by_role("link", name=re.compile("Otwórz")).click()
        await expect(office_page.locator("tr[data-entry]").first).to_be_visible()

        # 5. The client decides: one invoice by hand, the same seller's next one by the suggestion, the rest in bulk.
        client_page = await pages.new()
        await pages.log_in(client_page, base, PENDING_CLIENT_OWNER)
        await expect(client_page.get_by_role("heading", name="Bufor zakupów i kosztów")).to_be_visible()
        period = await client_page.get_by_label("Miesiąc").input_value()
        owner = await _bearer(client, PENDING_CLIENT_OWNER)
        listed = await client.get(
            f"/buffer/clients/{CLIENT_NIP}/purchases", params={"period": period, "limit": 200}, headers=owner
        )
        entries = listed.json()["items"]
        assert entries and listed.json()["next_cursor"] is None
        by_seller = Counter(e["seller"]["nip"] for e in entries)
        seller = next(nip for nip, n in by_seller.most_common() if n >= 2)
        first, second = [e for e in entries if e["seller"]["nip"] == seller][:2]
        other = next(e for e in entries if e["seller"]["nip"] != seller)

        first_row = client_page.locator(f'tr[data-entry="{first["id"]}"]')
        await first_row.locator("[data-description]").fill("Towar handlowy")
        await first_row.locator("[data-description]").press("Tab")  # a change saves it
        await expect(client_page.get_by_role("status")).to_contain_text(f"Zapisano: {first['invoice_number']}")
        # The status line names what buffer-svc answered: the save is over, not only the select changed.
        status = client_page.get_by_role("status")
        await first_row.locator("[data-decision]").select_option("book")
        await expect(status).to_contain_text(f"{first['invoice_number']} — Księguj")
        other_row = client_page.locator(f'tr[data-entry="{other["id"]}"]')
        await other_row.locator("[data-decision]").select_option("dont_book")
        await expect(status).to_contain_text(f"{other['invoice_number']} — Nie księguj")

        await client_page.reload()
        second_row = client_page.locator(f'tr[data-entry="{second["id"]}"]')
        suggestion = second_row.locator(f'[data-suggestion="{second["id"]}"]')
        await expect(suggestion).to_contain_text("Sugestia: Księguj")
        await expect(suggestion).to_contain_text("Towar handlowy")
        await expect(suggestion).to_contain_text(first["invoice_number"])
        await expect(second_row.locator("[data-decision]")).to_have_value("unverified")  # never applied silently
        await client_page.screenshot(path=artefacts / "5-client-suggestion.png", full_page=True)
        await suggestion.get_by_role("button", name=re.compile("Użyj sugestii")).click()
        await expect(status).to_contain_text(f"{second['invoice_number']} — Księguj")
        await expect(second_row.locator("[data-decision]")).to_have_value("book")
        await expect(second_row.locator("[data-description]")).to_have_value("Towar handlowy")

        filters = client_page.get_by_role("search")
        await filters.get_by_label("Decyzja").select_option("unverified")
        await filters.get_by_role("button", name="Filtruj").click()
        await expect(client_page.locator("tr[data-entry]")).to_have_count(len(entries) - 3)
        await client_page.get_by_label("Zaznacz wszystkie widoczne").first.check()
        await client_page.locator('[data-bulk="book"]').click()
        await expect(client_page.locator("tr[data-entry]")).to_have_count(0)
        approve = client_page.get_by_role("button", name="Zatwierdź miesiąc")
        await expect(approve).to_be_enabled(timeout=20_000)  # once approval-svc has counted the last decision
        await approve.click()
        await expect(client_page.get_by_role("button", name="Odblokuj miesiąc")).to_be_visible()
        await expect(client_page.locator(".month-state")).to_contain_text("zatwierdzony")
        await client_page.screenshot(path=artefacts / "6-client-approved.png", full_page=True)

        # 6. The office downloads the bundle of what is ready to book, then imports through the booking gate.
        await office_page.goto(f"{base}/#/office/client/{CLIENT_NIP}/buffer")
        search = office_page.get_by_role("search")
        await search.get_by_label("Miesiąc").select_option(period)
        await search.get_by_role("button", name="Filtruj").click()
        await expect(office_page.locator("tr[data-entry]")).to_have_count(len(entries))
        async with office_page.expect_download() as downloading:
            await office_page.locator('[data-download="zip"]').click()
        bundle = await downloading.value
        path = artefacts / "bundle.zip"
        await bundle.save_as(path)
        # The progress the bundle showed ends with the size that arrived.
        await expect(office_page.locator('[data-progress="zip"]')).to_contain_text("Paczka pobrana")
        shown = await office_page.locator('[data-progress="zip"]').inner_text()
        shown_kb = float(re.sub(r"[^0-9,.]", "", shown.split("(")[1]).replace(",", "."))
        assert abs(shown_kb - path.stat().st_size / 1024) <= 0.051, shown  # one decimal, rounded
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
            names = archive.namelist()
            manifest_name = next(n for n in names if n.endswith(".json"))
            manifest = json.loads(archive.read(manifest_name))
        xml_files = [n for n in names if n.endswith(".xml")]
        assert len(xml_files) == len(entries) - 1  # everything but the 'Nie księguj' one
        assert other["ksef_number"] not in json.dumps(manifest)
        assert first["ksef_number"] in json.dumps(manifest) and "Towar handlowy" in json.dumps(manifest)

        await office_page.get_by_label("Zaznacz wszystkie widoczne").first.check()
        await office_page.get_by_role("button", name="Importuj zaznaczone (realizacja)").click()
        report = office_page.locator(".gate-report")
        await expect(report.locator('tr[data-result="imported"]')).to_have_count(len(entries) - 1)
        refused = report.locator('tr[data-result="refused"]')
        await expect(refused).to_have_count(1)
        await expect(refused).to_contain_text(other["ksef_number"])
        await expect(refused).to_contain_text("Nie księguj")
        await office_page.screenshot(path=artefacts / "7-office-gate-report.png", full_page=True)
        assert total >= len(entries)
