"""The purchase-sync and purchase-invoice API over the real app (SQLite and PostgreSQL): auth rules, 404s as
problem details, paging, raw XML with its hash, "fetch now" honouring the minimum poll interval, preferences."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr

from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.main import create_app
from ksef_gateway.purchases import repository as purchases
from ksef_gateway.purchases.domain import invoice_row, parse_invoice_header
from ksef_gateway.settings import GatewaySettings, SyncSettings
from ksef_gateway.sync import repository as sync_repository
from ksef_gateway.sync.domain import SubjectType
from ksef_gateway.vault.domain import Scope
from ksef_gateway.vault.service import ActiveContext
from ksef_gateway.wiring import Gateway
from platform_common.auth import Authenticator
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import TokenFactory, open_clients

CLIENT, OTHER = "7777777702", "1112223303"
SAMPLE = Path("/work/shared/ksef/samples/invoices/fa3/csharp-invoice-template-fa-3.xml")
NUMBERS = [f"5265877635-20260201-0100000000{i:02X}-00" for i in range(3)]


@dataclass
class Api:
    http: httpx.AsyncClient
    tokens: TokenFactory
    gateway: Gateway

    def headers(self, perms: list[str], nips: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.mint(perms=perms, nips=nips or [CLIENT])}"}


async def _api(db_url: str, tmp_path: Path, sync: SyncSettings) -> AsyncIterator[Api]:
    tokens = TokenFactory()
    settings = GatewaySettings(
        db=DatabaseSettings(url=SecretStr(db_url)),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
        sync=sync,
        data_dir=tmp_path,
    )
    app = create_app(settings, migrate_on_start=True)
    authenticator: Authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = tokens.clock, tokens.transport()
    async with LifespanManager(app) as manager:
        await open_clients(app, CLIENT, OTHER)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Api(http, tokens, Gateway.of(app.state.runtime))


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    async for value in _api(db_url, tmp_path, SyncSettings(enabled=False)):
        yield value


def _xml(number: int) -> bytes:
    text = SAMPLE.read_text(encoding="utf-8").replace("#nip#", "5265877635").replace("#invoice_number#", f"{number}")
    return text.replace("#subject2nip#", CLIENT).encode()


async def _store_invoices(gateway: Gateway, now: datetime) -> list[bytes]:
    xmls = []
    async with gateway.runtime.db.sessionmaker() as session, session.begin():
        await sync_repository.ensure_states(session, [(CLIENT, SubjectType.SUBJECT2)], now)
        for index, number in enumerate(NUMBERS):
            xml = _xml(index)
            xmls.append(xml)
            await purchases.insert_invoices(
                session,
                [
                    invoice_row(
                        nip=CLIENT,
                        ksef_number=number,
                        subject_type=SubjectType.SUBJECT2.value,
                        header=parse_invoice_header(xml),
                        xml=xml,
                        invoice_hash=sha256_b64(xml),
                        acquisition_date=now - timedelta(hours=3 - index),
                        permanent_storage_date=now - timedelta(hours=3 - index, seconds=-2),
                        invoicing_date=None,
                        fetched_at=now,
                        fetched_via="export",
                        event_id=uuid.uuid4(),
                    )
                ],
            )
        await sync_repository.update_state(
            session,
            CLIENT,
            SubjectType.SUBJECT2,
            now,
            hwm=now - timedelta(minutes=10),
            checkpoint=now - timedelta(minutes=10),
            last_run_at=now - timedelta(minutes=5),
            last_success_at=now - timedelta(minutes=5),
            next_run_at=now + timedelta(minutes=10),
            backfilled=True,
            last_delta=3,
        )
    return xmls


def _active(gateway: Gateway, *, subject3: bool = False) -> None:
    async def active_contexts() -> list[ActiveContext]:
        return [ActiveContext(CLIENT, Environment.SIM, Scope.READ, subject3=subject3, subject_authorized=False)]

    gateway.vault.active_contexts = active_contexts  # type: ignore[method-assign]


async def test_sync_state_per_subject_with_lag_and_budget(api: Api) -> None:
    now = datetime.now(UTC)
    await _store_invoices(api.gateway, now)
    _active(api.gateway, subject3=True)
    r = await api.http.get(f"/clients/{CLIENT}/sync", headers=api.headers(["ksef.read"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["invoices_stored"] == 3 and body["credential_active"] is True
    assert body["month_close_day"] == 20 and body["backfill_months"] == 3
    subjects = {s["subject_type"]: s for s in body["subjects"]}
    assert set(subjects) == {"Subject2", "Subject3"}
    s2 = subjects["Subject2"]
    assert s2["enabled"] and s2["backfilled"] and s2["invoices_last_run"] == 3 and s2["last_error"] is None
    assert 590 <= s2["lag_seconds"] <= 700
    assert subjects["Subject3"]["hwm"] is None and subjects["Subject3"]["enabled"]
    assert set(body["budget"]) == {"invoiceExport", "invoiceMetadata", "invoiceDownload"}
    assert body["budget"]["invoiceExport"]["limited"] is True


@pytest.mark.parametrize(
    ("perms", "nips", "status"),
    [(["ksef.read"], [CLIENT], 200), (["buffer.read"], [CLIENT], 403), (["ksef.read"], [OTHER], 404)],
)
async def test_reading_rules(api: Api, perms: list[str], nips: list[str], status: int) -> None:
    await _store_invoices(api.gateway, datetime.now(UTC))
    for path in (f"/clients/{CLIENT}/sync", f"/clients/{CLIENT}/invoices", f"/clients/{CLIENT}/invoices/{NUMBERS[0]}"):
        r = await api.http.get(path, headers=api.headers(perms, nips))
        assert r.status_code == status, (path, r.text)
    assert (await api.http.get(f"/clients/{CLIENT}/invoices")).status_code == 401


async def test_unknown_clients_and_invoices_are_404_problems(api: Api) -> None:
    headers = api.headers(["ksef.read", "ksef.credentials.manage"], ["*"])
    for method, path in [
        ("GET", f"/clients/{CLIENT}/sync"),
        ("GET", f"/clients/{CLIENT}/invoices"),
        ("GET", f"/clients/{CLIENT}/invoices/{NUMBERS[0]}"),
        ("GET", f"/clients/{CLIENT}/invoices/{NUMBERS[0]}/xml"),
        ("GET", f"/clients/{CLIENT}/invoices/not-a-ksef-number"),
        ("POST", f"/clients/{CLIENT}/sync/fetch-now"),
    ]:
        r = await api.http.request(method, path, headers=headers)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    r = await api.http.patch(f"/clients/{CLIENT}/sync", json={"month_close_day": 5}, headers=headers)
    assert r.status_code == 404
    r = await api.http.get("/clients/123/sync", headers=headers)
    assert r.status_code == 422 and r.json()["type"].endswith("invalid-nip")


async def test_invoices_are_paged_in_receipt_order_and_the_xml_comes_back_byte_for_byte(api: Api) -> None:
    xmls = await _store_invoices(api.gateway, datetime.now(UTC))
    headers = api.headers(["ksef.read"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = await api.http.get(f"/clients/{CLIENT}/invoices", params=params, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [i["ksef_number"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == NUMBERS

    r = await api.http.get(f"/clients/{CLIENT}/invoices/{NUMBERS[1]}", headers=headers)
    assert r.status_code == 200
    meta = r.json()
    assert meta["invoice_number"] == "FA/GRQMB-1/05/2025" and meta["gross_amount"] == "53.63"
    assert meta["seller"] == {"identifier_type": "Nip", "identifier": "5265877635", "name": meta["seller"]["name"]}
    assert meta["xml_ref"] == f"/clients/{CLIENT}/invoices/{NUMBERS[1]}/xml"

    r = await api.http.get(meta["xml_ref"], headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/xml"
    assert r.content == xmls[1]
    assert r.headers["x-ksef-invoice-hash"] == sha256_b64(xmls[1]) == meta["invoice_hash"]

    r = await api.http.get(f"/clients/{CLIENT}/invoices", params={"cursor": "!!"}, headers=headers)
    assert r.status_code == 422


async def test_fetch_now_waits_for_the_minimum_poll_interval(api: Api) -> None:
    now = datetime.now(UTC)
    await _store_invoices(api.gateway, now)
    headers = api.headers(["ksef.read"])
    assert (await api.http.post(f"/clients/{CLIENT}/sync/fetch-now", headers=headers)).status_code == 404
    _active(api.gateway)
    r = await api.http.post(f"/clients/{CLIENT}/sync/fetch-now", headers=headers)
    assert r.status_code == 202, r.text
    runs_at = datetime.fromisoformat(r.json()["runs_at"]["Subject2"])
    # Last run 5 minutes ago, at most one poll per 15 minutes: queued for 10 minutes from now, not at once.
    assert timedelta(minutes=9) < runs_at - now <= timedelta(minutes=10, seconds=5)
    body = (await api.http.get(f"/clients/{CLIENT}/sync", headers=headers)).json()
    assert body["fetch_requested_at"] is not None
    assert datetime.fromisoformat(body["subjects"][0]["next_run_at"]) == runs_at


async def test_fetch_now_runs_at_once_with_the_operator_override(db_url: str, tmp_path: Path) -> None:
    async for api in _api(db_url, tmp_path, SyncSettings(enabled=False, fetch_now_ignores_min_interval=True)):
        now = datetime.now(UTC)
        await _store_invoices(api.gateway, now)
        _active(api.gateway)
        r = await api.http.post(f"/clients/{CLIENT}/sync/fetch-now", headers=api.headers(["ksef.read"]))
        assert r.status_code == 202
        assert datetime.fromisoformat(r.json()["runs_at"]["Subject2"]) - now < timedelta(seconds=5)


async def test_preferences_are_set_by_credential_managers_only(api: Api) -> None:
    await _store_invoices(api.gateway, datetime.now(UTC))
    path = f"/clients/{CLIENT}/sync"
    r = await api.http.patch(path, json={"month_close_day": 5}, headers=api.headers(["ksef.read"]))
    assert r.status_code == 403
    manager = api.headers(["ksef.credentials.manage", "ksef.read"])
    r = await api.http.patch(path, json={"month_close_day": 5, "backfill_months": 12}, headers=manager)
    assert r.status_code == 200, r.text
    assert (r.json()["month_close_day"], r.json()["backfill_months"]) == (5, 12)
    r = await api.http.patch(path, json={"backfill_months": None}, headers=manager)
    assert (r.json()["month_close_day"], r.json()["backfill_months"]) == (5, 3)  # back to the default
    r = await api.http.patch(path, json={"month_close_day": 32}, headers=manager)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = await api.http.patch(path, json={"subject3": True}, headers=manager)
    assert r.status_code == 422  # subject types belong to the credential
