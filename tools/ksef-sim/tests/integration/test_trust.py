"""``GET /_sim/trust/upo-ca.pem``: public, the CA the UPO signatures chain to, the same across a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from cryptography import x509
from fastapi import FastAPI

from ksef_sim.domain.certificates import SimCa
from ksef_sim.main import create_app
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim

TRUST_URL = "https://ksef-sim.test/_sim/trust/upo-ca.pem"


async def fetch_ca(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport) as stranger:  # no operator token, no access token
        return await stranger.get(TRUST_URL)


async def test_the_upo_ca_is_public_pem(sim_app: FastAPI, sim: Sim) -> None:
    response = await fetch_ca(sim_app)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-pem-file")
    [ca] = x509.load_pem_x509_certificates(response.content)
    assert ca == SimCa.load_or_create(sim.store, sim.clock.now()).certificate
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The rest of /_sim still wants the operator token.
    transport = httpx.ASGITransport(app=sim_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test") as stranger:
        assert (await stranger.get("/_sim/faults")).status_code == 401


async def test_reachable_during_an_outage_and_not_counted_as_api_traffic(sim_app: FastAPI, sim: Sim) -> None:
    sim.faults.outage = True
    sim.faults.error_rate = 1.0
    assert (await fetch_ca(sim_app)).status_code == 200
    assert sum(sim.traffic.by_status.values()) == 0


async def test_the_same_ca_after_a_restart(tmp_path: Path) -> None:
    settings = SimSettings(database_path=tmp_path / "sim.sqlite3", operator_token_file=tmp_path / "operator-token")
    pems = []
    for _ in range(2):
        app = create_app(settings)
        async with LifespanManager(app):
            response = await fetch_ca(app)
            assert response.status_code == 200
            pems.append(response.content)
    assert pems[0] == pems[1]
