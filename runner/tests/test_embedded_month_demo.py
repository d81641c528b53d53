"""The month demo of the embedded platform, through the public APIs: the active demo client's previous month is
decided by seller and approved by its owner (the buffer locks it, the office is mailed), the current month stays
undecided with suggestions from the approved one, and the invoice sent late for the approved month arrives as a
late arrival told to both sides. A restart on the same data folder decides and approves nothing again.

Served with uvicorn on a loopback port: the vault checks the demo tokens in KSeF over HTTP, through this server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from auth_svc.demo import CLIENT_ACTIVE, CLIENT_OWNER, DEMO_PASSWORD, OFFICE_ADMIN
from ksef_hub.demo import previous_period
from ksef_hub.mail_catcher import MAIL_PATH
from platform_common.testing import wait_until

NAME, NIP = CLIENT_ACTIVE

Hub = Callable[[], AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _entries(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await client.get(
            f"/buffer/clients/{NIP}/purchases",
            params={"limit": 200, **params} | ({"cursor": cursor} if cursor else {}),
            headers=headers,
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def test_the_demo_approves_last_month_and_a_late_invoice_arrives_in_it(hub: Hub) -> None:
    period = previous_period(datetime.now(UTC))
    async with hub() as (app, client):
        await app.state.demo_month
        owner, admin = await _login(client, CLIENT_OWNER), await _login(client, OFFICE_ADMIN)
        month = (await client.get(f"/approval/clients/{NIP}/months/{period}", headers=admin)).json()
        # Nothing is left undecided but the late invoice (it may be in already: the demo fetches it at once).
        assert month["state"] == "approved" and month["revision"] == 1
        assert month["counts"]["unverified"] == month["late_arrivals"] <= 1
        assert month["counts"]["book"] > 0 and month["counts"]["dont_book"] > 0

        approved = [e for e in await _entries(client, owner, period=period) if not e["late_arrival"]]
        assert {e["decision"] for e in approved} == {"book", "dont_book"}
        assert all(e["decided_by_side"] == "client" for e in approved)
        assert any(e["description"] == "Zakup prywatny - nie dotyczy firmy" for e in approved)
        # The buffer follows the approval: the owner's edits of the month are refused.
        locked = await client.patch(
            f"/buffer/clients/{NIP}/purchases/{approved[0]['id']}", json={"description": "x"}, headers=owner
        )
        assert locked.status_code == 409 and locked.json()["type"].endswith("/month-approved")
        # This month is the owner's to decide, with suggestions from the same sellers' approved invoices.
        current = [e for e in await _entries(client, owner) if e["period"] != period]
        assert current and all(e["decision"] == "unverified" for e in current)
        assert any(e["suggestion"] is not None for e in current)

        # The invoice of the approved month sent only now: a late arrival, told to the office and the client.
        async def late() -> list[dict[str, Any]] | None:
            found = [e for e in await _entries(client, owner, period=period) if e["late_arrival"]]
            return found or None

        (arrival,) = await wait_until(late, timeout=60, interval=0.2, what="the late invoice in the buffer")
        assert arrival["decision"] == "unverified" and arrival["issue_date"].startswith(period)

        async def mails() -> list[dict[str, Any]] | None:
            caught = (await client.get(MAIL_PATH)).json()
            subjects = [m for m in caught if period in m["subject"]]
            return subjects if len(subjects) >= 3 else None

        told = await wait_until(mails, timeout=60, interval=0.2, what="the month's mails")
        kinds = sorted(m["subject"].split(" ")[0] for m in told)
        assert len(told) == 3, [m["subject"] for m in told]  # approved (office), late arrival (office, client)
        assert kinds.count("Nowa") == 2, kinds
        flagged = (await client.get(f"/approval/clients/{NIP}/months/{period}", headers=owner)).json()
        assert flagged["late_arrivals"] == 1

    async with hub() as (app, client):
        await app.state.demo_month
        owner = await _login(client, CLIENT_OWNER)
        again = (await client.get(f"/approval/clients/{NIP}/months/{period}", headers=owner)).json()
        assert again["revision"] == 1 and again["late_arrivals"] == 1
        assert len([e for e in await _entries(client, owner, period=period) if e["late_arrival"]]) == 1


async def test_the_office_takes_the_approved_month_as_an_erp_bundle_and_the_client_sees_the_reads(hub: Hub) -> None:
    """The ZIP holds exactly the month's invoices marked to book, each byte for byte as KSeF hashed it; the preview
    and the XML come through the same check; every one of the office's reads is in the client's ledger."""
    period = previous_period(datetime.now(UTC))
    async with hub() as (app, client):
        await app.state.demo_month
        owner, admin = await _login(client, CLIENT_OWNER), await _login(client, OFFICE_ADMIN)
        entries = await _entries(client, admin, period=period)
        to_book = {e["ksef_number"]: e for e in entries if e["decision"] == "book"}
        assert to_book

        response = await client.get(f"/buffer/clients/{NIP}/ready.zip", params={"period": period}, headers=admin)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            files = {name: archive.read(name) for name in archive.namelist() if name.startswith("faktury/")}
            table = archive.read("manifest.csv").decode("utf-8-sig").splitlines()
        assert manifest["period"] == period and manifest["count"] == len(to_book) == len(files) == len(table) - 1
        for line in manifest["invoices"]:
            entry = to_book[line["ksef_number"]]
            content = files[line["file"]]
            assert base64.b64encode(hashlib.sha256(content).digest()).decode() == line["sha256"]
            assert line["sha256"] == entry["invoice_hash"] and line["decision"] == "book"
            assert entry["invoice_number"].encode() in content

        sample = next(iter(to_book.values()))
        xml = await client.get(f"/buffer/clients/{NIP}/purchases/{sample['id']}/xml", headers=admin)
        assert xml.status_code == 200 and xml.headers["x-ksef-invoice-hash"] == sample["invoice_hash"]
        assert xml.content == files[f"faktury/{sample['ksef_number']}.xml"]
        page = await client.get(
            f"/buffer/clients/{NIP}/purchases/{sample['id']}/preview", params={"lang": "en"}, headers=admin
        )
        assert page.status_code == 200 and sample["invoice_number"] in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]

        ledger = await client.get(f"/buffer/clients/{NIP}/access-ledger", headers=owner)
        assert ledger.status_code == 200, ledger.text
        reads = {(line["action"], line["target"]) for line in ledger.json()["items"] if line["org_kind"] == "office"}
        assert ("bundle", period) in reads
        assert ("xml", sample["ksef_number"]) in reads and ("preview", sample["ksef_number"]) in reads
