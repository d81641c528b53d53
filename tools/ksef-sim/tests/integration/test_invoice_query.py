"""POST /invoices/query/metadata and GET /invoices/ksef/{ksefNumber} over HTTP (REFERENCE.md §9).

Invoices are written straight into ``sim.store`` (the sending side is tested on its own); the clock is frozen so
every visibility rule is driven by ``sim.clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ksef_sim.crypto import sha256_b64
from ksef_sim.records import AuthorizedSubject, FormCode, PartyIdentifier, StoredInvoice, ThirdSubject
from ksef_sim.refs import ksef_number
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SELLER = "5265877635"
BUYER = "7352765225"
THIRD = "3225081610"
AUTHORIZED = "9462527947"
STRANGER = "1111111111"
SUBUNIT = "5265877635-00013"
JITTER_S = 60.0

# InvoiceMetadata's required properties in the 2.6.0 spec.
REQUIRED_METADATA = {
    "ksefNumber",
    "invoiceNumber",
    "issueDate",
    "invoicingDate",
    "acquisitionDate",
    "permanentStorageDate",
    "seller",
    "buyer",
    "netAmount",
    "grossAmount",
    "vatAmount",
    "currency",
    "invoicingMode",
    "invoiceType",
    "formCode",
    "isSelfInvoicing",
    "hasAttachment",
    "invoiceHash",
}
OPTIONAL_METADATA = {"hashOfCorrectedInvoice", "thirdSubjects", "authorizedSubject"}


@pytest.fixture
def sim_settings() -> SimSettings:
    return SimSettings(
        database_path=None,
        public_base_url="https://ksef-sim.test",
        rate_limits=RateLimitMode.OFF,
        permanent_storage_delay_s=0,
        permanent_storage_jitter_s=JITTER_S,
        random_seed=1234,
    )


@pytest.fixture(autouse=True)
def frozen(sim: Sim) -> None:
    sim.clock.set(NOW, frozen=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_sequence = iter(range(1, 1_000_000))


def add_invoice(sim: Sim, acquired: datetime = NOW - timedelta(hours=1), **overrides: Any) -> StoredInvoice:
    """An accepted invoice and its XML blob; storage and indexing at acquisition unless overridden."""
    seq = next(_sequence)
    xml = f'<?xml version="1.0" encoding="UTF-8"?><Faktura><P_2>FV/{seq}</P_2></Faktura>'.encode()
    fields: dict[str, Any] = {
        "ksef_number": ksef_number(SELLER, acquired, seq),
        "invoice_number": f"FV/{seq}",
        "issue_date": acquired.date(),
        "invoicing_date": acquired - timedelta(seconds=5),
        "acquisition_date": acquired,
        "permanent_storage_date": acquired,
        "indexed_at": acquired,
        "seller_nip": SELLER,
        "seller_name": "Sprzedawca sp. z o.o.",
        "buyer_identifier": PartyIdentifier(type="Nip", value=BUYER),
        "buyer_name": "Nabywca S.A.",
        "net_amount": Decimal("100.00"),
        "vat_amount": Decimal("23.00"),
        "gross_amount": Decimal("123.00"),
        "currency": "PLN",
        "invoicing_mode": "Online",
        "invoice_type": "Vat",
        "form_code": FormCode(systemCode="FA (3)", schemaVersion="1-0E", value="FA"),
        "invoice_hash": sha256_b64(xml),
        "invoice_size": len(xml),
        "session_reference_number": "20260310-SO-0000000000-0000000000-00",
        "invoice_reference_number": f"20260310-EE-{seq:010X}-0000000000-00",
        "context_type": "Nip",
        "context_value": SELLER,
    }
    fields.update(overrides)
    invoice = StoredInvoice(**fields)
    sim.store.put(invoice)
    sim.store.put_blob(invoice.blob_name, xml)
    return invoice


def query_body(subject: str = "Subject1", date_type: str = "PermanentStorage", **extra: Any) -> dict[str, Any]:
    date_range: dict[str, Any] = {"dateType": date_type, "from": (NOW - timedelta(days=30)).isoformat()}
    date_range.update(extra.pop("dateRange", {}))
    return {"subjectType": subject, "dateRange": date_range, **extra}


Query = Callable[..., Any]


@pytest.fixture
def query(client: httpx.AsyncClient, mint_access: Callable[..., str]) -> Query:
    async def run(body: dict[str, Any], nip: str = SELLER, expect: int = 200, **params: Any) -> Any:
        response = await client.post(
            "/invoices/query/metadata", json=body, params=params, headers=bearer(mint_access(nip))
        )
        assert response.status_code == expect, response.text
        return response.json()

    return run


def numbers(body: dict[str, Any]) -> list[str]:
    return [item["ksefNumber"] for item in body["invoices"]]


def error_code(body: dict[str, Any]) -> int:
    code: int = body["exception"]["exceptionDetailList"][0]["exceptionCode"]
    return code


# --- response shape --------------------------------------------------------------------------------------------------


async def test_metadata_has_every_spec_field_with_numbers_for_amounts(sim: Sim, query: Query) -> None:
    invoice = add_invoice(
        sim,
        net_amount=Decimal("35260.63"),
        vat_amount=Decimal("8109.94"),
        gross_amount=Decimal("43370.57"),
        hash_of_corrected_invoice="o+nMBU8n8TAhy6EjbcdYdHSZVbUspqmCKqOPLhy3zIQ=",
        third_subjects=[ThirdSubject(identifier=PartyIdentifier(type="InternalId", value=SUBUNIT), name="Jdn", role=4)],
        authorized_subject=AuthorizedSubject(nip=AUTHORIZED, name="Upoważniony", role=2),
    )
    body = await query(query_body())
    assert set(body) == {"hasMore", "isTruncated", "permanentStorageHwmDate", "invoices"}
    (item,) = body["invoices"]
    assert set(item) == REQUIRED_METADATA | OPTIONAL_METADATA
    assert item["ksefNumber"] == invoice.ksef_number
    assert item["issueDate"] == invoice.issue_date.isoformat()
    assert datetime.fromisoformat(item["acquisitionDate"]) == invoice.acquisition_date
    assert (item["netAmount"], item["vatAmount"], item["grossAmount"]) == (35260.63, 8109.94, 43370.57)
    assert item["seller"] == {"nip": SELLER, "name": "Sprzedawca sp. z o.o."}
    assert item["buyer"] == {"identifier": {"type": "Nip", "value": BUYER}, "name": "Nabywca S.A."}
    assert item["formCode"] == {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"}
    assert item["thirdSubjects"] == [{"identifier": {"type": "InternalId", "value": SUBUNIT}, "name": "Jdn", "role": 4}]
    assert item["authorizedSubject"] == {"nip": AUTHORIZED, "name": "Upoważniony", "role": 2}
    assert item["invoiceHash"] == invoice.invoice_hash


async def test_hwm_is_null_for_issue_and_invoicing_dates(sim: Sim, query: Query) -> None:
    add_invoice(sim)
    for date_type in ("Issue", "Invoicing"):
        body = await query(query_body(date_type=date_type))
        assert body["permanentStorageHwmDate"] is None
        assert len(body["invoices"]) == 1


# --- HWM -------------------------------------------------------------------------------------------------------------


async def test_late_indexed_invoice_is_hidden_lies_after_the_hwm_and_appears_later(sim: Sim, query: Query) -> None:
    early = add_invoice(sim, acquired=NOW - timedelta(minutes=10))
    # Written to permanent storage 30 s ago, indexed only in 20 s: within the jitter, after the HWM (now - 60 s).
    late = add_invoice(
        sim,
        acquired=NOW - timedelta(seconds=30),
        permanent_storage_date=NOW - timedelta(seconds=30),
        indexed_at=NOW + timedelta(seconds=20),
    )
    body = await query(query_body())
    assert numbers(body) == [early.ksef_number]
    hwm = datetime.fromisoformat(body["permanentStorageHwmDate"])
    assert hwm == NOW - timedelta(seconds=JITTER_S)
    assert late.permanent_storage_date > hwm  # the client that stops at the HWM will ask again from there

    # Issue/Invoicing queries do not wait for the index.
    assert late.ksef_number in numbers(await query(query_body(date_type="Invoicing")))

    sim.clock.advance(20)
    assert numbers(await query(query_body())) == [early.ksef_number, late.ksef_number]
    # Restricted to the HWM it stays out until the HWM passes its permanent-storage date.
    restricted = query_body(dateRange={"restrictToPermanentStorageHwmDate": True})
    assert numbers(await query(restricted)) == [early.ksef_number]
    sim.clock.advance(JITTER_S - 20 + 30)
    assert numbers(await query(restricted)) == [early.ksef_number, late.ksef_number]


async def test_incremental_windows_from_the_hwm_miss_nothing(sim: Sim, query: Query) -> None:
    """The recommended client loop: restrict to the HWM, next `from` = reported HWM, dedupe by KSeF number."""
    seen: set[str] = set()
    expected: set[str] = set()
    start = NOW - timedelta(hours=1)
    for step in range(6):
        now = sim.clock.now()
        # Every 20 s an invoice lands with an indexing lag up to the jitter, out of permanent-storage order.
        lag = [50, 5, 35, 59, 0, 20][step]
        inv = add_invoice(
            sim, acquired=now - timedelta(seconds=1), indexed_at=now - timedelta(seconds=1) + timedelta(seconds=lag)
        )
        expected.add(inv.ksef_number)
        body = await query(query_body(dateRange={"from": start.isoformat(), "restrictToPermanentStorageHwmDate": True}))
        seen.update(numbers(body))
        start = datetime.fromisoformat(body["permanentStorageHwmDate"])
        sim.clock.advance(20)
    sim.clock.advance(JITTER_S)
    body = await query(query_body(dateRange={"from": start.isoformat(), "restrictToPermanentStorageHwmDate": True}))
    seen.update(numbers(body))
    assert seen == expected


async def test_from_after_the_hwm_with_restriction_is_21183(query: Query) -> None:
    body = query_body(
        dateRange={"from": (NOW - timedelta(seconds=10)).isoformat(), "restrictToPermanentStorageHwmDate": True}
    )
    assert error_code(await query(body, expect=400)) == 21183
    # Without the restriction the same window is fine.
    await query(query_body(dateRange={"from": (NOW - timedelta(seconds=10)).isoformat()}))


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "params"),
    [
        (query_body(dateRange={"from": (NOW - timedelta(days=93)).isoformat()}), {}),  # > 3 months up to now
        (query_body(dateRange={"from": "2025-01-01T00:00:00Z", "to": "2025-04-02T00:00:00Z"}), {}),
        (query_body(dateRange={"to": (NOW - timedelta(days=31)).isoformat()}), {}),  # to before from
        (query_body(), {"pageSize": 9}),
        (query_body(), {"pageSize": 251}),
        (query_body(), {"pageOffset": -1}),
        (query_body(), {"sortOrder": "Up"}),
        ({"dateRange": query_body()["dateRange"]}, {}),  # subjectType is required
        (query_body(subject="Subject9"), {}),
        (query_body(currencyCodes=["ZZZ"]), {}),
        (query_body(sellerNip="123"), {}),
        (query_body(invoiceTypes=["Faktura"]), {}),
    ],
)
async def test_invalid_requests_are_21405(query: Query, body: dict[str, Any], params: dict[str, Any]) -> None:
    assert error_code(await query(body, expect=400, **params)) == 21405


async def test_naive_datetimes_are_warsaw_time(sim: Sim, query: Query) -> None:
    # 11:30Z = 12:30 in Warsaw (CET). A window ending at 12:29 local time excludes it, 12:31 includes it.
    inv = add_invoice(sim, acquired=datetime(2026, 3, 10, 11, 30, tzinfo=UTC))
    window = {"from": "2026-03-10T00:00:00", "to": "2026-03-10T12:29:00"}
    assert numbers(await query(query_body(dateRange=window))) == []
    window["to"] = "2026-03-10T12:31:00"
    assert numbers(await query(query_body(dateRange=window))) == [inv.ksef_number]


# --- paging, sorting, truncation -----------------------------------------------------------------------------------


async def test_page_offset_is_a_page_index(sim: Sim, query: Query) -> None:
    created = [add_invoice(sim, acquired=NOW - timedelta(minutes=100 - i)) for i in range(25)]
    pages = [await query(query_body(), pageOffset=offset, pageSize=10) for offset in range(3)]
    assert [numbers(p) for p in pages] == [
        [c.ksef_number for c in created[0:10]],
        [c.ksef_number for c in created[10:20]],
        [c.ksef_number for c in created[20:25]],
    ]
    assert [p["hasMore"] for p in pages] == [True, True, False]
    assert not any(p["isTruncated"] for p in pages)


async def test_sort_field_follows_the_date_type(sim: Sim, query: Query) -> None:
    a = add_invoice(sim, acquired=NOW - timedelta(hours=3), issue_date=date(2026, 3, 9))
    b = add_invoice(sim, acquired=NOW - timedelta(hours=2), issue_date=date(2026, 3, 1))
    c = add_invoice(sim, acquired=NOW - timedelta(hours=1), issue_date=date(2026, 3, 5))
    assert numbers(await query(query_body())) == [a.ksef_number, b.ksef_number, c.ksef_number]
    assert numbers(await query(query_body(), sortOrder="Desc")) == [c.ksef_number, b.ksef_number, a.ksef_number]
    assert numbers(await query(query_body(date_type="Issue"))) == [b.ksef_number, c.ksef_number, a.ksef_number]
    by_issue_desc = await query(query_body(date_type="Issue"), sortOrder="Desc")
    assert numbers(by_issue_desc) == [a.ksef_number, c.ksef_number, b.ksef_number]


async def test_ten_thousand_cap_truncates_and_continuing_from_the_last_date_gets_the_rest(
    sim: Sim, query: Query
) -> None:
    base = NOW - timedelta(days=20)
    with sim.store.batch():
        created = [add_invoice(sim, acquired=base + timedelta(minutes=i)) for i in range(10_050)]
    last_page = await query(query_body(), pageOffset=39, pageSize=250)
    assert (last_page["hasMore"], last_page["isTruncated"]) == (True, True)
    assert numbers(last_page)[-1] == created[9_999].ksef_number
    beyond = await query(query_body(), pageOffset=40, pageSize=250)
    assert beyond["invoices"] == []
    # The client moves `from` to the last record's date and starts again at page 0.
    rest = await query(
        query_body(dateRange={"from": last_page["invoices"][-1]["permanentStorageDate"]}), pageOffset=0, pageSize=250
    )
    assert (rest["hasMore"], rest["isTruncated"]) == (False, False)
    assert numbers(rest) == [c.ksef_number for c in created[9_999:]]  # the boundary record overlaps


# --- filters and visibility ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "hit", "miss"),
    [
        ({"invoiceNumber": "FV/SPECIAL"}, {"invoice_number": "FV/SPECIAL"}, {}),
        ({"amount": {"type": "Brutto", "from": 100, "to": 200}}, {}, {"gross_amount": Decimal("250")}),
        ({"amount": {"type": "Netto", "to": 0}}, {"net_amount": Decimal("-10")}, {}),
        ({"amount": {"type": "Vat", "from": 50.5}}, {"vat_amount": Decimal("50.50")}, {}),
        ({"buyerIdentifier": {"type": "Nip", "value": BUYER}}, {}, {"buyer_identifier": PartyIdentifier(type="None")}),
        ({"buyerIdentifier": {"type": "VatUe"}}, {"buyer_identifier": PartyIdentifier(type="VatUe", value="DE1")}, {}),
        ({"currencyCodes": ["EUR"]}, {"currency": "EUR"}, {}),
        ({"invoicingMode": "Offline"}, {"invoicing_mode": "Offline"}, {}),
        ({"isSelfInvoicing": True}, {"is_self_invoicing": True}, {}),
        (
            {"formType": "FA_RR"},
            {"form_code": FormCode(systemCode="FA_RR (1)", schemaVersion="1-1E", value="FA_RR")},
            {},
        ),
        ({"invoiceTypes": ["Zal"]}, {"invoice_type": "Zal"}, {}),
        ({"hasAttachment": True}, {"has_attachment": True}, {}),
    ],
)
async def test_each_filter(
    sim: Sim, query: Query, extra: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    wanted = add_invoice(sim, **hit)
    add_invoice(sim, **miss)
    assert numbers(await query(query_body(**extra))) == [wanted.ksef_number]


async def test_ksef_number_and_seller_nip_filters(sim: Sim, query: Query) -> None:
    wanted = add_invoice(sim)
    add_invoice(sim)
    assert numbers(await query(query_body(ksefNumber=wanted.ksef_number))) == [wanted.ksef_number]
    add_invoice(sim, seller_nip=THIRD)
    as_buyer = await query(query_body(subject="Subject2", sellerNip=THIRD), nip=BUYER)
    assert len(as_buyer["invoices"]) == 1
    assert as_buyer["invoices"][0]["seller"]["nip"] == THIRD


async def test_each_subject_type_sees_its_own_invoices_only(sim: Sim, client: httpx.AsyncClient, query: Query) -> None:
    sold = add_invoice(sim)
    bought = add_invoice(sim, seller_nip=THIRD, buyer_identifier=PartyIdentifier(type="Nip", value=SELLER))
    third = add_invoice(
        sim,
        seller_nip=THIRD,
        third_subjects=[ThirdSubject(identifier=PartyIdentifier(type="Nip", value=SELLER), role=2)],
    )
    authorized = add_invoice(sim, seller_nip=THIRD, authorized_subject=AuthorizedSubject(nip=SELLER, role=1))
    assert numbers(await query(query_body("Subject1"))) == [sold.ksef_number]
    assert numbers(await query(query_body("Subject2"))) == [bought.ksef_number]
    assert numbers(await query(query_body("Subject3"))) == [third.ksef_number]
    assert numbers(await query(query_body("SubjectAuthorized"))) == [authorized.ksef_number]
    for subject in ("Subject1", "Subject2", "Subject3", "SubjectAuthorized"):
        assert (await query(query_body(subject), nip=STRANGER))["invoices"] == []


async def test_subunit_context_sees_invoices_naming_its_internal_id(sim: Sim, client: httpx.AsyncClient) -> None:
    inv = add_invoice(
        sim, third_subjects=[ThirdSubject(identifier=PartyIdentifier(type="InternalId", value=SUBUNIT), role=4)]
    )
    add_invoice(sim)
    token, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(minutes=15),
        auth_reference_number="20260310-AU-0000000000-0000000000-00",
        context=Identifier("InternalId", SUBUNIT),
        subject=Identifier("Nip", SELLER),
        auth_method="Token",
        permissions={"InvoiceRead"},
    )
    response = await client.post("/invoices/query/metadata", json=query_body("Subject3"), headers=bearer(token))
    assert numbers(response.json()) == [inv.ksef_number]
    download = await client.get(f"/invoices/ksef/{inv.ksef_number}", headers=bearer(token))
    assert download.status_code == 200


async def test_invoice_read_is_required(sim: Sim, client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    inv = add_invoice(sim)
    token = mint_access(SELLER, permissions={"InvoiceWrite"})
    response = await client.post("/invoices/query/metadata", json=query_body(), headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["reasonCode"] == "missing-permissions"
    assert (await client.get(f"/invoices/ksef/{inv.ksef_number}", headers=bearer(token))).status_code == 403
    assert (await client.post("/invoices/query/metadata", json=query_body())).status_code == 401


# --- download ------------------------------------------------------------------------------------------------------


async def test_download_returns_the_exact_bytes_with_their_hash(
    sim: Sim, client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    inv = add_invoice(sim)
    for nip in (SELLER, BUYER):
        response = await client.get(f"/invoices/ksef/{inv.ksef_number}", headers=bearer(mint_access(nip)))
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/xml")
        assert response.content == sim.store.get_blob(inv.blob_name)
        assert response.headers["x-ms-meta-hash"] == inv.invoice_hash == sha256_b64(response.content)


async def test_download_accepts_the_dashed_ksef_number(
    sim: Sim, client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    inv = add_invoice(sim)
    nip, day, technical, check = inv.ksef_number.split("-")
    dashed = f"{nip}-{day}-{technical[:6]}-{technical[6:]}-{check}"
    response = await client.get(f"/invoices/ksef/{dashed}", headers=bearer(mint_access(SELLER)))
    assert response.status_code == 200


async def test_download_errors(sim: Sim, client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    seller = bearer(mint_access(SELLER))
    unknown = ksef_number(SELLER, NOW, 0xFFFFFF)
    assert error_code((await client.get(f"/invoices/ksef/{unknown}", headers=seller)).json()) == 21164
    # Not a party: indistinguishable from a missing invoice.
    inv = add_invoice(sim)
    stranger = await client.get(f"/invoices/ksef/{inv.ksef_number}", headers=bearer(mint_access(STRANGER)))
    assert (stranger.status_code, error_code(stranger.json())) == (400, 21164)
    # Acquired but not yet in permanent storage: retry later.
    pending = add_invoice(sim, acquired=NOW - timedelta(seconds=1), permanent_storage_date=NOW + timedelta(seconds=2))
    pending.indexed_at = pending.permanent_storage_date
    sim.store.put(pending)
    assert error_code((await client.get(f"/invoices/ksef/{pending.ksef_number}", headers=seller)).json()) == 21165
    sim.clock.advance(2)
    assert (await client.get(f"/invoices/ksef/{pending.ksef_number}", headers=seller)).status_code == 200
    # Not yet acquired (KSeF number not assigned yet): does not exist.
    future = add_invoice(sim, acquired=NOW + timedelta(minutes=5))
    assert error_code((await client.get(f"/invoices/ksef/{future.ksef_number}", headers=seller)).json()) == 21164
    bad = await client.get("/invoices/ksef/not-a-number", headers=seller)
    assert (bad.status_code, error_code(bad.json())) == (400, 21405)
