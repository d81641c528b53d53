"""The client's auto-send rules against the simulator: a held series waits, is sent by hand or by a backfill of its
month (on the backfill day, once), and only ``ksef.send.auto`` may change the rules."""

from __future__ import annotations

from datetime import date

from integration.sales.world import Hub
from ksef_gateway.ksef.crypto import sha256_b64


async def test_held_invoices_wait_until_sent_by_hand_or_by_the_monthly_backfill(hub: Hub) -> None:
    path = f"/clients/{hub.nip}/sales-auto-send"
    default = await hub.api.get(path, headers=hub.reader)
    assert default.status_code == 200 and default.json()["rules"]["default"] == "send", default.text
    rules: dict[str, object] = {"series": [{"pattern": "PRO/*", "action": "hold"}]}
    denied = await hub.api.put(path, json=rules, headers=hub.sender)
    assert denied.status_code == 403, denied.text
    bad = await hub.api.put(path, json=rules | {"backfill_day": 29}, headers=hub.auto)
    assert bad.status_code == 422, bad.text
    r = await hub.api.put(path, json=rules, headers=hub.auto)
    assert r.status_code == 200 and r.json()["updated_by"].endswith(":00000000-0000-4000-8000-000000000001"), r.text

    invoice = (await hub.submit(hub.fa3("FV/A/1"))).json()
    proforma_xml = hub.fa3("PRO/A/1")
    proforma = (await hub.submit(proforma_xml)).json()
    assert proforma["status"] == "held" and proforma["held_by_rule"] == "series:PRO/*"
    assert (await hub.final(invoice["id"]))["status"] == "accepted"
    assert sha256_b64(proforma_xml) not in {i.invoice_hash for i in hub.accepted_in_sim()}

    sent = await hub.api.post(f"/clients/{hub.nip}/sales/{proforma['id']}/send", headers=hub.sender)
    assert sent.status_code == 200 and sent.json() == {"released": 1}, sent.text
    assert (await hub.final(proforma["id"]))["status"] == "accepted"
    again = await hub.api.post(f"/clients/{hub.nip}/sales/{proforma['id']}/send", headers=hub.sender)
    assert again.status_code == 409, again.text

    # Last month's held pro-forma goes with the backfill on its day (the periodic pass runs it), once; this month's
    # stays held.
    today = date.today()
    last_month = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 15)
    late = (await hub.submit(hub.fa3("PRO/A/2", issue_date=last_month))).json()
    this_month = (await hub.submit(hub.fa3("PRO/A/3"))).json()
    assert {late["status"], this_month["status"]} == {"held"}
    r = await hub.api.put(path, json=rules | {"backfill_day": 1}, headers=hub.auto)
    assert r.status_code == 200, r.text
    assert (await hub.final(late["id"]))["status"] == "accepted"
    state = (await hub.api.get(path, headers=hub.reader)).json()
    assert state["last_backfill_month"] == f"{last_month.year:04d}-{last_month.month:02d}"
    assert await hub.gateway.sales.run_due_backfills(today) == {}
    held = (await hub.api.get(f"/clients/{hub.nip}/sales/{this_month['id']}", headers=hub.reader)).json()
    assert held["status"] == "held"

    # The month's own backfill by hand: what is held in it is sent.
    month = f"{today.year:04d}-{today.month:02d}"
    r = await hub.api.post(f"/clients/{hub.nip}/sales-backfill", params={"month": month}, headers=hub.sender)
    assert r.status_code == 200 and r.json() == {"released": 1}, r.text
    assert (await hub.final(this_month["id"]))["status"] == "accepted"
    assert len({i.invoice_hash for i in hub.accepted_in_sim()}) == 4
