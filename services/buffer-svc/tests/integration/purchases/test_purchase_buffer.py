"""The purchase buffer on SQLite and PostgreSQL, through its HTTP API: ingest from invoice.fetched (redelivered,
re-fetched, out of order, malformed), decisions and suggestions, the month lock followed from approval-svc's
events, the booking gate, archive, the communication log, the access ledger, and tenancy."""

from __future__ import annotations

import csv
import io
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from buffer_svc.main import create_app
from buffer_svc.settings import BufferSettings
from platform_common.auth import Authenticator
from platform_common.contracts import InvoiceFetched, MonthApproved, MonthUnlocked, StatusChanged
from platform_common.messaging.envelope import Envelope, EventContract
from platform_common.messaging.transport import InProcessBus
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import DEFAULT_OFFICE, FakeClock, TokenFactory, open_clients
from platform_common.testing.events import invoice_fetched

C, D = "7777777702", "1112223303"  # two clients; the office works for C only
C_ORG, D_ORG = uuid.uuid4(), uuid.uuid4()
SELLER, OTHER_SELLER = "5213000001", "9512000004"


@dataclass
class Buffer:
    app: Any
    bus: InProcessBus
    http: httpx.AsyncClient
    tokens: TokenFactory

    def headers(self, who: str) -> dict[str, str]:
        claims: dict[str, Any] = {
            "office": {
                "sub": "accountant-1",
                "perms": ["buffer.read", "buffer.decide", "buffer.import", "audit.read"],
                "nips": ["*"],
            },
            "client": {
                "sub": "owner-c",
                "org": str(C_ORG),
                "org_kind": "client",
                "perms": ["buffer.read", "buffer.decide", "month.approve", "audit.read"],
                "nips": [C],
            },
            "client_d": {
                "sub": "owner-d",
                "org": str(D_ORG),
                "org_kind": "client",
                "perms": ["buffer.read", "buffer.decide", "month.approve", "audit.read"],
                "nips": [D],
            },
        }[who]
        return {"Authorization": f"Bearer {self.tokens.mint(**claims)}"}

    async def deliver(self, contract: EventContract, client_nip: str, *, producer: str = "ksef-gateway") -> Envelope:
        envelope = Envelope.wrap(contract, producer=producer, client_nip=client_nip)
        await self.bus.deliver(contract.topic, client_nip, envelope.to_bytes(), source="test")
        return envelope

    async def fetched(self, client_nip: str = C, **kwargs: Any) -> InvoiceFetched:
        event = invoice_fetched(client_nip, **kwargs)
        await self.deliver(event, client_nip)
        return event

    async def entries(self, who: str = "client", nip: str = C, **params: Any) -> list[dict[str, Any]]:
        r = await self.http.get(f"/clients/{nip}/purchases", params=params, headers=self.headers(who))
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def entry(self, ksef: str, nip: str = C) -> dict[str, Any]:
        (found,) = [e for e in await self.entries(nip=nip, limit=500) if e["ksef_number"] == ksef]
        return found

    async def decide(self, entry_id: str, who: str = "client", nip: str = C, **body: Any) -> httpx.Response:
        return await self.http.patch(f"/clients/{nip}/purchases/{entry_id}", json=body, headers=self.headers(who))

    async def import_(self, *entry_ids: str, nip: str = C, **body: Any) -> dict[str, Any]:
        r = await self.http.post(
            f"/clients/{nip}/purchases/imports",
            json={"entry_ids": list(entry_ids), **body},
            headers=self.headers("office"),
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def log(self, nip: str = C, **params: Any) -> list[dict[str, Any]]:
        r = await self.http.get(f"/clients/{nip}/communication-log", params=params, headers=self.headers("client"))
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def outbox(self) -> list[StatusChanged]:
        outbox = self.app.state.runtime.definition.tables.outbox
        async with self.app.state.runtime.db.sessionmaker() as session:
            rows = (await session.execute(select(outbox.c.payload).order_by(outbox.c.seq))).all()
        return [Envelope.model_validate_json(r.payload).parse(StatusChanged) for r in rows]

    async def month(self, period: str, *, approved: bool, revision: int) -> None:
        now = datetime(2026, 12, 1, 9, tzinfo=UTC)
        event: EventContract
        if approved:
            event = MonthApproved(
                client_nip=C,
                period=period,
                approved_by="owner-c",
                approved_at=now,
                book_count=0,
                dont_book_count=0,
                revision=revision,
            )
        else:
            event = MonthUnlocked(
                client_nip=C, period=period, revision=revision, unlocked_by="owner-c", unlocked_at=now
            )
        await self.deliver(event, C, producer="approval-svc")


@pytest.fixture
async def buffer(db_url: str, tmp_path: Path) -> AsyncIterator[Buffer]:
    clock = FakeClock()
    tokens = TokenFactory(clock=clock)
    # The gateway is not running here: a loopback port bound but never listening refuses every connection.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    settings = BufferSettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        gateway_api_url=f"http://127.0.0.1:{closed.getsockname()[1]}/gateway",
        # Client credentials, so that ERP API keys are introspected (at the fake auth-svc).
        auth=tokens.settings(client_id="buffer-svc", client_secret=tokens.add_service_client("buffer-svc")),
    )
    bus = InProcessBus()
    app = create_app(settings, bus=bus, migrate_on_start=True)
    authenticator: Authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = clock, tokens.transport()
    async with LifespanManager(app, startup_timeout=60):
        await open_clients(app, C)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://buffer") as http:
            yield Buffer(app, bus, http, tokens)
    closed.close()


async def test_an_invoice_is_one_entry_however_often_it_arrives(buffer: Buffer) -> None:
    event = invoice_fetched(C, gross="246.00")
    first = await buffer.deliver(event, C)
    await buffer.bus.deliver(event.topic, C, first.to_bytes(), source="test")  # the same event again
    await buffer.deliver(event, C)  # the same invoice in a later, overlapping window (a new event)
    (entry,) = await buffer.entries()
    assert entry["ksef_number"] == event.ksef_number
    assert entry["gross_amount"] == "246.00" and entry["vat_amount_pln"] == "46.00"
    assert entry["decision"] == "unverified" and entry["decision_label"]["pl"] == "Niezweryfikowany"
    assert entry["period"] == "2026-11" and entry["seller"] == {"nip": SELLER, "name": event.seller.name}
    assert [line["kind"] for line in await buffer.log()] == ["invoice_received"]
    (announced,) = await buffer.outbox()
    assert (announced.status, announced.revision, announced.period) == ("unverified", 1, "2026-11")


async def test_a_malformed_event_is_dead_lettered_with_its_reason_and_stores_nothing(buffer: Buffer) -> None:
    await buffer.fetched(gross="10.00")
    good = invoice_fetched(C)
    raw = good.model_dump(mode="json")
    del raw["p_2"]
    envelope = Envelope(
        id=uuid.uuid4(),
        type="invoice.fetched",
        version=1,
        occurred_at=datetime.now(UTC),
        producer="ksef-gateway",
        client_nip=C,
        payload=raw,
    )
    await buffer.bus.deliver("invoice.fetched", C, envelope.to_bytes(), source="test")
    dead = buffer.app.state.runtime.definition.tables.dead_letter
    async with buffer.app.state.runtime.db.sessionmaker() as session:
        (reason,) = (await session.execute(select(dead.c.reason))).scalars().all()
    assert "p_2" in reason
    assert len(await buffer.entries()) == 1  # what was stored stays


async def test_decisions_are_stamped_logged_and_announced(buffer: Buffer) -> None:
    event = await buffer.fetched()
    entry = await buffer.entry(event.ksef_number)
    r = await buffer.decide(entry["id"], decision="book", description="Papier do biura")
    assert r.status_code == 200, r.text
    decided = r.json()
    assert decided["decision"] == "book" and decided["description"] == "Papier do biura"
    assert decided["decided_by"] == "owner-c" and decided["decided_by_side"] == "client"
    assert decided["decided_at"] is not None and decided["revision"] == 2
    # The same again changes nothing and announces nothing.
    assert (await buffer.decide(entry["id"], decision="book")).status_code == 200
    statuses = [(e.previous_status, e.status, e.revision, e.decision) for e in await buffer.outbox()]
    assert statuses == [(None, "unverified", 1, "unverified"), ("unverified", "book", 2, "book")]
    kinds = [(line["kind"], line["detail"].get("to")) for line in await buffer.log(entry_id=entry["id"])]
    assert kinds == [("invoice_received", None), ("decision_changed", "book")]
    # An empty description clears it; an unknown decision is a 422 problem.
    assert (await buffer.decide(entry["id"], description="")).json()["description"] is None
    bad = await buffer.decide(entry["id"], decision="maybe")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")


async def test_bulk_decisions_report_each_invoice(buffer: Buffer) -> None:
    events = [await buffer.fetched(gross=f"{10 + i}.00") for i in range(3)]
    ids = [(await buffer.entry(e.ksef_number))["id"] for e in events]
    missing = str(uuid.uuid4())
    r = await buffer.http.post(
        f"/clients/{C}/purchases/decisions",
        json={"entry_ids": [*ids, missing], "decision": "dont_book", "description": "Prywatne"},
        headers=buffer.headers("client"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] == 3 and body["refused"] == 1
    assert {x["result"] for x in body["results"] if x["entry_id"] != missing} == {"changed"}
    assert all(e["decision"] == "dont_book" and e["description"] == "Prywatne" for e in await buffer.entries())


async def test_the_booking_gate_lets_through_only_what_is_marked_to_book(buffer: Buffer) -> None:
    book, dont, unverified = [await buffer.fetched(gross=f"{i}00.00") for i in (1, 2, 3)]
    ids = {e.ksef_number: (await buffer.entry(e.ksef_number))["id"] for e in (book, dont, unverified)}
    await buffer.decide(ids[book.ksef_number], decision="book")
    await buffer.decide(ids[dont.ksef_number], decision="dont_book")
    report = await buffer.import_(*ids.values())
    by_number = {x["ksef_number"]: x for x in report["results"]}
    assert by_number[book.ksef_number]["result"] == "imported"
    assert by_number[dont.ksef_number]["reason"]["pl"] == "Status: Nie księguj"
    assert by_number[unverified.ksef_number]["reason"]["pl"] == "Status: Niezweryfikowany"
    assert report["changed"] == 1 and report["refused"] == 2
    imported = await buffer.entry(book.ksef_number)
    assert imported["imported_by"] == "accountant-1" and imported["imported_at"] is not None
    # An ERP retrying the batch by KSeF number changes nothing.
    again = await buffer.import_(ksef_numbers=[book.ksef_number])
    assert [x["result"] for x in again["results"]] == ["already_imported"]
    # Nobody changes what the office has booked.
    refused = await buffer.decide(ids[book.ksef_number], decision="dont_book")
    assert refused.status_code == 409 and refused.json()["type"].endswith("entry-imported")
    assert [e["ksef_number"] for e in await buffer.entries(who="office", imported="true")] == [book.ksef_number]
    kinds = [line["kind"] for line in await buffer.log()]
    assert kinds.count("imported") == 1 and kinds.count("import_refused") == 2


async def test_an_approved_month_is_closed_to_the_client_not_to_an_office_override(buffer: Buffer) -> None:
    november = await buffer.fetched(issued=date(2026, 11, 3))
    entry = await buffer.entry(november.ksef_number)
    await buffer.month("2026-11", approved=True, revision=1)
    assert (await buffer.entry(november.ksef_number))["month_approved"] is True
    refused = await buffer.decide(entry["id"], decision="book")
    assert refused.status_code == 409 and refused.json()["type"].endswith("month-approved")
    override = await buffer.decide(entry["id"], who="office", decision="book", description="Koszt wg umowy")
    assert override.status_code == 200 and override.json()["decided_by_side"] == "office"
    assert "override" in [line["kind"] for line in await buffer.log(entry_id=entry["id"])]
    # Unlocked (revision 2): the client decides again; a redelivered approval (revision 1) does not re-lock.
    await buffer.month("2026-11", approved=False, revision=2)
    await buffer.month("2026-11", approved=True, revision=1)
    assert (await buffer.decide(entry["id"], decision="dont_book")).status_code == 200
    (month,) = [
        m
        for m in (await buffer.http.get(f"/clients/{C}/months", headers=buffer.headers("client"))).json()
        if m["period"] == "2026-11"
    ]
    assert month["approved"] is False and month["dont_book"] == 1


async def test_an_invoice_arriving_in_an_approved_month_is_kept_and_flagged(buffer: Buffer) -> None:
    await buffer.fetched(issued=date(2026, 10, 30))
    await buffer.month("2026-10", approved=True, revision=1)
    late = await buffer.fetched(issued=date(2026, 10, 31))
    entry = await buffer.entry(late.ksef_number)
    assert entry["late_arrival"] is True and entry["decision"] == "unverified"
    months = (await buffer.http.get(f"/clients/{C}/months", headers=buffer.headers("office"))).json()
    (october,) = [m for m in months if m["period"] == "2026-10"]
    assert october["late_arrivals"] == 1 and october["entries"] == 2 and october["approved"] is True
    assert [line["kind"] for line in await buffer.log(entry_id=entry["id"])] == ["late_arrival"]


async def test_only_dont_book_goes_to_the_archive_and_comes_back(buffer: Buffer) -> None:
    kept, private = await buffer.fetched(), await buffer.fetched()
    kept_id, private_id = [(await buffer.entry(e.ksef_number))["id"] for e in (kept, private)]
    await buffer.decide(kept_id, decision="book")
    await buffer.decide(private_id, decision="dont_book")
    office = buffer.headers("office")
    refused = await buffer.http.post(f"/clients/{C}/purchases/{kept_id}/archive", headers=office)
    assert refused.status_code == 409 and refused.json()["type"].endswith("not-dont-book")
    archived = await buffer.http.post(f"/clients/{C}/purchases/{private_id}/archive", headers=office)
    assert archived.status_code == 200 and archived.json()["archived_at"] is not None
    assert [e["id"] for e in await buffer.entries()] == [kept_id]
    assert [e["id"] for e in await buffer.entries(archived="true")] == [private_id]
    gate = await buffer.import_(private_id)
    assert gate["results"][0]["reason"]["code"] == "archived"
    restored = await buffer.http.post(f"/clients/{C}/purchases/{private_id}/restore", headers=office)
    assert restored.status_code == 200 and restored.json()["archived_at"] is None
    assert sorted(e["id"] for e in await buffer.entries()) == sorted([kept_id, private_id])


async def test_suggestions_come_from_the_same_clients_history_only(buffer: Buffer) -> None:
    await open_clients(buffer.app, D)
    first = await buffer.fetched(seller_nip=SELLER, issued=date(2026, 10, 5))
    await buffer.decide((await buffer.entry(first.ksef_number))["id"], decision="dont_book", description="Prywatne")
    second = await buffer.fetched(seller_nip=SELLER, issued=date(2026, 11, 5))
    other_seller = await buffer.fetched(seller_nip=OTHER_SELLER)
    d_invoice = await buffer.fetched(D, seller_nip=SELLER)

    suggested = await buffer.entry(second.ksef_number)
    assert suggested["decision"] == "unverified"  # offered, not applied
    assert suggested["suggestion"] == {
        "decision": "dont_book",
        "description": "Prywatne",
        "based_on_ksef_number": first.ksef_number,
        "based_on_invoice_number": first.p_2,
        "decided_at": suggested["suggestion"]["decided_at"],
    }
    assert (await buffer.entry(other_seller.ksef_number))["suggestion"] is None
    (d_entry,) = await buffer.entries(who="client_d", nip=D)
    assert d_entry["ksef_number"] == d_invoice.ksef_number and d_entry["suggestion"] is None


async def test_a_correction_is_linked_to_its_original_whichever_arrives_first(buffer: Buffer) -> None:
    original = invoice_fetched(C, gross="500.00")
    correction = await buffer.fetched(invoice_type="KOR", gross="-100.00", corrects=original.ksef_number)
    assert (await buffer.entry(correction.ksef_number))["corrects_entry_id"] is None  # the original is not here yet
    await buffer.deliver(original, C)
    original_id = (await buffer.entry(original.ksef_number))["id"]
    linked = await buffer.entry(correction.ksef_number)
    assert linked["corrects_entry_id"] == original_id and linked["corrected_ksef_number"] == original.ksef_number
    one = await buffer.http.get(f"/clients/{C}/purchases/{original_id}", headers=buffer.headers("client"))
    assert one.json()["corrections"] == [linked["id"]]


async def test_filters_sorting_and_keyset_pages(buffer: Buffer) -> None:
    for i in range(23):
        await buffer.fetched(
            gross=f"{100 + i * 10}.00",
            seller_nip=SELLER if i % 2 else OTHER_SELLER,
            seller_name="Hurtownia Papieru" if i % 2 else "Stacja Paliw Orlik",
            issued=date(2026, 11 if i < 20 else 12, 1 + i % 20),
        )
    seen: list[str] = []
    cursor: str | None = None
    amounts: list[float] = []
    while True:
        params: dict[str, Any] = {"sort": "gross", "limit": 5, "period": "2026-11"}
        if cursor:
            params["cursor"] = cursor
        r = await buffer.http.get(f"/clients/{C}/purchases", params=params, headers=buffer.headers("office"))
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [e["id"] for e in page["items"]]
        amounts += [float(e["gross_amount"]) for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 20 and amounts == sorted(amounts)
    assert len(await buffer.entries(seller=SELLER, limit=100)) == 11
    assert len(await buffer.entries(seller="paliw", limit=100)) == 12
    assert [e["gross_amount"] for e in await buffer.entries(gross_min="150", gross_max="170", sort="gross")] == [
        "150.00",
        "160.00",
        "170.00",
    ]
    assert len(await buffer.entries(q="orlik", period="2026-12")) == 2
    bad = await buffer.http.get(
        f"/clients/{C}/purchases", params={"cursor": "not-a-cursor"}, headers=buffer.headers("client")
    )
    assert bad.status_code == 422 and bad.json()["type"].endswith("invalid-cursor")


async def test_the_erp_hand_off_as_json_and_csv(buffer: Buffer) -> None:
    book, other = await buffer.fetched(gross="123.00"), await buffer.fetched()
    await buffer.decide(
        (await buffer.entry(book.ksef_number))["id"], decision="book", description="Opis; z przecinkiem, też"
    )
    office = buffer.headers("office")
    ready = (await buffer.http.get(f"/clients/{C}/ready", params={"period": "2026-11"}, headers=office)).json()
    assert [e["ksef_number"] for e in ready] == [book.ksef_number]
    r = await buffer.http.get(f"/clients/{C}/ready.csv", params={"period": "2026-11"}, headers=office)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(r.text)))
    assert row["ksef_number"] == book.ksef_number and row["description"] == "Opis; z przecinkiem, też"
    assert row["gross_amount"] == "123.00"
    log_csv = await buffer.http.get(f"/clients/{C}/communication-log.csv", headers=office)
    kinds = [line["kind"] for line in csv.DictReader(io.StringIO(log_csv.text))]
    assert kinds == ["invoice_received", "invoice_received", "decision_changed"]
    assert other.ksef_number not in r.text


async def test_every_office_read_is_in_the_clients_ledger_and_only_the_client_reads_it(buffer: Buffer) -> None:
    event = await buffer.fetched()
    entry_id = (await buffer.entry(event.ksef_number))["id"]  # the client's own read: not recorded
    office = buffer.headers("office")
    await buffer.http.get(f"/clients/{C}/purchases", params={"period": "2026-11"}, headers=office)
    await buffer.http.get(f"/clients/{C}/purchases/{entry_id}", headers=office)
    await buffer.http.get(f"/clients/{C}/ready.csv", headers=office)
    api_key = buffer.tokens.issue_api_key(sub="erp-key-1", perms=["buffer.read"], nips=["*"])
    assert (await buffer.http.get(f"/clients/{C}/ready", headers={"X-API-Key": api_key})).status_code == 200
    r = await buffer.http.get(f"/clients/{C}/access-ledger", headers=buffer.headers("client"))
    assert r.status_code == 200, r.text
    lines = r.json()["items"]
    assert [(x["action"], x["principal_id"], x["principal_type"]) for x in reversed(lines)] == [
        ("list", "accountant-1", "user"),
        ("read", "accountant-1", "user"),
        ("export_csv", "accountant-1", "user"),
        ("export_json", "erp-key-1", "api_key"),
    ]
    assert all(x["org_id"] == str(DEFAULT_OFFICE) for x in lines)
    assert lines[-2]["target"] == event.ksef_number or lines[-3]["target"] == event.ksef_number
    # The office has audit.read in its own organisation, not in the client's ledger.
    assert (await buffer.http.get(f"/clients/{C}/access-ledger", headers=office)).status_code == 404


async def test_documents_without_the_gateway_are_a_503_logged_and_nothing_is_recorded_as_read(buffer: Buffer) -> None:
    event = await buffer.fetched()
    entry_id = (await buffer.entry(event.ksef_number))["id"]
    office = buffer.headers("office")
    for path in (f"purchases/{entry_id}/xml", f"purchases/{entry_id}/preview"):
        r = await buffer.http.get(f"/clients/{C}/{path}", headers=office)
        assert r.status_code == 503 and r.json()["type"].endswith("/gateway-unavailable"), r.text
    failures = [x for x in await buffer.log() if x["kind"] == "document_failure"]
    assert len(failures) == 2 and failures[0]["ksef_number"] == event.ksef_number
    assert failures[0]["detail"] == {"code": "gateway-unavailable"}
    # Nothing was served, so nothing is in the client's ledger.
    ledger = (await buffer.http.get(f"/clients/{C}/access-ledger", headers=buffer.headers("client"))).json()
    assert ledger["items"] == []
    # An empty selection is an empty bundle (the gateway is not needed for nothing).
    empty = await buffer.http.get(f"/clients/{C}/ready.zip", params={"period": "2026-10"}, headers=office)
    assert empty.status_code == 200 and empty.headers["content-type"] == "application/zip"


ENDPOINTS = [
    ("GET", "/clients/{nip}/purchases", None),
    ("GET", "/clients/{nip}/purchases/{id}", None),
    ("PATCH", "/clients/{nip}/purchases/{id}", {"decision": "book"}),
    ("POST", "/clients/{nip}/purchases/decisions", {"entry_ids": ["{id}"], "decision": "book"}),
    ("POST", "/clients/{nip}/purchases/imports", {"entry_ids": ["{id}"]}),
    ("POST", "/clients/{nip}/purchases/{id}/archive", None),
    ("POST", "/clients/{nip}/purchases/{id}/restore", None),
    ("GET", "/clients/{nip}/ready", None),
    ("GET", "/clients/{nip}/ready.csv", None),
    ("GET", "/clients/{nip}/ready.zip", None),
    ("GET", "/clients/{nip}/purchases/{id}/xml", None),
    ("GET", "/clients/{nip}/purchases/{id}/preview", None),
    ("GET", "/clients/{nip}/months", None),
    ("GET", "/clients/{nip}/communication-log", None),
    ("GET", "/clients/{nip}/communication-log.csv", None),
    ("GET", "/clients/{nip}/access-ledger", None),
]


async def _statuses(buffer: Buffer, who: str, nip: str, entry_id: str) -> dict[str, int]:
    found = {}
    for method, path, body in ENDPOINTS:
        url = path.format(nip=nip, id=entry_id)
        json_body = None
        if body is not None:
            json_body = {k: [entry_id] if v == ["{id}"] else v for k, v in body.items()}
        r = await buffer.http.request(method, url, json=json_body, headers=buffer.headers(who))
        found[f"{method} {path}"] = r.status_code
    return found


async def test_another_client_or_a_revoked_office_gets_404_everywhere(buffer: Buffer) -> None:
    d_event = await buffer.fetched(D)
    async with buffer.app.state.runtime.db.sessionmaker() as session:
        table = buffer.app.state.runtime.definition.metadata.tables["buffer.purchase_entry"]
        d_id = str((await session.execute(select(table.c.id).where(table.c.client_nip == D))).scalar_one())
    # The office has no integration with D; client C is not D.
    for who in ("office", "client"):
        statuses = await _statuses(buffer, who, D, d_id)
        assert set(statuses.values()) == {404}, (who, statuses)
    # D's own owner reads it (the ledger included: it is D's).
    r = await buffer.http.get(f"/clients/{D}/purchases/{d_id}", headers=buffer.headers("client_d"))
    assert r.status_code == 200 and r.json()["ksef_number"] == d_event.ksef_number
    # The office reads C ... until the integration is revoked: the very next request is refused.
    c_event = await buffer.fetched(C)
    c_id = (await buffer.entry(c_event.ksef_number))["id"]
    assert (
        await buffer.http.get(f"/clients/{C}/purchases/{c_id}", headers=buffer.headers("office"))
    ).status_code == 200
    await open_clients(buffer.app, C, state="revoked")
    statuses = await _statuses(buffer, "office", C, c_id)
    assert set(statuses.values()) == {404}, statuses
    async with buffer.app.state.runtime.db.sessionmaker() as session:
        table = buffer.app.state.runtime.definition.metadata.tables["buffer.purchase_entry"]
        assert (await session.execute(select(func.count()).select_from(table))).scalar_one() == 2
