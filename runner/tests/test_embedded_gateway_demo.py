"""The gateway inside the embedded platform: it talks to the mounted KSeF simulator at the address the runner serves,
and the demo data (invoices and a KSeF token per demo client in the simulator, the tokens in the gateway's vault)
makes the demo client's purchase invoices arrive through the gateway's sync, readable with the demo office admin's
token, while the office's pending client stays out of its reach. A restart on the same data folder changes nothing.

Served with uvicorn on a loopback port (not 8000): the vault checks a token in KSeF over HTTP, through this server.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from auth_svc.demo import CLIENT_ACTIVE, CLIENT_PENDING, DEMO_PASSWORD, OFFICE_ADMIN
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.vault.demo import DEMO_ACTOR
from ksef_hub.demo import DEMO_CLIENTS
from ksef_hub.embedded import KSEF_SIM_PREFIX, create_embedded_app
from ksef_sim.domain.auth import KsefToken
from ksef_sim.records import StoredInvoice
from ksef_sim.state import Sim
from platform_common.testing import wait_until

ACTIVE_NIP, PENDING_NIP = CLIENT_ACTIVE[1], CLIENT_PENDING[1]
SEEDED = {c.nip: c.invoices for c in DEMO_CLIENTS}

Hub = Callable[[], AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def _mounted(app: FastAPI, prefix: str) -> FastAPI:
    for route in app.routes:
        if isinstance(route, Mount) and route.path == prefix and isinstance(route.app, FastAPI):
            return route.app
    raise AssertionError(f"nothing mounted at {prefix}")


def test_gateway_talks_to_the_mounted_simulator_at_the_served_address(tmp_path: Path) -> None:
    app = create_embedded_app(tmp_path / "data", public_url="http://127.0.0.1:9321/")
    settings = _mounted(app, "/gateway").state.settings
    assert isinstance(settings, GatewaySettings)
    assert settings.ksef.sim_base_url == "http://127.0.0.1:9321/ksef-sim/v2"
    assert settings.ksef.environment is Environment.SIM


def test_gateway_ksef_settings_from_the_environment_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_KSEF__SIM_BASE_URL", "http://ksef-sim.test:8090/v2")
    monkeypatch.setenv("GATEWAY_KSEF__ENVIRONMENT", "test")
    settings = _mounted(create_embedded_app(tmp_path / "data"), "/gateway").state.settings
    assert isinstance(settings, GatewaySettings)
    assert settings.ksef.sim_base_url == "http://ksef-sim.test:8090/v2"
    assert settings.ksef.environment is Environment.TEST


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _all_invoices(client: httpx.AsyncClient, nip: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = await client.get(f"/gateway/clients/{nip}/invoices", params=params, headers=headers)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def _decided_sales(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]] | None:
    page = await client.get(f"/gateway/clients/{ACTIVE_NIP}/sales", headers=headers)
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    final = {"accepted", "duplicate", "rejected", "held"}  # held waits for a person or the monthly backfill
    return items if len(items) == 6 and all(i["status"] in final for i in items) else None


def _sim(app: FastAPI) -> Sim:
    sim: Sim = _mounted(app, KSEF_SIM_PREFIX).state.sim
    return sim


async def test_demo_client_invoices_arrive_through_the_gateway_and_survive_a_restart(hub: Hub) -> None:
    async with hub() as (app, client):
        admin = await _login(client, OFFICE_ADMIN)

        async def synced() -> list[dict[str, Any]] | None:
            # The demo token is registered in the background once the server answers: until then the gateway does
            # not know the client at all (404).
            known = await client.get(f"/gateway/clients/{ACTIVE_NIP}/credential", headers=admin)
            if known.status_code == 404:
                return None
            items = await _all_invoices(client, ACTIVE_NIP, admin)
            return items if len(items) >= SEEDED[ACTIVE_NIP] else None

        await wait_until(synced, timeout=60, interval=0.2, what="the demo client's purchase invoices")
        # Then the month demo sends one invoice more (late, for the month it approved), fetched at once.
        await app.state.demo_month

        async def with_the_late_one() -> list[dict[str, Any]] | None:
            items = await _all_invoices(client, ACTIVE_NIP, admin)
            return items if len(items) == SEEDED[ACTIVE_NIP] + 1 else None

        invoices = await wait_until(with_the_late_one, timeout=60, interval=0.2, what="the late invoice")
        sim = _sim(app)
        in_ksef = {i.ksef_number: i for i in sim.store.all(StoredInvoice) if i.buyer_identifier.value == ACTIVE_NIP}
        # Exactly the invoices KSeF holds for the client as buyer, once each, with the header read from the XML.
        assert sorted(i["ksef_number"] for i in invoices) == sorted(in_ksef)
        assert {i["buyer"]["name"] for i in invoices} == {CLIENT_ACTIVE[0]}
        assert len({i["seller"]["identifier"] for i in invoices}) > 3, "many sellers"
        assert {i["invoice_type"] for i in invoices} >= {"VAT", "KOR"}
        for invoice in invoices[:5]:
            stored = in_ksef[invoice["ksef_number"]]
            assert invoice["invoice_hash"] == stored.invoice_hash
            assert invoice["gross_amount"] == f"{stored.gross_amount:.2f}"
        xml = await client.get(f"/gateway{invoices[0]['xml_ref']}", headers=admin)
        assert xml.status_code == 200 and xml.content == sim.store.get_blob(
            in_ksef[invoices[0]["ksef_number"]].blob_name
        )

        credential = await client.get(f"/gateway/clients/{ACTIVE_NIP}/credential", headers=admin)
        assert credential.status_code == 200, credential.text
        body = credential.json()
        assert (body["kind"], body["status"], body["environment"]) == ("ksef_token", "valid", "sim")
        assert body["created_by"] == DEMO_ACTOR
        assert "token" not in body
        sync = (await client.get(f"/gateway/clients/{ACTIVE_NIP}/sync", headers=admin)).json()
        assert sync["invoices_stored"] == SEEDED[ACTIVE_NIP] + 1 and sync["credential_active"] is True

        # The pending client has its data in the gateway too, but the office may not see it before approval.
        for path in ("invoices", "sync", "credential"):
            denied = await client.get(f"/gateway/clients/{PENDING_NIP}/{path}", headers=admin)
            assert denied.status_code == 404, (path, denied.text)

        # The demo client's sales invoices: two accepted, one sent again (440, resolved to the first), one refused,
        # a pro-forma held by the client's auto-send rules.
        await app.state.demo_sales
        sales = await wait_until(
            lambda: _decided_sales(client, admin), timeout=60, interval=0.2, what="the demo sales invoices decided"
        )
        by_number = {(s["invoice_number"], s["status"]): s for s in sales}
        assert sorted(by_number) == [
            ("FV/DEMO/1", "accepted"),
            ("FV/DEMO/1", "duplicate"),
            ("FV/DEMO/2", "accepted"),
            ("FV/DEMO/3", "rejected"),
            ("FV/DEMO/4", "accepted"),
            ("PRO/DEMO/1", "held"),
        ]
        offline = by_number[("FV/DEMO/4", "accepted")]
        assert offline["offline_mode"] == "offline24" and offline["offline_deadline"] and offline["kod_ii_url"]
        assert by_number[("PRO/DEMO/1", "held")]["held_by_rule"] == "series:PRO/*"
        first = by_number[("FV/DEMO/1", "accepted")]
        assert by_number[("FV/DEMO/1", "duplicate")]["ksef_number"] == first["ksef_number"]
        assert by_number[("FV/DEMO/3", "rejected")]["ksef_code"] == 450
        sent = {i.ksef_number for i in sim.store.all(StoredInvoice) if i.seller_nip == ACTIVE_NIP}
        assert sent == {
            first["ksef_number"],
            by_number[("FV/DEMO/2", "accepted")]["ksef_number"],
            offline["ksef_number"],
        }

        tokens_before = len(sim.store.all(KsefToken))
        invoices_before = len(sim.store.all(StoredInvoice))
        assert tokens_before == len(DEMO_CLIENTS)
        assert invoices_before == sum(SEEDED.values()) + 1 + 3

    # A restart on the same data folder seeds nothing, issues no token, keeps the credential and stores no duplicate.
    async with hub() as (app, client):
        admin = await _login(client, OFFICE_ADMIN)
        await app.state.demo_ksef  # the demo set-up ran to its end (it finds everything in place)
        sim = _sim(app)
        assert len(sim.store.all(StoredInvoice)) == invoices_before
        credential = (await client.get(f"/gateway/clients/{ACTIVE_NIP}/credential", headers=admin)).json()
        assert credential["created_at"] == body["created_at"] and credential["updated_at"] == body["updated_at"]
        assert len(sim.store.all(KsefToken)) == tokens_before
        again = await _all_invoices(client, ACTIVE_NIP, admin)
        assert sorted(i["ksef_number"] for i in again) == sorted(in_ksef)
        await app.state.demo_sales  # submits nothing again: its keys are known
        assert len((await client.get(f"/gateway/clients/{ACTIVE_NIP}/sales", headers=admin)).json()["items"]) == 6
