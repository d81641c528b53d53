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
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

import approval_svc.demo
import auth_svc.demo
import buffer_svc.demo
from ksef_gateway.vault.demo import ensure_demo_credential
from ksef_gateway.vault.domain import CredentialError
from ksef_gateway.wiring import Gateway
from ksef_sim.domain.auth import new_token
from ksef_sim.domain.seed import SeedOptions, seed_invoices
from ksef_sim.records import StoredInvoice
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Identifier
from ksef_sim.state import Sim
from platform_common.auth.principal import Principal
from platform_common.runtime import ServiceRuntime

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


# --- the month demo: decisions, an approved month, a late arrival ---------------------------------------------------

MONTH_MARKER = "ksef-hub-demo-month:{nip}"
LATE_MARKER = "ksef-hub-demo-late-arrival:{nip}:{period}"
WARSAW = ZoneInfo("Europe/Warsaw")


def previous_period(now: datetime) -> str:
    first = now.astimezone(WARSAW).date().replace(day=1)
    last_month = first - timedelta(days=1)
    return f"{last_month:%Y-%m}"


async def _until(probe: object, what: str, timeout_s: float, interval_s: float = 0.5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await probe():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(interval_s)


async def ensure_demo_month(
    sim: Sim,
    buffer: ServiceRuntime,
    approval: ServiceRuntime,
    owner: Principal,
    client: DemoClient = DEMO_CLIENTS[0],
    *,
    timeout_s: float = 600.0,
) -> datetime | None:
    """The active demo client's previous month decided (by seller) and approved, once, as its owner; then one
    invoice of that month issued days ago and sent only now, which the gateway's next sync brings in as a late
    arrival (flagged in the buffer, both sides mailed). The current month stays undecided, with suggestions.

    Waits for the first sync to fill the buffer and for approval-svc to count the decisions (events, in order);
    Once per data folder (a marker in the simulator's state, so a start a month later decides nothing of what
    the user left open). Returns when KSeF's queries show the late invoice (its permanent storage), for a "fetch now"
    after it; None when it ran before or the month was approved or unlocked by a user already."""
    marker = MONTH_MARKER.format(nip=client.nip)
    period = previous_period(sim.clock.now())
    if sim.store.get_meta(marker) or not await approval_svc.demo.demo_month_untouched(approval, client.nip, period):
        return None

    async def synced() -> bool:
        return sum((await buffer_svc.demo.held(buffer, owner, client.nip)).values()) >= client.invoices

    await _until(synced, f"the first sync of {client.name}", timeout_s)
    decided = await buffer_svc.demo.decide_demo_month(buffer, owner, client.nip, period)
    entries = (await buffer_svc.demo.held(buffer, owner, client.nip)).get(period, 0)

    async def counted() -> bool:
        return await approval_svc.demo.demo_month_counted(approval, client.nip, period, entries)

    await _until(counted, f"approval-svc to count {period}", timeout_s)
    await approval_svc.demo.approve_demo_month(approval, owner, client.nip, period)
    sim.store.set_meta(marker, {"period": period, "decided": decided})
    log.info("demo: %s decided %d invoice(s) of %s and approved the month", client.name, decided, period)
    return _seed_late_arrival(sim, client, period)


def _seed_late_arrival(sim: Sim, client: DemoClient, period: str) -> datetime | None:
    """Sent now, so that it lies above the checkpoint of the sync that already ran (as a real late invoice
    does): KSeF lists it once it is in permanent storage, a few seconds on (REFERENCE.md §9)."""
    marker = LATE_MARKER.format(nip=client.nip, period=period)
    if sim.store.get_meta(marker):
        return None
    now = sim.clock.now()
    year, month = map(int, period.split("-"))
    issued = date(year, month, 28)
    result = seed_invoices(
        sim,
        SeedOptions(
            buyer_nip=client.nip,
            buyer_name=client.name,
            count=1,
            sellers=1,
            start=now - timedelta(seconds=1),
            spread_days=1 / 86400,
            corrections=0,
            foreign_currency_share=0,
            issued_days_before=(now.astimezone(WARSAW).date() - issued).days,
        ),
    )
    sim.store.set_meta(marker, {"ksef_numbers": result.ksef_numbers, "at": now.isoformat()})
    log.info("demo: a late invoice of %s issued %s sent to KSeF now (%s)", client.name, issued, result.ksef_numbers)
    # Listed once KSeF's HWM (now - the indexing jitter) has passed its permanent-storage date.
    stored = [i.permanent_storage_date for i in sim.store.all(StoredInvoice) if i.ksef_number in result.ksef_numbers]
    return max(stored, default=now) + timedelta(seconds=sim.settings.permanent_storage_jitter_s + 0.5)
