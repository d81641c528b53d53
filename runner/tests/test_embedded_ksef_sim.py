"""The KSeF simulator inside the embedded runner: mounted at ``/ksef-sim`` with its state in the data folder, and its
pre-signed links carry the mount prefix so a client following them lands on the mounted storage routes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from ksef_hub.embedded import KSEF_SIM_PREFIX, create_embedded_app
from ksef_sim.crypto import SYMMETRIC_KEY_ENCRYPTION, aes_cbc_decrypt, b64, rsa_oaep_encrypt, sha256_b64
from ksef_sim.security import Identifier
from ksef_sim.state import Sim

NIP = "5265877635"


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_embedded_app(tmp_path / "data")
    async with LifespanManager(app, startup_timeout=60):
        yield app


def _mounted_sim(app: FastAPI) -> Sim:
    for route in app.routes:
        if getattr(route, "path", None) == KSEF_SIM_PREFIX:
            sim: Sim = route.app.state.sim  # type: ignore[attr-defined]
            return sim
    raise AssertionError(f"nothing mounted at {KSEF_SIM_PREFIX}")


async def test_simulator_keeps_state_in_the_data_dir_and_presigned_links_carry_the_mount_prefix(
    embedded: FastAPI, tmp_path: Path
) -> None:
    sim = _mounted_sim(embedded)
    assert (tmp_path / "data" / "ksef-sim.sqlite3").is_file()
    token, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(minutes=15),
        auth_reference_number="20260101-AU-0000000000-0000000000-00",
        context=Identifier("Nip", NIP),
        subject=Identifier("Nip", NIP),
        auth_method="Token",
        permissions={"InvoiceRead"},
    )
    key, iv = os.urandom(32), os.urandom(16)
    certificate = sim.keys.for_usage(SYMMETRIC_KEY_ENCRYPTION).certificate_der_b64
    body = {
        "encryption": {
            "encryptedSymmetricKey": b64(rsa_oaep_encrypt(certificate, key)),
            "initializationVector": b64(iv),
        },
        "filters": {
            "subjectType": "Subject2",
            "dateRange": {"dateType": "Invoicing", "from": (sim.clock.now() - timedelta(days=7)).isoformat()},
        },
    }
    transport = httpx.ASGITransport(app=embedded, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub.example:8000") as client:
        headers = {"Authorization": f"Bearer {token}"}
        created = await client.post(f"{KSEF_SIM_PREFIX}/v2/invoices/exports", json=body, headers=headers)
        assert created.status_code == 201, created.text
        sim.clock.advance(sim.settings.export_processing_delay_s + 1)
        status = await client.get(
            f"{KSEF_SIM_PREFIX}/v2/invoices/exports/{created.json()['referenceNumber']}", headers=headers
        )
        assert status.status_code == 200, status.text
        assert status.json()["status"]["code"] == 200, status.text
        parts = status.json()["package"]["parts"]
        assert parts
        for part in parts:
            # Built on the called host and the mount, not on the embedded root where /storage is not routed.
            assert part["url"].startswith(f"http://hub.example:8000{KSEF_SIM_PREFIX}/storage/"), part["url"]
            download = await client.get(part["url"])
            assert download.status_code == 200
            assert sha256_b64(download.content) == part["encryptedPartHash"]
            assert len(aes_cbc_decrypt(key, iv, download.content)) == part["partSize"]
