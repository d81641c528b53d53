"""The webhook demo of the embedded platform: the demo office is subscribed to every public event, delivered over
real HTTP to the runner's own receiver (``/notify/dev/webhooks``), which verifies each delivery's signature with the
``standardwebhooks`` verifier. The demo client's invoices arrive there as ``invoice.fetched``, verified; the office
admin sees the subscription through the API, without its secret. A restart keeps the one subscription (its secret
rotated for the new run) and its deliveries still verify.

Served with uvicorn on a loopback port: notify-svc's sender posts to this server like to any receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from fastapi import FastAPI

from auth_svc.demo import CLIENT_ACTIVE, DEMO_PASSWORD, OFFICE_ADMIN
from ksef_hub.webhook_catcher import WEBHOOKS_PATH
from platform_common.testing import wait_until

_NAME, NIP = CLIENT_ACTIVE

Hub = Callable[[], AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


async def _received(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get(WEBHOOKS_PATH)
    assert r.status_code == 200, r.text
    return list(r.json())


async def _fetched(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return [w for w in await _received(client) if w["type"] == "invoice.fetched"]


async def test_the_demo_office_receives_its_clients_invoices_as_verified_webhooks(hub: Hub) -> None:
    async with hub() as (_app, client):

        async def some_fetched() -> bool:
            return bool(await _fetched(client))

        await wait_until(some_fetched, timeout=90, interval=0.2, what="invoice.fetched webhooks at the demo receiver")
        received = await _received(client)
        assert all(w["verified"] for w in received), [w["verificationError"] for w in received if not w["verified"]]
        fetched = await _fetched(client)
        assert {w["body"]["data"]["client_nip"] for w in fetched} == {NIP}
        assert all(w["webhookId"].startswith("msg_") for w in fetched)

        login = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
        assert login.status_code == 200, login.text
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        listed = await client.get("/notify/webhooks/subscriptions", headers=admin)
        assert listed.status_code == 200, listed.text
        (subscription,) = listed.json()
        assert subscription["url"].endswith(f"{WEBHOOKS_PATH}/demo-office") and subscription["enabled"]
        assert "secret" not in subscription
        # A forged delivery is refused by the receiver, as a receiver must.
        forged = await client.post(
            f"{WEBHOOKS_PATH}/demo-office",
            content=b'{"type":"invoice.fetched"}',
            headers={"webhook-id": "msg_forged", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
        )
        assert forged.status_code == 401

    async with hub() as (_app, client):
        login = await client.post("/auth/login", json={"email": OFFICE_ADMIN, "password": DEMO_PASSWORD})
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        (again,) = (await client.get("/notify/webhooks/subscriptions", headers=admin)).json()
        assert again["id"] == subscription["id"]
        sent = await client.post(
            f"/notify/webhooks/subscriptions/{again['id']}/test", json={"event_type": "month.approved"}, headers=admin
        )
        assert sent.status_code == 202, sent.text

        async def test_event_verified() -> bool:
            return any(w["webhookId"] == sent.json()["webhook_id"] and w["verified"] for w in await _received(client))

        await wait_until(test_event_verified, timeout=30, interval=0.1, what="the test event, verified")
