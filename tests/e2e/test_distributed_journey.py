"""The whole journey on the distributed runner (``ksef-hub up``'s topology: every service its own OS process, two
replicas of the gateway and of buffer-svc, PostgreSQL and Kafka of their own), over HTTP only, as an office and its
clients would live it: one office, three clients; consent and activation by mail; the clients' purchase invoices
fetched from the simulator; decisions (one by a suggestion), month approval, import through the booking gate and
the ERP bundle; sales invoices sent with UPO and QR code; every webhook received and verified.

``test_the_journey_under_chaos`` does it while every service is SIGKILLed in turn (the supervisor starts it again),
the Kafka broker and PostgreSQL are restarted, KSeF has an outage and a 429 storm; afterwards every purchase invoice
is in the buffer exactly once, every sales invoice accepted once with its UPO, every webhook delivered (duplicates
only under the same id), every e-mail sent once and no dead letter without a reason. A report prints the counts.

Scale: KSEF_HUB_JOURNEY_SCALE (1.0: 5 000 purchase invoices and 500 sales invoices, as the issue asks; ``make chaos``
runs the chaos test so; the suite's default 0.04 keeps ``make test`` inside its time).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from standardwebhooks.webhooks import Webhook

from ksef_gateway.testing import KsefHarness
from ksef_hub.distributed import Bootstrap, InfraInstance, Process, Supervisor
from ksef_hub.onboarding import CODE, CONSENT_LINK, FAST, INVITATION_LINK, PlatformClient, RetryUnavailable
from platform_common.testing import wait_until
from platform_common.testing.auth import serve_config_on_loopback

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# In `make test` a twenty-fifth of the figures (the suite's time); `make chaos` runs them in full.
SCALE = float(os.environ.get("KSEF_HUB_JOURNEY_SCALE", "0.04"))
PURCHASES = [max(10, round(n * SCALE)) for n in (2500, 1500, 1000)]
SALES = max(10, round(500 * SCALE))
PASSWORD = "journey-password-2026"  # a throw-away platform on loopback
OFFICE = ("Biuro Rachunkowe Podróż Sp. z o.o.", "5260250216")
CLIENTS = [
    ("Piekarnia Północ Sp. z o.o.", "7777777702"),
    ("Hurtownia Wschód S.A.", "1112223303"),
    ("Sklep Zachód", "5272525995"),
]
ADMIN, OPERATOR = "admin@podroz.example.com", "ops@podroz.example.com"
SERVICES = ("auth", "gateway", "buffer", "approval", "notify")


@dataclass
class Platform(PlatformClient):
    supervisor: Supervisor = field(kw_only=True)
    sim: KsefHarness = field(kw_only=True)
    sim_operator: dict[str, str] = field(kw_only=True)
    report: dict[str, Any] = field(default_factory=dict, kw_only=True)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    # An infrastructure instance of its own, on ports beside the suite's: the chaos run restarts it.
    infra = InfraInstance(tmp_path / "infra", pg_port=57432, kafka_port=59292, kafka_controller_port=59293)
    supervisor = Supervisor(
        tmp_path / "platform",
        infra,
        extra_env=FAST,
        bootstrap=Bootstrap(OPERATOR, OFFICE[0], OFFICE[1], ADMIN, PASSWORD),
    )
    try:
        await supervisor.start()
        config = uvicorn.Config(supervisor.front_app(), log_config=None, access_log=False)
        async with (
            serve_config_on_loopback(config, supervisor.front_sock) as front,
            httpx.AsyncClient(base_url=front, timeout=60, transport=RetryUnavailable()) as http,
            httpx.AsyncClient(timeout=60, trust_env=False) as sim_http,
        ):
            token = supervisor.sim_operator_token()
            sim = KsefHarness(supervisor.processes["ksef-sim"].url, sim_http)
            yield Platform(
                http,
                PASSWORD,
                browser_transport=RetryUnavailable,
                supervisor=supervisor,
                sim=sim,
                sim_operator={"Authorization": f"Bearer {token}"},
            )
    finally:
        await supervisor.stop()
        await infra.run("down")


# --- the journey's steps ------------------------------------------------------------------------------------------


async def _connect_clients(p: Platform, admin: dict[str, str], office_id: str) -> dict[str, dict[str, str]]:
    """Consent by the e-mailed link, the owner's invitation accepted, the code entered: every client active, its
    KSeF token with the gateway. Returns the owners' bearer headers by NIP."""
    owners: dict[str, dict[str, str]] = {}
    for name, nip in CLIENTS:
        owner = await p.connect_client(
            admin,
            office_id,
            name,
            nip,
            owner_email=f"zarzad@{nip}.example.com",
            return_email=f"kody-{nip}@podroz.example.com",
        )
        assert owner is not None
        owners[nip] = owner
    return owners


async def _register_tokens(p: Platform, admin: dict[str, str]) -> None:
    for _name, nip in CLIENTS:
        await p.register_token(admin, nip, await p.sim.create_ksef_token(nip))


async def _entries(p: Platform, nip: str, who: dict[str, str], **query: Any) -> list[dict[str, Any]]:
    return await p.entries(nip, who, **query)


async def _all_fetched(p: Platform, admin: dict[str, str], seeded: dict[str, int], timeout: float) -> None:
    async def counted() -> bool:
        for nip, count in seeded.items():
            months = await p.http.get(f"/approval/clients/{nip}/months", headers=admin)
            if months.status_code != 200 or sum(m["counts"]["entries"] for m in months.json()) < count:
                return False
        return True

    await wait_until(counted, timeout=timeout, interval=1, what="every purchase invoice in the buffer and counted")


async def _decide_and_approve(p: Platform, nip: str, owner: dict[str, str]) -> dict[str, int]:
    """The owner books one invoice by hand, takes the suggestion for the same seller's next one, decides the rest in
    bulk (every tenth "Nie księguj") and approves each month."""
    entries = await _entries(p, nip, owner)
    by_seller: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_seller.setdefault(entry["seller"]["nip"], []).append(entry)
    first, second = next(e for e in by_seller.values() if len(e) > 1)[:2]
    decided = await p.http.patch(
        f"/buffer/clients/{nip}/purchases/{first['id']}",
        json={"decision": "book", "description": "Materiały biurowe"},
        headers=owner,
    )
    assert decided.status_code == 200, decided.text
    suggested = (await p.http.get(f"/buffer/clients/{nip}/purchases/{second['id']}", headers=owner)).json()
    assert suggested["suggestion"] is not None, "the same seller's next invoice is offered the last decision"
    assert suggested["decision"] == "unverified", "a suggestion is never applied by itself"
    taken = await p.http.patch(
        f"/buffer/clients/{nip}/purchases/{second['id']}",
        json={"decision": suggested["suggestion"]["decision"], "description": suggested["suggestion"]["description"]},
        headers=owner,
    )
    assert taken.status_code == 200 and taken.json()["description"] == "Materiały biurowe", taken.text
    rest = [e for e in entries if e["id"] not in (first["id"], second["id"])]
    dont = [e["id"] for i, e in enumerate(rest) if i % 10 == 0]
    book = [e["id"] for i, e in enumerate(rest) if i % 10 != 0]
    for decision, ids in (("book", book), ("dont_book", dont)):
        for start in range(0, len(ids), 500):
            out = await p.http.post(
                f"/buffer/clients/{nip}/purchases/decisions",
                json={"decision": decision, "entry_ids": ids[start : start + 500]},
                headers=owner,
            )
            assert out.status_code == 200 and out.json()["refused"] == 0, out.text
    periods = sorted({e["period"] for e in entries})
    for period in periods:

        async def approvable(period: str = period) -> bool:
            month = await p.http.get(f"/approval/clients/{nip}/months/{period}", headers=owner)
            return bool(month.status_code == 200 and month.json()["can_approve"])

        await wait_until(approvable, timeout=180, interval=0.5, what=f"{nip} {period} counted as decided")
        approved = await p.http.post(f"/approval/clients/{nip}/months/{period}/approve", headers=owner)
        assert approved.status_code == 200, approved.text
    return {"entries": len(entries), "book": len(book) + 2, "dont_book": len(dont), "months": len(periods)}


async def _import_and_bundle(p: Platform, nip: str, admin: dict[str, str], expected_book: int) -> int:
    async def locked() -> bool:
        entries = await _entries(p, nip, admin)
        return all(e["month_approved"] for e in entries)

    await wait_until(locked, timeout=180, interval=1, what=f"buffer-svc to lock {nip}'s approved months")
    bundle = await p.http.get(f"/buffer/clients/{nip}/ready.zip", headers=admin)
    assert bundle.status_code == 200, bundle.text
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        xml = [n for n in archive.namelist() if n.endswith(".xml")]
        manifest = json.loads(archive.read(next(n for n in archive.namelist() if n.endswith(".json"))))
    assert len(xml) == expected_book, (len(xml), expected_book)
    assert manifest, "the manifest lists the entries"
    entries = await _entries(p, nip, admin)
    imported = refused = 0
    for start in range(0, len(entries), 500):
        out = await p.http.post(
            f"/buffer/clients/{nip}/purchases/imports",
            json={"entry_ids": [e["id"] for e in entries[start : start + 500]], "ksef_numbers": []},
            headers=admin,
        )
        assert out.status_code == 200, out.text
        imported += out.json()["changed"]
        refused += out.json()["refused"]
        # The booking gate: every refusal says why ("Status: Nie księguj").
        assert all(r["reason"] for r in out.json()["results"] if r["result"] != "imported"), out.text
    assert imported == expected_book and refused == len(entries) - expected_book, (imported, refused)
    return imported


def _sales_invoice(seller: tuple[str, str], i: int) -> dict[str, Any]:
    return {
        "number": f"FV/J/{i + 1}",
        "issue_date": datetime.now(UTC).date().isoformat(),
        "seller": {"nip": seller[1], "name": seller[0], "address": {"line1": "ul. Chlebowa 1"}},
        "buyer": {"nip": "5260250274", "name": "Odbiorca S.A.", "address": {"line1": "ul. Handlowa 2"}},
        "lines": [
            {"name": "Chleb żytni", "unit": "szt.", "quantity": "10", "unit_net_price": f"{100 + i}.00", "rate": "5"}
        ],
    }


async def _send_sales(p: Platform, admin: dict[str, str], count: int) -> list[str]:
    seller = CLIENTS[0]
    ids: list[str] = []
    for i in range(count):
        body = json.dumps(_sales_invoice(seller, i))
        headers = admin | {"Idempotency-Key": f"journey-{i}", "Content-Type": "application/json"}
        # Asked again while a replica restarts (RetryUnavailable): the same key makes that safe.
        response = await p.http.post(f"/gateway/clients/{seller[1]}/sales", content=body, headers=headers)
        assert response.status_code in (200, 201, 202), response.text
        ids.append(response.json()["id"])
    return ids


async def _all_sales(p: Platform, nip: str, admin: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"cursor": cursor} if cursor else {})
        page = await p.http.get(f"/gateway/clients/{nip}/sales", params=params, headers=admin)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json().get("next_cursor")
        if not cursor:
            return items


async def _journey(p: Platform, chaos: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
    admin = await p.login(ADMIN)
    operator = await p.login(OPERATOR)
    office_id = (await p.http.get("/auth/me", headers=admin)).json()["context"]["org"]
    hook = await p.http.post(
        "/notify/webhooks/subscriptions",
        json={
            "url": f"{p.supervisor.front_url}/dev/webhooks/office",
            "event_types": ["*"],
            "contact_email": ADMIN,
            "language": "pl",
        },
        headers=admin,
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]

    owners = await _connect_clients(p, admin, office_id)
    seeded: dict[str, int] = {}
    for (_name, nip), count in zip(CLIENTS, PURCHASES, strict=True):
        done = await p.http.post(
            f"{p.sim.root_url}/_sim/seed",
            json={"buyerNip": nip, "count": count, "sellers": 40, "spreadDays": 20, "corrections": 0},
            headers=p.sim_operator,
        )
        assert done.status_code == 201, done.text
        seeded[nip] = done.json()["created"]
    started = asyncio.get_running_loop().time()
    chaos_task = asyncio.create_task(chaos()) if chaos is not None else None
    await _register_tokens(p, admin)
    sales_ids = await _send_sales(p, admin, SALES)
    await _all_fetched(p, admin, seeded, timeout=900)
    p.report["fetch_s"] = round(asyncio.get_running_loop().time() - started, 1)

    seller_nip = CLIENTS[0][1]

    async def sales_final() -> bool:
        return all(s["status"] in ("accepted", "rejected") for s in await _all_sales(p, seller_nip, admin))

    await wait_until(sales_final, timeout=900, interval=1, what="every sales invoice decided by KSeF")
    if chaos_task is not None:
        await chaos_task

    # Every purchase invoice in the buffer exactly once.
    decided: dict[str, dict[str, int]] = {}
    for nip, count in seeded.items():
        entries = await _entries(p, nip, admin)
        numbers = Counter(e["ksef_number"] for e in entries)
        assert len(numbers) == count and max(numbers.values()) == 1, (nip, len(numbers), count)
        decided[nip] = await _decide_and_approve(p, nip, owners[nip])
        decided[nip]["imported"] = await _import_and_bundle(p, nip, admin, decided[nip]["book"])

    # Every sales invoice accepted once, with its UPO and QR code.
    sales = await _all_sales(p, seller_nip, admin)
    assert {s["id"] for s in sales} == set(sales_ids) and len(sales) == SALES
    assert all(s["status"] == "accepted" and s["ksef_number"] for s in sales), Counter(s["status"] for s in sales)
    assert len({s["ksef_number"] for s in sales}) == SALES, "one KSeF number each"
    sample = random.sample(sales, 5)
    for s in sample:
        upo = await p.http.get(f"/gateway/clients/{seller_nip}/sales/{s['id']}/upo", headers=admin)
        assert upo.status_code == 200 and b"NumerKSeFDokumentu" in upo.content, upo.text[:300]
        qr = await p.http.get(f"/gateway/clients/{seller_nip}/sales/{s['id']}/kod-i.png", headers=admin)
        assert qr.status_code == 200 and qr.content.startswith(b"\x89PNG"), qr.status_code
    stats = (await p.http.get(f"{p.sim.root_url}/_sim/stats", headers=p.sim_operator)).json()
    assert stats["invoices"] == sum(seeded.values()) + SALES, "KSeF holds every sales invoice once"

    # Every webhook delivered and verified; duplicates only under the same id with the same body.
    purchases = {nip for nip in seeded}
    fetched_expected = sum(seeded.values())

    async def webhooks_in() -> bool:
        got = (await p.http.get("/dev/webhooks")).json()
        types = Counter(json.loads(w["body"])["type"] for w in got)
        return types["invoice.fetched"] >= fetched_expected and types["invoice.sent"] >= SALES

    await wait_until(webhooks_in, timeout=600, interval=1, what="the office's webhooks")
    received = (await p.http.get("/dev/webhooks")).json()
    by_id: dict[str, str] = {}
    for w in received:
        Webhook(secret).verify(w["body"].encode(), w["headers"])
        assert by_id.setdefault(w["headers"]["webhook-id"], w["body"]) == w["body"], "a duplicate is the same message"
    events = [json.loads(b) for b in by_id.values()]
    fetched = Counter(e["data"]["ksef_number"] for e in events if e["type"] == "invoice.fetched")
    assert (
        len(fetched) == fetched_expected
        and {e["data"]["client_nip"] for e in events if e["type"] == "invoice.fetched"} == purchases
    )
    sent = {e["data"]["ksef_number"] for e in events if e["type"] == "invoice.sent"}
    assert sent == {s["ksef_number"] for s in sales}

    # Every e-mail once: per client one consent request, one invitation, one activation code.
    mails = (await p.http.get("/notify/dev/mail")).json()
    for _name, nip in CLIENTS:
        for recipient, pattern in (
            (f"zarzad@{nip}.example.com", CONSENT_LINK),
            (f"zarzad@{nip}.example.com", INVITATION_LINK),
            (f"kody-{nip}@podroz.example.com", CODE),
        ):
            assert len([m for m in mails if recipient in m["to"] and pattern.search(m["text"])]) == 1, (
                recipient,
                pattern,
            )
    ids = Counter(m["messageId"] for m in mails)
    assert max(ids.values()) == 1, "no mail sent twice"

    # No dead letter without a reason.
    letters = {}
    for service in SERVICES:
        listed = await p.http.get(f"/{service}/ops/dead-letters", params={"limit": 200}, headers=operator)
        assert listed.status_code == 200, listed.text
        letters[service] = len(listed.json())
        assert all(letter["reason"] for letter in listed.json()), listed.text

    p.report |= {
        "purchases": seeded,
        "decided": decided,
        "sales_accepted": len(sales),
        "webhooks_received": len(received),
        "webhooks_distinct": len(by_id),
        "mails": len(mails),
        "dead_letters": letters,
        "restarts": {x["name"]: x["restarts"] for x in p.supervisor.describe() if x["restarts"]},
    }
    print("\njourney report:", json.dumps(p.report, indent=2, ensure_ascii=False))


async def test_the_journey(platform: Platform) -> None:
    await _journey(platform)
    assert not platform.report["restarts"], "nothing died by itself"


async def test_the_journey_under_chaos(platform: Platform) -> None:
    p = platform
    supervisor = p.supervisor

    async def chaos() -> None:
        log: list[str] = []
        # Every service process SIGKILLed in turn, each once it is back from the previous blow.
        for name in [n for n in supervisor.processes if n != "ksef-sim"]:
            pid = supervisor.kill(name)
            log.append(f"SIGKILL {name} ({pid})")
            proc = supervisor.processes[name]

            async def restarted(proc: Process = proc) -> bool:
                return proc.restarts > 0

            await wait_until(restarted, timeout=60, what=f"{name} restarted")
            await supervisor.ready(supervisor.processes[name])
        # The broker and the database restart under everybody's feet.
        await supervisor.infra.run("kafka-down", "kafka-up")
        log.append("Kafka restarted")
        await supervisor.infra.run("pg-down", "pg-up")
        log.append("PostgreSQL restarted")
        await supervisor.all_ready(timeout=300)
        # KSeF: an outage, then a 429 storm.
        sim = f"{p.sim.root_url}/_sim"
        await p.http.put(f"{sim}/faults", json={"outage": True, "retryAfterSeconds": 1}, headers=p.sim_operator)
        await asyncio.sleep(3)  # the outage's length is the fault being injected, not a wait for something
        await p.http.delete(f"{sim}/faults", headers=p.sim_operator)
        log.append("KSeF outage of 3 s")
        await p.http.post(f"{sim}/faults/force-429", json={"count": 200}, headers=p.sim_operator)
        log.append("200 forced 429s")
        p.report["chaos"] = log

    await _journey(p, chaos)
    assert len(p.report["restarts"]) >= 7, p.report["restarts"]
