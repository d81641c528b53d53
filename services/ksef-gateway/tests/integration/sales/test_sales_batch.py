"""A sales backlog through KSeF batch sessions (REFERENCE.md §5), against the simulator over real HTTP, on SQLite and
PostgreSQL: a context with at least ``batch.threshold`` due invoices sends them as one encrypted package instead of
one request each; every invoice is accepted exactly once with its UPO and one ``invoice.sent``. And the crash cases:
rows left ``sending`` in a batch session KSeF is still processing are never re-queued (that would send them twice),
a close that never reached KSeF is made up by the reconcile, an upload that failed sends the invoices one by one.

What KSeF received is read from the simulator's own records (its sessions and their invoices), never from the
gateway's view of them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from integration.sales.world import Hub, submit, widen_windows
from ksef_gateway.ksef.crypto import sha256_b64
from ksef_gateway.ksef.errors import KsefUnavailable
from ksef_gateway.ksef.models import PartUploadRequest
from ksef_gateway.sales.batch import is_batch_session
from ksef_gateway.sales.domain import SalesStatus
from ksef_gateway.sales.repository import SalesRepository
from ksef_sim.domain.sessions import BATCH, ONLINE, Session, SessionInvoice, session_invoices, session_status

THRESHOLD = 50

# 120 invoices decided at once cost 120 status looks and 120 UPO reads within a minute, KSeF's per-minute allowance
# of both groups for one context (REFERENCE.md §13): the budget would rightly hold the test for a minute. The
# per-second limits stay; the minute and hour windows are widened ten times, as KSeF's TEST environment lets a context
# raise them (POST /testdata/rate-limits).
WIDENED_GROUPS = ("invoiceStatus", "sessionMisc")


@pytest.fixture(autouse=True)
def widened_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the ``hub`` fixture builds the gateway, whose budget takes KSeF's table from ``budget.domain``."""
    widen_windows(monkeypatch, WIDENED_GROUPS)


# --- helpers ----------------------------------------------------------------------------------------------------


def ksef_sessions(hub: Hub) -> list[Session]:
    return [s for s in hub.sim.sim.store.all(Session) if s.context_value == hub.nip]


def received_by_ksef(hub: Hub) -> dict[str, list[str]]:
    """Every invoice KSeF received in this client's sessions, by hash: the type of each session it came in."""
    kinds = {s.reference_number: s.session_type for s in ksef_sessions(hub)}
    received: dict[str, list[str]] = {}
    for invoice in hub.sim.sim.store.all(SessionInvoice):
        if invoice.context_value == hub.nip:
            received.setdefault(invoice.invoice_hash, []).append(kinds[invoice.session_reference_number])
    return received


async def assert_each_accepted_once(hub: Hub, sent: dict[str, bytes]) -> list[dict[str, Any]]:
    """Every invoice ``accepted`` (never a duplicate: it was not sent twice) with its KSeF number and UPO; KSeF
    received and holds each exactly once; one ``invoice.sent`` per invoice."""
    done = [await hub.final(invoice_id) for invoice_id in sent]
    assert [d["status"] for d in done] == ["accepted"] * len(sent), [(d["id"], d["status"]) for d in done]
    hashes = sorted(sha256_b64(xml) for xml in sent.values())
    assert sorted(i.invoice_hash for i in hub.accepted_in_sim()) == hashes
    received = received_by_ksef(hub)
    assert sorted(received) == hashes and all(len(kinds) == 1 for kinds in received.values()), received
    by_number = {i.ksef_number: i.invoice_hash for i in hub.accepted_in_sim()}
    for d in done:
        assert by_number[d["ksef_number"]] == d["invoice_hash"]
        upo = await hub.api.get(f"/clients/{hub.nip}/sales/{d['id']}/upo", headers=hub.reader)
        assert upo.status_code == 200 and d["ksef_number"].encode() in upo.content, (d["id"], upo.status_code)
    announced = Counter(e["invoice_id"] for e in await hub.events("invoice.sent"))
    assert announced == Counter(sent.keys()), announced
    return done


async def rows_in(hub: Hub, status: SalesStatus) -> list[Any]:
    """The context's rows in ``status``, due or not."""
    async with hub.gateway.runtime.db.sessionmaker() as session:
        return list(await SalesRepository(session).due(hub.nip, status, datetime.now(UTC) + timedelta(days=1), 1000))


def batch_status(hub: Hub, reference: str) -> int:
    sim = hub.sim.sim
    session = sim.store.get(Session, reference)
    assert session is not None
    return session_status(session, session_invoices(sim.store, session), sim.clock.now()).code


async def advance_ksef_clock(hub: Hub, seconds: float) -> None:
    async with httpx.AsyncClient(base_url=hub.sim.root_url, headers=hub.sim.operator_headers, timeout=30) as http:
        response = await http.post("/_sim/clock/advance", json={"seconds": seconds})
        assert response.status_code == 200, response.text


# --- the backlog ------------------------------------------------------------------------------------------------


async def test_a_backlog_goes_out_in_a_batch_session_and_each_invoice_is_accepted_once(hub: Hub) -> None:
    sender = hub.gateway.sales_sender
    await sender.stop()
    sender.batch.threshold = THRESHOLD
    sent = await submit(hub, [f"FV/BATCH/{i}" for i in range(120)])

    await sender.start()
    done = await assert_each_accepted_once(hub, sent)

    sessions = ksef_sessions(hub)
    assert {s.session_type for s in sessions} == {BATCH}, [(s.reference_number, s.session_type) for s in sessions]
    assert all(kinds == [BATCH] for kinds in received_by_ksef(hub).values())
    assert sum(len(s.invoice_refs) for s in sessions) == 120
    for d in done:
        assert is_batch_session(d["session_reference"]), d["session_reference"]
        assert [h["status"] for h in d["history"]] == ["queued", "sending", "submitted", "accepted"], d["history"]
        sending = next(h["detail"] for h in d["history"] if h["status"] == "sending")
        assert sending == {"session": d["session_reference"], "attempt": 1, "batch": True}
        submitted = next(h["detail"] for h in d["history"] if h["status"] == "submitted")
        assert submitted["reconciled"] is True  # found by its hash once KSeF had processed the package


async def test_below_the_threshold_nothing_changes(hub: Hub) -> None:
    sender = hub.gateway.sales_sender
    await sender.stop()
    sender.batch.threshold = 10
    sent = await submit(hub, [f"FV/ONLINE/{i}" for i in range(9)])
    await sender.start()
    done = await assert_each_accepted_once(hub, sent)
    assert {s.session_type for s in ksef_sessions(hub)} == {ONLINE}
    assert all(not is_batch_session(d["session_reference"]) for d in done)


# --- crashes ----------------------------------------------------------------------------------------------------


async def test_rows_of_a_batch_ksef_is_still_processing_are_not_requeued(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway dies after closing the batch session: its rows say ``sending``, KSeF holds the package at 150 for
    an hour. A restarted sender reconciling them again and again leaves them ``sending`` in that session (re-queued,
    they would be sent a second time); once KSeF has processed the package each is found by its hash, once."""
    sender = hub.gateway.sales_sender
    await sender.stop()
    monkeypatch.setattr(hub.sim.sim.settings, "batch_processing_delay_s", 3600.0)
    sender.batch.threshold = 5
    sent = await submit(hub, [f"FV/CRASH/{i}" for i in range(6)])
    assert await sender.batch.send(hub.nip)

    lost = await rows_in(hub, SalesStatus.SENDING)
    assert sorted(str(r.id) for r in lost) == sorted(sent)
    (reference,) = {r.session_reference for r in lost}
    assert is_batch_session(reference) and batch_status(hub, reference) == 150
    for _ in range(3):
        sender.batch._not_before.clear()  # a restarted sender remembers nothing of the session
        await sender._reconcile(hub.nip, lost)
        still = await rows_in(hub, SalesStatus.SENDING)
        assert sorted(str(r.id) for r in still) == sorted(sent), "a row of a batch KSeF is processing left sending"
        assert {r.session_reference for r in still} == {reference}
        assert all(r.next_attempt_at is not None for r in still)  # deferred to the next look, not dropped
    assert await rows_in(hub, SalesStatus.QUEUED) == []
    assert batch_status(hub, reference) == 150
    assert [s.reference_number for s in ksef_sessions(hub)] == [reference]  # nothing went out another way

    await advance_ksef_clock(hub, 3600 + 1)  # KSeF has processed the package
    assert batch_status(hub, reference) == 200
    await sender.start()
    done = await assert_each_accepted_once(hub, sent)
    for d in done:
        assert d["session_reference"] == reference
        assert [h["status"] for h in d["history"]] == ["queued", "sending", "submitted", "accepted"], d["history"]


async def test_a_close_that_never_reached_ksef_is_made_up_by_the_reconcile(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every part uploaded, the close lost on the way: KSeF keeps the session open (100). Its rows are not re-queued
    (the close may have arrived, for all the sender knows); the reconcile sees 100 and closes it."""
    sender = hub.gateway.sales_sender
    await sender.stop()
    ksef = sender._ksef
    close = ksef.close_batch
    lost_closes: list[str] = []

    async def lossy_close(nip: str, session_reference: str) -> None:
        if not lost_closes:
            lost_closes.append(session_reference)
            raise KsefUnavailable("no answer from KSeF (ReadTimeout)")
        await close(nip, session_reference)

    monkeypatch.setattr(ksef, "close_batch", lossy_close)
    sender.batch.threshold = 5
    sent = await submit(hub, [f"FV/CLOSE/{i}" for i in range(7)])
    assert await sender.batch.send(hub.nip)
    (reference,) = lost_closes
    assert batch_status(hub, reference) == 100
    assert len(await rows_in(hub, SalesStatus.SENDING)) == 7

    await sender.start()
    done = await assert_each_accepted_once(hub, sent)
    assert all(d["session_reference"] == reference for d in done)
    assert [s.reference_number for s in ksef_sessions(hub)] == [reference]


async def test_a_failed_upload_puts_the_invoices_back_and_they_go_one_by_one(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part's upload fails: the session is never closed, so KSeF can never process it, and the invoices go back
    to the queue at once. Having been out once, they go through the online session; each lands once."""
    sender = hub.gateway.sales_sender
    await sender.stop()
    ksef = sender._ksef

    async def failing_upload(nip: str, session_reference: str, request: PartUploadRequest, content: bytes) -> None:
        raise KsefUnavailable("storage answered 503")

    monkeypatch.setattr(ksef, "upload_part", failing_upload)
    sender.batch.threshold = 5
    sent = await submit(hub, [f"FV/UPLOAD/{i}" for i in range(6)])
    assert await sender.batch.send(hub.nip)
    (batch,) = ksef_sessions(hub)
    assert batch.session_type == BATCH and batch_status(hub, batch.reference_number) == 100
    queued = await rows_in(hub, SalesStatus.QUEUED)
    assert sorted(str(r.id) for r in queued) == sorted(sent) and all(r.attempts == 1 for r in queued)

    await sender.start()
    done = await assert_each_accepted_once(hub, sent)
    assert all(kinds == [ONLINE] for kinds in received_by_ksef(hub).values())
    for d in done:
        assert not is_batch_session(d["session_reference"])
        statuses = [h["status"] for h in d["history"]]
        assert statuses == ["queued", "sending", "queued", "sending", "submitted", "accepted"], d["history"]
        assert {"batch": batch.reference_number, "not_sent": "upload failed"} in [h["detail"] for h in d["history"]]
    assert batch_status(hub, batch.reference_number) == 100  # never closed: it expires empty


async def test_a_sender_stopped_during_the_upload_puts_the_invoices_back(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is cancelled (the sender stops) while a part is on its way: the session was not closed, so KSeF will
    never process it, and the invoices are back in the queue before the run ends; each lands once later."""
    sender = hub.gateway.sales_sender
    await sender.stop()
    ksef = sender._ksef
    upload = ksef.upload_part
    uploading, hang = asyncio.Event(), [True]

    async def hanging_upload(nip: str, session_reference: str, request: PartUploadRequest, content: bytes) -> None:
        if hang[0]:
            uploading.set()
            await asyncio.Event().wait()
        await upload(nip, session_reference, request, content)

    monkeypatch.setattr(ksef, "upload_part", hanging_upload)
    sender.batch.threshold = 5
    sent = await submit(hub, [f"FV/STOP/{i}" for i in range(6)])
    run = asyncio.create_task(sender.batch.send(hub.nip))
    await asyncio.wait_for(uploading.wait(), timeout=30)
    assert len(await rows_in(hub, SalesStatus.SENDING)) == 6
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    queued = await rows_in(hub, SalesStatus.QUEUED)
    assert sorted(str(r.id) for r in queued) == sorted(sent)
    (batch,) = ksef_sessions(hub)
    assert batch_status(hub, batch.reference_number) == 100 and batch.invoice_refs == []

    hang[0] = False
    await sender.start()
    await assert_each_accepted_once(hub, sent)
    assert all(kinds == [ONLINE] for kinds in received_by_ksef(hub).values())
