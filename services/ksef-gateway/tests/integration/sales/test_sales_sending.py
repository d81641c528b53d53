"""Sales invoices through the gateway's real wiring against the simulator, on SQLite and PostgreSQL: submitted over
HTTP (FA(3) XML or JSON), validated, queued, sent through the client's online session, polled until KSeF decides,
stored with the KSeF number and UPO, announced through the outbox; duplicates resolved to the original, refusals
carried with KSeF's code, an interrupted send reconciled by the invoice hash without sending it twice."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from datetime import UTC, date, datetime, timedelta

from integration.sales.world import Hub
from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.ksef.models import FA3
from ksef_gateway.sales.deadlines import next_working_day
from ksef_gateway.sales.qr import verify_kod_ii
from ksef_gateway.sales.repository import SalesRepository


async def test_an_invoice_is_accepted_with_its_ksef_number_upo_and_events(hub: Hub) -> None:
    xml = hub.fa3("FV/1/2026")
    r = await hub.submit(xml)
    assert r.status_code == 202, r.text
    submitted = r.json()
    assert submitted["status"] == "queued" and submitted["invoice_hash"] == sha256_b64(xml)
    assert r.headers["location"].endswith(submitted["id"])

    done = await hub.final(submitted["id"])
    assert done["status"] == "accepted", done
    (stored,) = hub.accepted_in_sim()  # KSeF holds it once, byte for byte
    assert stored.ksef_number == done["ksef_number"] and stored.invoice_hash == sha256_b64(xml)
    assert [h["status"] for h in done["history"]] == ["queued", "sending", "submitted", "accepted"]
    assert done["kod_i_url"].endswith("/" + base64.urlsafe_b64encode(hashlib.sha256(xml).digest()).decode().rstrip("="))

    upo = await hub.api.get(f"/clients/{hub.nip}/sales/{submitted['id']}/upo", headers=hub.reader)
    assert upo.status_code == 200 and done["ksef_number"].encode() in upo.content
    copy = await hub.api.get(f"/clients/{hub.nip}/sales/{submitted['id']}/xml", headers=hub.reader)
    assert copy.content == xml
    png = await hub.api.get(f"/clients/{hub.nip}/sales/{submitted['id']}/kod-i.png", headers=hub.reader)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    svg = await hub.api.get(f"/clients/{hub.nip}/sales/{submitted['id']}/kod-i.svg", headers=hub.reader)
    assert done["ksef_number"] in svg.text

    (sent,) = await hub.events("invoice.sent")
    assert sent["ksef_number"] == done["ksef_number"] and sent["p_2"] == "FV/1/2026"
    statuses = [e["status"] for e in await hub.events("status.changed")]
    assert statuses == ["queued", "accepted"]


async def test_a_json_invoice_is_rendered_to_fa3_and_sent_like_xml(hub: Hub) -> None:
    r = await hub.submit(hub.invoice("FV/J/1"))
    assert r.status_code == 202, r.text
    assert r.json()["source"] == "json" and r.json()["invoice_number"] == "FV/J/1"
    done = await hub.final(r.json()["id"])
    assert done["status"] == "accepted"
    copy = await hub.api.get(f"/clients/{hub.nip}/sales/{done['id']}/xml", headers=hub.reader)
    (stored,) = hub.accepted_in_sim()
    assert stored.invoice_hash == sha256_b64(copy.content)


async def test_an_idempotency_key_answers_a_repeat_with_the_first_result_and_refuses_another_body(hub: Hub) -> None:
    xml = hub.fa3("FV/2/2026")
    first = await hub.submit(xml, key="erp-42")
    again = await hub.submit(xml, key="erp-42")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = await hub.submit(hub.fa3("FV/3/2026"), key="erp-42")
    assert other.status_code == 409 and other.json()["type"].endswith("/idempotency-key-reused"), other.text
    await hub.final(first.json()["id"])
    assert len(hub.accepted_in_sim()) == 1


async def test_concurrent_submissions_with_repeated_keys_reach_ksef_once_each(hub: Hub) -> None:
    bodies = {f"k{i}": hub.fa3(f"FV/C/{i}") for i in range(20)}
    # Every key three times at once, the copies interleaved.
    attempts = [(key, body) for _ in range(3) for key, body in bodies.items()]
    responses = await asyncio.gather(*(hub.submit(body, key=key) for key, body in attempts))
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses if r.status_code >= 300]
    ids: dict[str, set[str]] = {}
    for (key, _), response in zip(attempts, responses, strict=True):
        ids.setdefault(key, set()).add(response.json()["id"])
    assert all(len(found) == 1 for found in ids.values())
    for (found,) in ids.values():
        assert (await hub.final(found))["status"] == "accepted"
    stored = hub.accepted_in_sim()
    assert sorted(i.invoice_hash for i in stored) == sorted(sha256_b64(b) for b in bodies.values())


async def test_a_duplicate_resolves_to_the_original_and_a_different_document_under_its_number_is_refused(
    hub: Hub,
) -> None:
    xml = hub.fa3("FV/D/1")
    original = await hub.final((await hub.submit(xml)).json()["id"])
    assert original["status"] == "accepted"

    repeat = await hub.final((await hub.submit(xml)).json()["id"])
    assert repeat["status"] == "duplicate" and repeat["status_label"]["en"] == "Accepted (duplicate)"
    assert repeat["ksef_number"] == original["ksef_number"] and repeat["ksef_code"] == 440
    upo = await hub.api.get(f"/clients/{hub.nip}/sales/{repeat['id']}/upo", headers=hub.reader)
    assert upo.status_code == 200 and original["ksef_number"].encode() in upo.content

    conflict = await hub.final((await hub.submit(hub.fa3("FV/D/1", price="99.00"))).json()["id"])
    assert conflict["status"] == "rejected" and conflict["ksef_code"] == 440
    assert conflict["ksef_number"] is None and conflict["error"]["original_ksef_number"] == original["ksef_number"]
    assert len(hub.accepted_in_sim()) == 1
    sent = await hub.events("invoice.sent")
    assert sorted(e["invoice_id"] for e in sent) == sorted([original["id"], repeat["id"]])


async def test_ksef_refusals_carry_its_code_and_message(hub: Hub) -> None:
    tomorrow = datetime.now(UTC).date() + timedelta(days=2)
    refused = await hub.final((await hub.submit(hub.fa3("FV/R/1", issue_date=tomorrow))).json()["id"])
    assert refused["status"] == "rejected" and refused["ksef_code"] == 450, refused
    assert refused["error"]["description"] == "Błąd weryfikacji semantyki dokumentu faktury"
    assert any("P_1" in detail for detail in refused["error"]["details"]), refused["error"]
    (changed,) = [e for e in await hub.events("status.changed") if e["status"] == "rejected"]
    assert changed["reason"].startswith("450: Błąd weryfikacji") and "P_1" in changed["reason"]
    missing = await hub.api.get(f"/clients/{hub.nip}/sales/{refused['id']}/upo", headers=hub.reader)
    assert missing.status_code == 404 and missing.json()["type"].endswith("/no-upo")


async def test_bad_submissions_are_refused_before_anything_is_queued(hub: Hub) -> None:
    broken = hub.fa3("FV/B/1").replace(b"<P_2>", b"<P_2x>", 1).replace(b"</P_2>", b"</P_2x>", 1)
    r = await hub.submit(broken)
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-fa3"), r.text
    assert all(e["line"] > 0 and e["message"] for e in r.json()["errors"])

    r = await hub.submit(b"<Faktura><unclosed></Faktura>")
    assert r.status_code == 422 and r.json()["errors"][0]["line"] == 1

    bad = hub.invoice("FV/B/2")
    bad["seller"]["nip"] = "1234567890"  # checksum
    bad["lines"] = []
    r = await hub.submit(bad)
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-invoice"), r.text
    fields = {e["field"] for e in r.json()["errors"]}
    assert "seller.nip" in fields and "lines" in fields

    r = await hub.submit(hub.fa3("FV/B/3", nip="5260250274"))  # someone else's sale
    assert r.status_code == 422 and r.json()["type"].endswith("/seller-not-client")

    plain = hub.sender | {"Content-Type": "text/plain"}
    r = await hub.api.post(f"/clients/{hub.nip}/sales", content=b"x", headers=plain)
    assert r.status_code == 415

    r = await hub.api.post(f"/clients/{hub.nip}/sales", content=hub.fa3("FV/B/4"), headers=hub.reader)
    assert r.status_code == 403  # reading is not sending
    listed = await hub.api.get(f"/clients/{hub.nip}/sales", headers=hub.reader)
    assert listed.json()["items"] == []


async def test_a_send_interrupted_after_ksef_received_it_is_reconciled_not_sent_again(hub: Hub) -> None:
    """As after a SIGKILL between the POST and storing its answer: the row says ``sending``, KSeF holds the
    invoice. Another row died before its POST left: KSeF has nothing. Each ends accepted exactly once."""
    await hub.gateway.sales_sender.stop()
    xml_sent, xml_lost = hub.fa3("FV/K/1"), hub.fa3("FV/K/2")
    sent_id = (await hub.submit(xml_sent)).json()["id"]
    lost_id = (await hub.submit(xml_lost)).json()["id"]
    online = await hub.gateway.online_sessions.acquire(hub.nip, FA3)
    db = hub.gateway.runtime.db
    async with db.sessionmaker() as session, session.begin():
        for invoice_id in (sent_id, lost_id):
            values = {"status": "sending", "session_reference": online.reference_number, "attempts": 1}
            assert await SalesRepository(session).update(uuid.UUID(invoice_id), "queued", values)
    await hub.gateway.sessions.call(
        hub.nip, lambda client, token: client.send_online_invoice(token, online, xml_sent, context_nip=hub.nip)
    )

    await hub.gateway.sales_sender.start()
    sent, lost = await hub.final(sent_id), await hub.final(lost_id)
    assert sent["status"] == lost["status"] == "accepted"
    assert {"reconciled": True} | {"invoice_reference": sent["invoice_reference"]} in [
        h["detail"] for h in sent["history"] if h["status"] == "submitted"
    ]
    assert [h["status"] for h in lost["history"]].count("queued") == 2  # back to the queue, then sent
    hashes = sorted(i.invoice_hash for i in hub.accepted_in_sim())
    assert hashes == sorted([sha256_b64(xml_sent), sha256_b64(xml_lost)])  # each once


async def test_an_offline24_invoice_gets_kod_ii_and_its_deadline_and_is_sent_in_offline_mode(hub: Hub) -> None:
    xml = hub.fa3("FV/OFF/1")
    path = f"/clients/{hub.nip}/sales"
    refused = await hub.api.post(
        path, params={"offline": "offline24"}, content=xml, headers=hub.sender | {"Content-Type": "application/xml"}
    )
    assert refused.status_code == 422 and refused.json()["type"].endswith("/no-offline-certificate"), refused.text

    cert_pem, key_pem, certificate = hub.offline_certificate()
    manage = hub.sender | {"Authorization": hub.manager}
    r = await hub.api.put(
        f"/clients/{hub.nip}/offline-certificate",
        json={"certificate_pem": cert_pem, "private_key_pem": key_pem},
        headers=manage,
    )
    assert r.status_code == 200, r.text
    assert r.json()["key_type"] == "ECDSA-P256" and "PRIVATE" not in r.text
    assert r.json()["serial"] == f"{certificate.serial_number:016X}"

    r = await hub.api.post(
        path, params={"offline": "offline24"}, content=xml, headers=hub.sender | {"Content-Type": "application/xml"}
    )
    assert r.status_code == 202, r.text
    issued = r.json()
    assert issued["offline_mode"] == "offline24"
    assert issued["offline_deadline"] == next_working_day(date.fromisoformat(issued["issue_date"])).isoformat()
    # KOD II verified independently, from the certificate alone.
    assert verify_kod_ii(issued["kod_ii_url"], certificate)
    assert f"/certificate/Nip/{hub.nip}/{hub.nip}/{certificate.serial_number:016X}/" in issued["kod_ii_url"]
    svg = await hub.api.get(f"{path}/{issued['id']}/kod-ii.svg", headers=hub.reader)
    assert svg.status_code == 200 and "CERTYFIKAT" in svg.text

    done = await hub.final(issued["id"])
    assert done["status"] == "accepted"
    (stored,) = hub.accepted_in_sim()
    assert stored.invoicing_mode == "Offline"
    (sent,) = await hub.events("invoice.sent")
    assert sent["mode"] == "offline"
    online = (await hub.submit(hub.fa3("FV/ON/1"))).json()
    assert online["kod_ii_url"] is None
    none = await hub.api.get(f"{path}/{online['id']}/kod-ii.png", headers=hub.reader)
    assert none.status_code == 404
