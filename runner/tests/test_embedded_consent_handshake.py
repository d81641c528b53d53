"""The consent and activation-code handshake in the embedded platform, as a newcomer walks it in ``make run``:

the demo's consent request for the pending client (Hurtownia Nowak) waits in the SMTP catcher → the link opens the
consent page → refused for the office's own user and for a user of another company → consent → the link is dead →
the code mail arrives at the office's return address → a wrong code is refused → the right one activates → the
three timestamps and actors are right → auth-svc's relation is active → the office reads the client's invoices,
which the gateway synced. Real SMTP (the embedded aiosmtpd catcher), the embedded services over loopback HTTP.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from approval_svc.demo import DEMO_CLIENT_EMAIL, DEMO_RETURN_EMAIL
from auth_svc.demo import CLIENT_OWNER, CLIENT_PENDING, DEMO_PASSWORD, OFFICE, OFFICE_ADMIN
from ksef_hub.embedded import create_embedded_app
from platform_common.testing import time_until_refused, wait_until
from platform_common.testing.auth import loopback_socket, serve_on_loopback

CLIENT_NAME, CLIENT_NIP = CLIENT_PENDING
CODE = re.compile(r"\b([A-HJ-NP-Z2-9]{5}-[A-HJ-NP-Z2-9]{5})\b")


async def _login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/auth/login", json={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _mail_to(client: httpx.AsyncClient, recipient: str, count: int = 1) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        response = await client.get("/notify/dev/mail")
        assert response.status_code == 200, response.text
        found[:] = [m for m in response.json() if recipient in m["to"]]
        return len(found) >= count

    await wait_until(arrived, timeout=60, what=f"mail to {recipient}")
    return found


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page carries a CSRF value"
    return match.group(1)


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    monkeypatch.setenv("GATEWAY_SYNC__EXPORT_POLL_INTERVAL_S", "0.1")
    monkeypatch.setenv("GATEWAY_SYNC__TICK_INTERVAL_S", "0.2")
    monkeypatch.setenv("NOTIFY_MAIL__POLL_INTERVAL_S", "0.2")
    sock = loopback_socket()
    app = create_embedded_app(tmp_path / "data", public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    async with (
        LifespanManager(app, startup_timeout=60),
        serve_on_loopback(app, sock) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield app, client


async def test_consent_and_activation_code_open_the_client_to_the_office(
    hub: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = hub
    await app.state.demo_ksef  # the gateway holds the pending client's KSeF token and syncs it
    admin = await _login(client, OFFICE_ADMIN)
    office_id = (await client.get("/auth/me", headers=admin)).json()["context"]["org"]
    assert (await client.get(f"/gateway/clients/{CLIENT_NIP}/invoices", headers=admin)).status_code == 404

    # The demo's request is in flight: its mail (Polish, plain text and HTML) waits in the catcher.
    (request_mail,) = await _mail_to(client, DEMO_CLIENT_EMAIL)
    assert OFFICE[0] in request_mail["subject"]
    link = re.search(r"https?://\S+/approval/consent\?token=\S+", request_mail["text"])
    assert link, request_mail["text"]
    consent_url = link.group(0)
    listed = (await client.get(f"/approval/offices/{office_id}/integrations", headers=admin)).json()
    (integration,) = [i for i in listed if i["client_nip"] == CLIENT_NIP]
    assert integration["state"] == "requested"
    assert integration["consented_at"] is None and integration["activated_at"] is None

    # Refused, and nothing changes: the office's own user, then a user of another company (Piekarnia's owner).
    own = await client.get(consent_url, headers=admin)
    assert own.status_code == 403 and "Biuro nie może" in own.text
    other = await client.get(consent_url, headers=await _login(client, CLIENT_OWNER))
    assert other.status_code == 403 and "innej firmy" in other.text

    page = await client.get(consent_url)
    assert page.status_code == 200, page.text
    assert OFFICE[1] in page.text and CLIENT_NIP in page.text and "wysyłanie faktur sprzedażowych" in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token
    form = {"token": token.group(1), "csrf": _csrf(page.text), "lang": "pl", "access_mode": "token"}

    # A cross-site post carries no CSRF cookie: refused before anything happens.
    forged = await httpx.AsyncClient(base_url=str(client.base_url)).post(
        "/approval/consent", data=form | {"decision": "agree"}
    )
    assert forged.status_code == 403
    agreed = await client.post("/approval/consent", data=form | {"decision": "agree"})
    assert agreed.status_code == 200 and "Dziękujemy" in agreed.text, agreed.text
    reused = await client.get(consent_url)
    assert reused.status_code == 410 and "już użyty" in reused.text

    # The code goes to the office's return address; the mail links the activation form.
    (code_mail,) = await _mail_to(client, DEMO_RETURN_EMAIL)
    found = CODE.search(code_mail["text"])
    assert found, code_mail["text"]
    code = found.group(1)
    integration_url = f"/approval/integrations/{integration['id']}"
    assert f"{integration_url}/activate" in code_mail["text"]
    wrong = "AAAAA-AAAAA" if code != "AAAAA-AAAAA" else "BBBBB-BBBBB"
    refused = await client.post(f"{integration_url}/activation", json={"code": wrong}, headers=admin)
    assert refused.status_code == 422 and refused.json()["type"].endswith("/wrong-code"), refused.text
    activated = await client.post(f"{integration_url}/activation", json={"code": code.lower()}, headers=admin)
    assert activated.status_code == 200, activated.text
    body = activated.json()
    admin_id = (await client.get("/auth/me", headers=admin)).json()["id"]
    assert body["state"] == "active" and body["access_mode"] == "token"
    stamps = [datetime.fromisoformat(body[k]) for k in ("requested_at", "consented_at", "activated_at")]
    assert stamps == sorted(stamps)
    assert (body["consented_by"], body["activated_by"]) == (f"link:{DEMO_CLIENT_EMAIL}", admin_id)
    again = await client.post(f"{integration_url}/activation", json={"code": code}, headers=admin)
    assert again.status_code == 409, "a used code activates nothing twice"

    # auth-svc follows the event: the relation is active, and a new token of the office reaches the client's data.
    async def relation_active() -> bool:
        clients = (await client.get(f"/auth/organisations/{office_id}/clients", headers=admin)).json()
        return any(c["nip"] == CLIENT_NIP and c["state"] == "active" for c in clients)

    await wait_until(relation_active, timeout=30, what="auth-svc to activate the relation")

    # The token issued before the activation reaches the client's data: tokens carry no client lists.
    async def readable() -> list[Any] | None:
        response = await client.get(f"/gateway/clients/{CLIENT_NIP}/invoices", headers=admin)
        items = response.json().get("items", []) if response.status_code == 200 else []
        return items or None

    invoices = await wait_until(readable, timeout=60, interval=0.2, what="the client's purchase invoices")
    assert {i["buyer"]["name"] for i in invoices} == {CLIENT_NAME}
    clients = (await client.get(f"/auth/organisations/{office_id}/clients", headers=admin)).json()
    client_org = next(c["client_id"] for c in clients if c["nip"] == CLIENT_NIP)
    client_paths = {
        "ksef-gateway": f"/gateway/clients/{CLIENT_NIP}/invoices",
        "buffer-svc": f"/buffer/clients/{CLIENT_NIP}/whoami",
        "auth-svc": f"/auth/organisations/{client_org}",
    }
    for service, path in client_paths.items():
        assert (await client.get(path, headers=admin)).status_code == 200, service

    # Revoked by the office: the same token, already issued, is refused by every service on its next request.
    revoked = await client.post(f"{integration_url}/revocation", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"

    async def status(path: str) -> int:
        return (await client.get(path, headers=admin)).status_code

    for service, refusal in (await time_until_refused(status, client_paths)).items():
        print(
            f"revoke answered -> {service} refuses the same token (embedded): request sent after "
            f"{refusal.after_s * 1000:.1f} ms, {refusal.served_before} served before"
        )

    async def relation_inactive() -> bool:
        clients = (await client.get(f"/auth/organisations/{office_id}/clients", headers=admin)).json()
        return any(c["nip"] == CLIENT_NIP and c["state"] == "inactive" for c in clients)

    await wait_until(relation_inactive, timeout=30, what="auth-svc to end the relation")


async def test_a_refusal_on_the_consent_page_is_recorded_and_reported_to_the_office(
    hub: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = hub
    admin = await _login(client, OFFICE_ADMIN)
    office_id = (await client.get("/auth/me", headers=admin)).json()["context"]["org"]
    (request_mail,) = await _mail_to(client, DEMO_CLIENT_EMAIL)
    link = re.search(r"https?://\S+/approval/consent\?token=\S+", request_mail["text"])
    assert link, request_mail["text"]
    page = await client.get(link.group(0))
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token

    form = {"token": token.group(1), "csrf": _csrf(page.text), "lang": "en", "decision": "refuse"}
    refused = await client.post("/approval/consent", data=form)
    assert refused.status_code == 200, refused.text

    listed = (await client.get(f"/approval/offices/{office_id}/integrations", headers=admin)).json()
    (integration,) = [i for i in listed if i["client_nip"] == CLIENT_NIP]
    assert integration["state"] == "refused" and integration["ended_at"] is not None
    # The office hears of it at its return address (Polish: the language it chose with the request); no code.
    (notice,) = await _mail_to(client, DEMO_RETURN_EMAIL)
    assert notice["subject"] == f"Klient NIP {CLIENT_NIP} odmówił zgody na integrację", notice
    assert f"integracja {integration['id']}" in notice["text"] and not CODE.search(notice["text"])
    assert (await client.get(f"/gateway/clients/{CLIENT_NIP}/invoices", headers=admin)).status_code == 404
