"""KSeF demo data for the embedded mode: the demo clients exist in the mounted simulator with purchase invoices,
each has a KSeF token, and the gateway holds those tokens, so its purchase sync fills ``/gateway/clients/{nip}/
invoices`` within a minute of ``make run``.

Idempotent across restarts (the data folder keeps the simulator's and the gateway's state): invoices are seeded
once per client (a marker in the simulator's state), and a token is issued only when the gateway's vault has no
usable credential for the client.

The simulator is like KSeF TEST: every valid NIP is a company that can authenticate as its own owner, so "creating"
a client company there means giving it invoices (with the demo organisation's name as buyer) and a token. Both
demo clients get data; auth-svc keeps the pending one (Hurtownia Nowak) out of the office's reach (404) until
approval-svc reports its integration active, and the gateway's API obeys that like every other service.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

import httpx

import auth_svc.demo
from ksef_gateway.vault.demo import ensure_demo_credential
from ksef_gateway.vault.domain import CredentialError
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.auth import new_token
from ksef_sim.domain.seed import SeedOptions, seed_invoices
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Identifier
from ksef_sim.state import Sim

log = logging.getLogger("ksef_hub.demo")


@dataclass(frozen=True)
class DemoClient:
    name: str
    nip: str
    invoices: int


DEMO_CLIENTS: tuple[DemoClient, ...] = (
    DemoClient(*auth_svc.demo.CLIENT_ACTIVE, invoices=150),
    DemoClient(*auth_svc.demo.CLIENT_PENDING, invoices=60),
)
SEEDED_MARKER = "ksef-hub-demo-seeded:{nip}"
# Ends an hour before now: every seeded invoice is already below KSeF's permanent-storage HWM, so the first sync
# run takes all of them (a later one would wait for the minimum poll interval, REFERENCE.md §9).
SEED_SPREAD = timedelta(days=30)
SEED_END_BEFORE_NOW = timedelta(hours=1)
TOKEN_PERMISSIONS = ["InvoiceRead", "InvoiceWrite"]


def ensure_demo_invoices(sim: Sim, clients: tuple[DemoClient, ...] = DEMO_CLIENTS) -> dict[str, int]:
    """Seed each client's purchase invoices once (many sellers, VAT rates, corrections, foreign currency).

    Returns how many were created now per NIP (0 for clients seeded on an earlier start).
    """
    created: dict[str, int] = {}
    for client in clients:
        marker = SEEDED_MARKER.format(nip=client.nip)
        if sim.store.get_meta(marker):
            created[client.nip] = 0
            continue
        now = sim.clock.now()
        options = SeedOptions(
            buyer_nip=client.nip,
            buyer_name=client.name,
            count=client.invoices,
            sellers=12,
            start=now - SEED_SPREAD - SEED_END_BEFORE_NOW,
            spread_days=SEED_SPREAD.total_seconds() / 86400,
            corrections=0.1,
            foreign_currency_share=0.1,
        )
        result = seed_invoices(sim, options)
        sim.store.set_meta(marker, {"created": result.created, "at": now.isoformat()})
        created[client.nip] = result.created
        log.info(
            "seeded %d purchase invoices of %s (NIP %s) in the KSeF simulator", result.created, client.name, client.nip
        )
    return created


def issue_owner_token(sim: Sim, nip: str) -> str:
    """A new KSeF token of the company's owner in its own context (what the owner would generate in KSeF)."""
    now = sim.clock.now()
    owner = Identifier("Nip", nip)
    record, plaintext = new_token(
        reference_number(RefType.KSEF_TOKEN, now), owner, owner, "KSeF Hub demo (embedded mode)", TOKEN_PERMISSIONS, now
    )
    sim.store.put(record)
    return plaintext


async def wait_until_served(url: str, *, timeout_s: float = 120.0) -> None:
    """The gateway checks a credential in KSeF over HTTP, i.e. through this very server: wait until it answers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s} s")
            await asyncio.sleep(0.2)


async def ensure_demo_ksef(
    sim: Sim, gateway: Gateway, public_url: str, clients: tuple[DemoClient, ...] = DEMO_CLIENTS
) -> None:
    """Seed the simulator, then register each client's token in the gateway once this server answers."""
    ensure_demo_invoices(sim, clients)
    await wait_until_served(public_url)
    for client in clients:

        async def issue(nip: str = client.nip) -> str:
            return issue_owner_token(sim, nip)

        try:
            await ensure_demo_credential(gateway.vault, client.nip, issue)
        except CredentialError as exc:
            log.error("demo KSeF token of %s (NIP %s) was not registered: %s", client.name, client.nip, exc)
