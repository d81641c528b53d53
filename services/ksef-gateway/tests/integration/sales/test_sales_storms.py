"""Sales sending through KSeF's storms (the issue's "5xx and 429 storms"), against the simulator over real HTTP, on
SQLite and PostgreSQL: a 429 storm is waited out at the pace KSeF's ``Retry-After`` asks for, a 5xx storm costs
retries but never an invoice nor a second copy of one. Whatever the storm, afterwards every invoice is accepted
exactly once in KSeF, with its UPO and one ``invoice.sent``.

Storms end on what the simulator saw (so many 429s or 500s answered), never after a fixed sleep. Whether the gateway
kept to ``Retry-After`` is read from the requests it put on the wire (the simulator counts its answers by status but
keeps no log of the requests), never from how long the storm took.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from integration.sales.world import Hub, submit, widen_windows
from ksef_gateway.budget.service import RateBudget
from ksef_gateway.ksef.crypto import sha256_b64
from ksef_sim.domain.sessions import SessionInvoice
from platform_common.testing import wait_until

# The Retry-After of the simulator's forced 429s (ksef_sim.ratelimit.RateLimiter.hit).
FORCED_RETRY_AFTER_S = 1.0

# A storm over 30 invoices makes more KSeF calls than one context's per-minute allowance covers (30 sends, 120 status
# looks a minute: every invoice is sent, looked at, refused and sent again), and the budget would rightly hold the
# test for a minute. KSeF's per-second limits stay; the minute and hour windows of the groups sending uses are
# widened ten times, as KSeF's TEST environment lets a context raise them (POST /testdata/rate-limits).
WIDENED_GROUPS = ("invoiceSend", "invoiceStatus", "sessionInvoiceList", "sessionMisc")


@pytest.fixture(autouse=True)
def widened_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the ``hub`` fixture builds the gateway, whose budget takes KSeF's table from ``budget.domain``."""
    widen_windows(monkeypatch, WIDENED_GROUPS)


class Operator:
    """The simulator's operator API (``/_sim``) as a test drives it: faults, forced 429s, the clock, the traffic."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.http.request(method, f"/_sim{path}", json=body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def answered(self, status: int) -> int:
        """How many ``/v2`` calls the simulator has answered with ``status`` since it started."""
        stats = await self.call("GET", "/stats")
        return int(stats["responsesByStatus"].get(str(status), 0))

    async def clear(self) -> None:
        """No fault any more, forced 429s included."""
        await self.call("DELETE", "/faults")


@pytest.fixture
async def operator(hub: Hub) -> AsyncIterator[Operator]:
    # The simulator serves its operator on loopback and adds the operator token to /_sim calls that have none; it is
    # given here all the same.
    async with httpx.AsyncClient(base_url=hub.sim.root_url, headers=hub.sim.operator_headers, timeout=30) as http:
        operator = Operator(http)
        try:
            yield operator
        finally:
            # Before the gateway stops (it closes its online session in KSeF then).
            await operator.clear()
            await operator.call("DELETE", "/clock")


# KSeF's endpoint groups (REFERENCE.md §13; ksef_sim.api.sessions*) of the calls sending makes, by method and path
# under /v2; a 429 holds the group, not only the endpoint. Any other call is a group of its own here (never merged
# with another: that could only make the check below stricter than KSeF).
_REF = r"[^/]+"
GROUPS = (
    ("POST", re.compile(rf"/sessions/online/{_REF}/invoices"), "invoiceSend"),
    ("POST", re.compile(rf"/sessions/online(/{_REF}/close)?"), "onlineSession"),
    ("GET", re.compile(rf"/sessions/{_REF}/invoices(/failed)?"), "sessionInvoiceList"),
    ("GET", re.compile(rf"/sessions/{_REF}/invoices/ksef/{_REF}/upo"), "sessionMisc"),
    ("GET", re.compile(rf"/sessions/{_REF}/invoices/{_REF}/upo"), "sessionMisc"),
    ("GET", re.compile(rf"/sessions/{_REF}/invoices/{_REF}"), "invoiceStatus"),
    ("GET", re.compile(rf"/sessions/{_REF}(/upo/{_REF})?"), "sessionMisc"),
)


def endpoint_group(method: str, path: str) -> str:
    path = path.removeprefix("/v2")
    for wanted, pattern, group in GROUPS:
        if method == wanted and pattern.fullmatch(path):
            return group
    return f"{method} {path}"


@dataclass
class Request:
    """One request the gateway put on the wire to KSeF: when it left, when its answer came (if one did), which."""

    group: str
    sent_at: float
    answered_at: float | None = None
    status: int | None = None
    retry_after: str | None = None


@pytest.fixture
def wire(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> list[Request]:
    """Every ``/v2`` request the gateway sends from here on, in the order it sent them. Recorded around the
    gateway's HTTP client, on the one event loop the gateway runs on: the client hands a 429's Retry-After to the
    budget as soon as the answer is returned from here, with no await in between, so a request logged as sent after
    an answer was sent after the gateway knew that answer."""
    http = hub.gateway.http
    forward = http.send
    requests: list[Request] = []

    async def recorded(request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if not request.url.path.startswith("/v2/"):
            return await forward(request, **kwargs)
        entry = Request(endpoint_group(request.method, request.url.path), time.monotonic())
        requests.append(entry)
        response = await forward(request, **kwargs)
        entry.answered_at, entry.status = time.monotonic(), response.status_code
        entry.retry_after = response.headers.get("retry-after")
        return response

    monkeypatch.setattr(http, "send", recorded)
    return requests


# --- what every storm must leave behind -------------------------------------------------------------------------


async def statuses(hub: Hub) -> dict[str, str]:
    response = await hub.api.get(f"/clients/{hub.nip}/sales", params={"limit": 500}, headers=hub.reader)
    assert response.status_code == 200, response.text
    return {item["id"]: item["status"] for item in response.json()["items"]}


def received_by_ksef(hub: Hub) -> Counter[str]:
    """How many times KSeF received each invoice (by hash) in this client's sessions: accepted or not, a second
    POST of an invoice KSeF already holds would be a second record (and a 440 duplicate)."""
    return Counter(i.invoice_hash for i in hub.sim.sim.store.all(SessionInvoice) if i.context_value == hub.nip)


async def assert_each_accepted_once(hub: Hub, sent: dict[str, bytes]) -> list[dict[str, Any]]:
    """Every invoice ``accepted`` (not a duplicate: it was never sent twice) with its KSeF number and UPO; KSeF
    received and holds each exactly once; one ``invoice.sent`` per invoice."""
    done = [await hub.final(invoice_id) for invoice_id in sent]
    assert [d["status"] for d in done] == ["accepted"] * len(sent), [(d["id"], d["status"]) for d in done]
    hashes = sorted(sha256_b64(xml) for xml in sent.values())
    assert sorted(i.invoice_hash for i in hub.accepted_in_sim()) == hashes
    assert received_by_ksef(hub) == Counter(hashes), "KSeF received an invoice more than once"
    by_number = {i.ksef_number: i.invoice_hash for i in hub.accepted_in_sim()}
    for d in done:
        assert by_number[d["ksef_number"]] == d["invoice_hash"]
        upo = await hub.api.get(f"/clients/{hub.nip}/sales/{d['id']}/upo", headers=hub.reader)
        assert upo.status_code == 200 and d["ksef_number"].encode() in upo.content, (d["id"], upo.status_code)
    announced = Counter(e["invoice_id"] for e in await hub.events("invoice.sent"))
    assert announced == Counter(sent.keys()), announced
    return done


# --- 429 --------------------------------------------------------------------------------------------------------


async def test_a_429_storm_is_waited_out_at_ksefs_pace_and_every_invoice_lands_once(
    hub: Hub, operator: Operator, wire: list[Request]
) -> None:
    """KSeF answers 429 (Retry-After: 1) to every call while ten invoices await its decision and twenty more come
    in: nothing is decided or sent meanwhile, and the gateway asks again only as often as Retry-After allows. After
    the storm all thirty are accepted, each once."""
    budget = hub.gateway.budget
    assert isinstance(budget, RateBudget)
    assert budget.remaining(hub.nip, "invoiceSend")["windows"]["per_minute"]["limit"] == 270  # widened_windows
    warm = await submit(hub, ["FV/429/W"])  # the online session is open and the access token fresh
    assert (await hub.final(next(iter(warm))))["status"] == "accepted"

    # Ten invoices KSeF holds but has not decided: its clock stands still until the storm has begun.
    clock = await operator.call("GET", "/clock")
    await operator.call("PUT", "/clock", {"now": clock["now"], "frozen": True})
    early = await submit(hub, [f"FV/429/E{i}" for i in range(10)])

    async def all_submitted() -> bool:
        now = await statuses(hub)
        return all(now[i] == "submitted" for i in early)

    await wait_until(all_submitted, timeout=20, what="the first ten invoices submitted to KSeF")

    before = await operator.answered(429)
    await operator.call("POST", "/faults/force-429", {"count": 1_000_000})
    await operator.call("DELETE", "/clock")  # KSeF decides the ten now; the gateway cannot look
    late = await submit(hub, [f"FV/429/L{i}" for i in range(20)])

    storm_429s = 12

    async def stormed() -> bool:
        # So many 429s, and among them a status look's and a send's (the gateway's record of its calls).
        if await operator.answered(429) - before < storm_429s:
            return False
        refused = await failed_operations(hub, 429)
        return refused["sessions.invoice_status"] > 0 and refused["sessions.send_invoice"] > 0

    await wait_until(stormed, timeout=40, interval=0.05, what=f"{storm_429s} 429s, on status looks and sends")
    now = await statuses(hub)
    held = received_by_ksef(hub)
    await operator.clear()

    # While the storm lasted nothing was decided, and nothing new reached KSeF.
    assert all(now[i] == "submitted" for i in early), now
    assert all(now[i] in ("queued", "sending") for i in late), now
    assert sum(held.values()) == 11

    # What the simulator answered is what the gateway saw on the wire: no 429 of the storm went unrecorded.
    refused = [r for r in wire if r.status == 429]
    assert len(refused) == await operator.answered(429) - before, (len(refused), len(wire))
    assert_honours_retry_after(wire, hub.gateway.sales_sender._per_context)

    await assert_each_accepted_once(hub, warm | early | late)


async def failed_operations(hub: Hub, status: int) -> Counter[str]:
    """The calls the gateway's communication log holds for the client answered ``status``, by KSeF operation."""
    entries = await hub.gateway.communication_log.entries(hub.nip, limit=5000)
    return Counter(e.operation for e in entries if e.http_status == status)


def assert_honours_retry_after(wire: list[Request], per_context: int) -> None:
    """No request into an endpoint group before the Retry-After of a 429 the gateway had received from it.

    Only a request the budget had let go before the 429 came could follow it within the Retry-After (measured:
    none does); the sender keeps at most ``per_context`` calls of one kind in flight for a client (one on SQLite,
    four on PostgreSQL), so those are at most ``per_context - 1``. A gateway that ignores Retry-After comes back on
    the sender's own schedule (a second after a refused send, half a second between looks) for each of the 30
    invoices: dozens of requests within a second."""
    refused = [r for r in wire if r.status == 429]
    assert refused, "no 429 on the wire"
    assert {r.retry_after for r in refused} == {f"{FORCED_RETRY_AFTER_S:.0f}"}, {r.retry_after for r in refused}
    by_group: defaultdict[str, list[Request]] = defaultdict(list)
    for request in wire:
        by_group[request.group].append(request)
    for answer in refused:
        assert answer.answered_at is not None
        until = answer.answered_at + FORCED_RETRY_AFTER_S
        early = [r for r in by_group[answer.group] if answer.answered_at < r.sent_at < until]
        assert len(early) < per_context, (
            f"{answer.group}: {len(early)} requests within the Retry-After of a 429 received at "
            f"{answer.answered_at:.3f}: sent at {[round(r.sent_at, 3) for r in early]}"
        )


# --- 5xx --------------------------------------------------------------------------------------------------------


async def test_a_5xx_storm_costs_retries_but_never_an_invoice_nor_a_second_copy(hub: Hub, operator: Operator) -> None:
    """Half of KSeF's answers are 500 while thirty invoices are sent, looked at and their UPOs fetched: sends are
    found missing by their hash and sent again, looks and UPOs retried; each invoice ends accepted exactly once."""
    warm = await submit(hub, ["FV/5XX/W"])
    assert (await hub.final(next(iter(warm))))["status"] == "accepted"

    before = await operator.answered(500)
    await operator.call("PUT", "/faults", {"errorRate": 0.5})
    invoices = await submit(hub, [f"FV/5XX/{i}" for i in range(30)])

    storm_500s = 20

    async def stormed() -> bool:
        # So many 500s, and among them a send's (the gateway's record of its calls).
        if await operator.answered(500) - before < storm_500s:
            return False
        return (await failed_operations(hub, 500))["sessions.send_invoice"] > 0

    await wait_until(stormed, timeout=40, interval=0.05, what=f"{storm_500s} 500s answered, one to a send")
    await operator.clear()

    done = await assert_each_accepted_once(hub, warm | invoices)
    # A POST answered 500 left KSeF without the invoice: the sender found it missing by its hash and queued it again.
    requeued = [d["id"] for d in done if {"reconciled": True} in [h["detail"] for h in d["history"]]]
    assert requeued, [d["history"] for d in done]
