"""KSeF outages against the simulator: Latarnia's announcement and our own probes record an outage once, invoices
submitted meanwhile are issued offline at once (KOD I + KOD II that an independent check accepts), nothing is sent
into the outage, and after it everything goes with offlineMode=true and the legal deadline the end fixes; a rejected
offline invoice is replaced by its technical correction; offline deadlines alert once."""

from __future__ import annotations

import base64
import json
import re
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from sqlalchemy import select

from integration.sales.world import Hub
from ksef_gateway.db import messaging_tables
from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.sales.deadlines import WARSAW, add_working_days
from platform_common.testing import wait_until

# REFERENCE.md §11: https://{host}/certificate/{ctxType}/{ctxValue}/{sellerNIP}/{serial 16 hex}/{hash}/{signature}
KOD_II = re.compile(
    r"^https://[a-z0-9.-]+/certificate/Nip/(\d{10})/(\d{10})/([0-9A-F]{16})/([A-Za-z0-9_-]{43})/([A-Za-z0-9_-]+)$"
)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def independently_verified(url: str, xml: bytes, certificate: x509.Certificate) -> bool:
    """KOD II checked from the certificate alone, with ``cryptography``: the URL's shape, the hash of the very
    XML, and the ECDSA P-256 signature (R||S) over the URL without scheme, up to the hash."""
    match = KOD_II.match(url)
    assert match, url
    _, _, serial, digest, signature = match.groups()
    assert serial == f"{certificate.serial_number:016X}"
    assert _b64url(digest) == base64.b64decode(sha256_b64(xml))
    signed = url.removeprefix("https://").rsplit("/", 1)[0].encode()
    raw = _b64url(signature)
    der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))  # raises if it does not verify
    return True


async def sim_faults(hub: Hub, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=hub.sim.root_url, headers=hub.sim.operator_headers) as http:
        response = await (http.put("/_sim/faults", json=faults) if faults else http.delete("/_sim/faults"))
        assert response.status_code == 200, response.text


async def availability(hub: Hub) -> dict[str, Any]:
    r = await hub.api.get("/ksef/availability", headers=hub.reader)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def outage_events(hub: Hub) -> list[dict[str, Any]]:
    outbox = messaging_tables.outbox
    async with hub.gateway.runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(outbox.c.payload).where(outbox.c.topic == "ksef.outage"))).all()
    return [json.loads(r.payload) for r in rows]


async def test_invoices_issued_in_an_announced_failure_are_offline_and_go_to_ksef_when_it_ends(hub: Hub) -> None:
    certificate = await hub.register_offline_certificate()
    await sim_faults(hub, outage=True, kind="FAILURE", retryAfterSeconds=1)

    async def announced() -> dict[str, Any] | None:
        state = await availability(hub)
        return state if not state["available"] else None

    state = await wait_until(announced, timeout=15, interval=0.05, what="the announced failure recorded")
    (outage,) = state["open"]
    assert (outage["kind"], outage["source"]) == ("FAILURE", "latarnia") and outage["latarnia_event_id"] is not None

    bodies = [hub.fa3(f"FV/AWARIA/{i}") for i in range(3)]
    issued = []
    for xml in bodies:
        r = await hub.submit(xml)
        assert r.status_code == 202, r.text
        issued.append(r.json())
    for xml, invoice in zip(bodies, issued, strict=True):
        assert invoice["offline_mode"] == "awaryjny"
        # The failure has not ended: nobody knows the deadline yet (7 working days from its end).
        assert invoice["offline_deadline"] is None and invoice["offline_deadline_status"] == "awaiting_end"
        assert independently_verified(invoice["kod_ii_url"], xml, certificate)
        kod_i = await hub.api.get(f"/clients/{hub.nip}/sales/{invoice['id']}/kod-i.svg", headers=hub.reader)
        assert kod_i.status_code == 200 and "OFFLINE" in kod_i.text
    # Nothing is sent into the outage: the simulator holds none of them while it lasts.
    assert hub.accepted_in_sim() == []

    await sim_faults(hub)  # KSeF is back; Latarnia publishes the end
    done = [await hub.final(i["id"]) for i in issued]
    assert all(d["status"] == "accepted" for d in done), done
    stored = {i.invoice_hash: i for i in hub.accepted_in_sim()}
    assert set(stored) == {sha256_b64(b) for b in bodies}
    assert all(i.invoicing_mode == "Offline" for i in stored.values())

    (ended,) = [e for e in await outage_events(hub) if e["type"] == "ksef.outage.ended"]
    started = [e for e in await outage_events(hub) if e["type"] == "ksef.outage.started"]
    assert len(started) == 1 and started[0]["payload"]["outage_id"] == ended["payload"]["outage_id"]
    end_day = datetime.fromisoformat(ended["payload"]["ended_at"]).astimezone(WARSAW).date()

    async def deadlines_fixed() -> list[str] | None:
        rows = [(await hub.api.get(f"/clients/{hub.nip}/sales/{i['id']}", headers=hub.reader)).json() for i in issued]
        found = [r["offline_deadline"] for r in rows]
        return found if all(found) else None

    found = await wait_until(deadlines_fixed, timeout=15, interval=0.05, what="deadlines fixed by the failure's end")
    assert set(found) == {add_working_days(end_day, 7).isoformat()}
    sent = await hub.events("invoice.sent")
    assert len(sent) == 3 and {s["mode"] for s in sent} == {"offline"}


async def test_ksef_unreachable_without_an_announcement_opens_an_outage_and_issues_offline24(hub: Hub) -> None:
    certificate = await hub.register_offline_certificate()
    await sim_faults(hub, errorRate=1.0)  # every /v2 call fails; Latarnia says nothing
    # Nothing is known to be down yet: an online invoice, whose sends fail and open the circuit.
    first = (await hub.submit(hub.fa3("FV/PROBE/1"))).json()
    assert first["offline_mode"] is None

    async def unreachable() -> dict[str, Any] | None:
        state = await availability(hub)
        return state["open"][0] if state["open"] else None

    outage = await wait_until(unreachable, timeout=30, interval=0.05, what="our probes' outage")
    assert (outage["kind"], outage["source"]) == ("UNREACHABLE", "probe")
    xml = hub.fa3("FV/PROBE/2")
    second = (await hub.submit(xml)).json()
    assert second["offline_mode"] == "offline24"
    assert second["offline_deadline"] == add_working_days(date.fromisoformat(second["issue_date"]), 1).isoformat()
    assert independently_verified(second["kod_ii_url"], xml, certificate)

    await sim_faults(hub)
    for invoice in (first, second):
        assert (await hub.final(invoice["id"]))["status"] == "accepted"
    modes = {i.invoice_hash: i.invoicing_mode for i in hub.accepted_in_sim()}
    assert modes[sha256_b64(xml)] == "Offline"
    state = await availability(hub)
    assert state["available"] and state["recent"][0]["ended_at"] is not None
    kinds = [e["type"] for e in await outage_events(hub)]
    assert kinds == ["ksef.outage.started", "ksef.outage.ended"]


async def test_a_rejected_offline_invoice_is_replaced_by_its_technical_correction_once(hub: Hub) -> None:
    await hub.register_offline_certificate()
    path = f"/clients/{hub.nip}/sales"
    xml = {"Content-Type": "application/xml"}
    online = (await hub.submit(hub.fa3("FV/TK/0"))).json()
    # KSeF refuses an issue date after acceptance (REFERENCE.md §8): the offline invoice is rejected.
    future = hub.fa3("FV/TK/1", issue_date=date.today() + timedelta(days=3))
    r = await hub.api.post(path, params={"offline": "offline24"}, content=future, headers=hub.sender | xml)
    assert r.status_code == 202, r.text
    rejected = await hub.final(r.json()["id"])
    assert rejected["status"] == "rejected"

    refused = await hub.api.post(
        f"{path}/{online['id']}/technical-correction", content=hub.fa3("FV/TK/0"), headers=hub.sender | xml
    )
    assert refused.status_code == 409 and refused.json()["type"].endswith("/not-correctable"), refused.text

    corrected_xml = hub.fa3("FV/TK/1")
    r = await hub.api.post(
        f"{path}/{rejected['id']}/technical-correction", content=corrected_xml, headers=hub.sender | xml
    )
    assert r.status_code == 202, r.text
    correction = r.json()
    assert correction["corrects_invoice_id"] == rejected["id"] and correction["offline_mode"] == "offline24"
    again = await hub.api.post(
        f"{path}/{rejected['id']}/technical-correction",
        content=hub.fa3("FV/TK/1", price="1.00"),
        headers=hub.sender | xml,
    )
    assert again.status_code == 409 and again.json()["type"].endswith("/correction-exists"), again.text

    assert (await hub.final(correction["id"]))["status"] == "accepted"
    (stored,) = [i for i in hub.accepted_in_sim() if i.invoice_hash == sha256_b64(corrected_xml)]
    assert stored.hash_of_corrected_invoice == rejected["invoice_hash"] and stored.invoicing_mode == "Offline"


async def test_an_offline_invoice_past_its_deadline_alerts_once(hub: Hub) -> None:
    """Issued offline24 on Tuesday 10 November 2026: the 11th is a public holiday (Narodowe Święto Niepodległości),
    so its last day was Thursday the 12th; a Friday's (6 November) was the Monday after the weekend."""
    await hub.register_offline_certificate()
    path = f"/clients/{hub.nip}/sales"
    await sim_faults(hub, outage=True, kind="MAINTENANCE")  # keep them unsent while the alerts fire
    ids = {}
    for issued, number in ((date(2026, 11, 10), "FV/LATE/1"), (date(2026, 11, 6), "FV/LATE/2")):
        r = await hub.api.post(
            path,
            params={"offline": "offline24"},
            content=hub.fa3(number, issue_date=issued),
            headers=hub.sender | {"Content-Type": "application/xml"},
        )
        assert r.status_code == 202, r.text
        ids[number] = r.json()
    assert ids["FV/LATE/1"]["offline_deadline"] == "2026-11-12"
    assert ids["FV/LATE/2"]["offline_deadline"] == "2026-11-09"

    async def alerted() -> list[dict[str, Any]] | None:
        alerts = await hub.events("sales.deadline.alerted")
        return alerts if len(alerts) >= 2 else None

    alerts = await wait_until(alerted, timeout=15, interval=0.05, what="the missed-deadline alerts")
    assert sorted((a["invoice_number"], a["alert"], a["deadline"]) for a in alerts) == [
        ("FV/LATE/1", "missed", "2026-11-12"),
        ("FV/LATE/2", "missed", "2026-11-09"),
    ]
    await hub.gateway.sales_periodic.check()  # another pass: nothing fires twice
    assert len(await hub.events("sales.deadline.alerted")) == 2
    await sim_faults(hub)
