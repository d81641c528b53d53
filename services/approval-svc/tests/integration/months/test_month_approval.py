"""Month approval on SQLite and PostgreSQL, through approval-svc's HTTP API: counts followed from buffer-svc's
status.changed (redelivered, out of order, malformed), approve and unlock with their refusals, the events and
whom they name, late arrivals, and who may do what."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from approval_svc.integrations.domain import Transition
from approval_svc.integrations.repository import IntegrationRepository
from approval_svc.integrations.service import Office
from approval_svc.main import create_app
from approval_svc.settings import ApprovalSettings
from approval_svc.wiring import Approval
from platform_common.auth import Authenticator
from platform_common.auth.principal import Principal
from platform_common.contracts import DocumentKind, MonthApproved, MonthUnlocked, StatusChanged
from platform_common.contracts.months import MonthLateArrival
from platform_common.messaging.envelope import Envelope
from platform_common.messaging.transport import InProcessBus
from platform_common.settings import DatabaseSettings, MessagingSettings
from platform_common.testing.auth import DEFAULT_OFFICE, FakeClock, TokenFactory
from platform_common.testing.events import ksef_number
from platform_common.testing.helpers import wait_until

C, D = "7777777702", "1112223303"  # two clients; the office works for C only
C_ORG = uuid.uuid4()
PERIOD = "2026-11"


@dataclass
class Months:
    app: Any
    bus: InProcessBus
    http: httpx.AsyncClient
    tokens: TokenFactory
    revisions: dict[str, int]

    def headers(self, who: str) -> dict[str, str]:
        claims: dict[str, Any] = {
            "office": {"sub": "admin-1", "perms": ["buffer.read", "month.approve", "clients.manage"], "nips": ["*"]},
            "client": {
                "sub": "owner-c",
                "org": str(C_ORG),
                "org_kind": "client",
                "perms": ["buffer.read", "buffer.decide", "month.approve"],
                "nips": [C],
            },
            "member": {
                "sub": "member-c",
                "org": str(C_ORG),
                "org_kind": "client",
                "perms": ["buffer.read", "buffer.decide"],
                "nips": [C],
            },
            "client_d": {
                "sub": "owner-d",
                "org": str(uuid.uuid4()),
                "org_kind": "client",
                "perms": ["buffer.read", "month.approve"],
                "nips": [D],
            },
        }[who]
        return {"Authorization": f"Bearer {self.tokens.mint(**claims)}"}

    async def entry(
        self,
        ksef: str,
        decision: str = "unverified",
        *,
        period: str = PERIOD,
        imported: bool = False,
        archived: bool = False,
        revision: int | None = None,
        client_nip: str = C,
    ) -> Envelope:
        """buffer-svc's status.changed for one entry, its revision one more than the last sent unless given."""
        if revision is None:
            revision = self.revisions.get(ksef, 0) + 1
        self.revisions[ksef] = max(revision, self.revisions.get(ksef, 0))
        event = StatusChanged(
            document_kind=DocumentKind.PURCHASE,
            document_id=str(uuid.uuid5(uuid.NAMESPACE_URL, ksef)),
            ksef_number=ksef,
            status=decision,
            changed_at=datetime(2026, 12, 2, 10, tzinfo=UTC),
            period=period,
            revision=revision,
            decision=decision,
            imported=imported,
            archived=archived,
            changed_by_side="client",
        )
        envelope = Envelope.wrap(event, producer="buffer-svc", client_nip=client_nip)
        await self.bus.deliver(event.topic, client_nip, envelope.to_bytes(), source="test")
        return envelope

    async def month(self, who: str = "client", period: str = PERIOD, nip: str = C) -> httpx.Response:
        return await self.http.get(f"/clients/{nip}/months/{period}", headers=self.headers(who))

    async def step(self, step: str, who: str = "client", period: str = PERIOD, nip: str = C) -> httpx.Response:
        return await self.http.post(f"/clients/{nip}/months/{period}/{step}", headers=self.headers(who))

    async def published(self) -> list[Envelope]:
        """The month events in the outbox, in order."""
        runtime = self.app.state.runtime
        outbox = runtime.definition.tables.outbox
        async with runtime.db.sessionmaker() as session:
            rows = (await session.execute(select(outbox.c.payload).order_by(outbox.c.seq))).all()
        envelopes = [Envelope.model_validate_json(r.payload) for r in rows]
        return [e for e in envelopes if e.type.startswith("month.")]


@pytest.fixture
async def months(db_url: str) -> AsyncIterator[Months]:
    clock = FakeClock()
    tokens = TokenFactory(clock=clock)
    settings = ApprovalSettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        auth=tokens.settings(),
    )
    bus = InProcessBus()
    app = create_app(settings, bus=bus, migrate_on_start=True)
    authenticator: Authenticator = app.state.authenticator
    authenticator.clock, authenticator.transport = clock, tokens.transport()
    async with LifespanManager(app, startup_timeout=60):
        runtime = app.state.runtime
        # The office works with C: an active integration (whose addresses the month events name) and the gate.
        office = Office(DEFAULT_OFFICE, "Biuro Rachunkowe Test", "5260250216")
        integrations = Approval.of(runtime).integrations
        assert await integrations.record_established(office, C, "Piekarnia Test", "owner@piekarnia.test", by="admin-1")
        async with runtime.db.sessionmaker() as session, session.begin():
            repo = IntegrationRepository(session)
            row = await repo.of_pair(DEFAULT_OFFICE, C)
            assert row is not None
            await repo.change(row.id, {"return_email": "ksiegowosc@biuro.test", "return_language": "en"})
        # The gate follows the service's own integration.activated, as in production.
        await wait_until(lambda: runtime.client_access.allows(DEFAULT_OFFICE, C), what="the office's access to C")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://approval") as http:
            yield Months(app, bus, http, tokens, {})


async def test_a_month_is_counted_from_the_buffers_events_once_and_in_order(months: Months) -> None:
    a, b, c = (ksef_number("5213000001", datetime(2026, 11, d).date()) for d in (3, 4, 5))
    first = await months.entry(a)
    await months.bus.deliver("status.changed", C, first.to_bytes(), source="test")  # redelivered: counted once
    await months.entry(b)
    await months.entry(b, "book")
    await months.entry(c, "dont_book", revision=3)
    await months.entry(c, "book", revision=2)  # older than what is held: ignored
    await months.entry(ksef_number("5213000001", datetime(2026, 10, 30).date()), "book", period="2026-10")
    r = await months.month()
    assert r.status_code == 200, r.text
    month = r.json()
    assert month["state"] == "open" and month["revision"] == 0
    assert month["counts"] == {
        "unverified": 1,
        "book": 1,
        "dont_book": 1,
        "imported": 0,
        "archived": 0,
        "entries": 3,
    }
    assert month["can_approve"] is False and month["blocked_by"]["code"] == "unverified-invoices"
    listed = (await months.http.get(f"/clients/{C}/months", headers=months.headers("office"))).json()
    assert [(m["period"], m["counts"]["entries"]) for m in listed] == [("2026-11", 3), ("2026-10", 1)]


async def test_approval_waits_for_every_decision_then_announces_what_to_book(months: Months) -> None:
    a, b, c = (ksef_number("5213000001", datetime(2026, 11, d).date()) for d in (3, 4, 5))
    await months.entry(a, "book")
    await months.entry(b, "dont_book")
    await months.entry(c)
    refused = await months.step("approve")
    assert refused.status_code == 409 and refused.json()["type"].endswith("/unverified-invoices")
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert await months.published() == []

    await months.entry(c, "book")
    r = await months.step("approve")
    assert r.status_code == 200, r.text
    approved_view = r.json()
    assert approved_view["state"] == "approved" and approved_view["revision"] == 1
    assert approved_view["approved_by"] == "owner-c" and approved_view["can_unlock"] is True
    (envelope,) = await months.published()
    approved = envelope.parse(MonthApproved)
    assert (approved.book_count, approved.dont_book_count, approved.revision) == (2, 1, 1)
    assert sorted(d.ksef_number for d in approved.documents) == sorted([a, c])
    assert approved.client_name == "Piekarnia Test"
    assert [(p.side, p.email, p.language) for p in approved.recipients] == [("office", "ksiegowosc@biuro.test", "en")]
    assert envelope.client_nip == C

    again = await months.step("approve")
    assert again.status_code == 409 and again.json()["type"].endswith("/already-approved")
    assert len(await months.published()) == 1


async def test_only_the_clients_approver_approves_and_unlocks(months: Months) -> None:
    await months.entry(ksef_number("5213000001", datetime(2026, 11, 3).date()), "book")
    office = await months.step("approve", who="office")
    assert office.status_code == 403 and office.json()["type"].endswith("/client-only")
    member = await months.step("approve", who="member")
    assert member.status_code == 403  # no month.approve
    assert (await months.month(who="office")).json()["state"] == "open"
    assert await months.published() == []


async def test_unlock_until_the_office_imports_from_the_month(months: Months) -> None:
    a = ksef_number("5213000001", datetime(2026, 11, 3).date())
    await months.entry(a, "book")
    not_yet = await months.step("unlock")
    assert not_yet.status_code == 409 and not_yet.json()["type"].endswith("/not-approved")
    assert (await months.step("approve")).status_code == 200
    r = await months.step("unlock")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "open" and r.json()["revision"] == 2 and r.json()["unlocked_by"] == "owner-c"
    approved, unlocked = await months.published()
    assert approved.type == "month.approved"
    assert unlocked.parse(MonthUnlocked).revision == 2

    assert (await months.step("approve")).status_code == 200
    await months.entry(a, "book", imported=True)  # the office booked it in the buffer
    refused = await months.step("unlock")
    assert refused.status_code == 409 and refused.json()["type"].endswith("/already-imported")
    view = (await months.month()).json()
    assert view["state"] == "approved" and view["counts"]["imported"] == 1 and view["can_unlock"] is False
    assert [e.type for e in await months.published()] == [
        "month.approved",
        "month.unlocked",
        "month.approved",
    ]


async def test_an_invoice_arriving_after_the_approval_is_a_late_arrival_told_to_both_sides(months: Months) -> None:
    await months.entry(ksef_number("5213000001", datetime(2026, 11, 3).date()), "book")
    assert (await months.step("approve")).status_code == 200
    late = ksef_number("9512000004", datetime(2026, 11, 28).date())
    arrival = await months.entry(late)
    await months.bus.deliver("status.changed", C, arrival.to_bytes(), source="test")  # redelivered
    await months.entry(late, "book")  # a later change of the same entry is no new arrival
    view = (await months.month()).json()
    assert view["late_arrivals"] == 1 and view["state"] == "approved" and view["counts"]["book"] == 2
    events = await months.published()
    assert [e.type for e in events] == ["month.approved", "month.late_arrival"]
    told = events[1].parse(MonthLateArrival)
    assert (told.ksef_number, told.late_arrivals, told.period) == (late, 1, PERIOD)
    assert sorted((p.side, p.email) for p in told.recipients) == [
        ("client", "owner@piekarnia.test"),
        ("office", "ksiegowosc@biuro.test"),
    ]
    # An entry of an open month is no late arrival.
    await months.entry(ksef_number("9512000004", datetime(2026, 12, 1).date()), period="2026-12")
    assert [e.type for e in await months.published()] == ["month.approved", "month.late_arrival"]


async def test_bad_events_are_dead_lettered_and_sales_ones_ignored(months: Months) -> None:
    sales = StatusChanged(
        document_kind=DocumentKind.SALES, document_id="s-1", status="accepted", changed_at=datetime.now(UTC)
    )
    envelope = Envelope.wrap(sales, producer="ksef-gateway", client_nip=C)
    await months.bus.deliver("status.changed", C, envelope.to_bytes(), source="test")
    incomplete = StatusChanged(
        document_kind=DocumentKind.PURCHASE, document_id="p-1", status="book", changed_at=datetime.now(UTC)
    )
    envelope = Envelope.wrap(incomplete, producer="buffer-svc", client_nip=C)
    await months.bus.deliver("status.changed", C, envelope.to_bytes(), source="test")
    runtime = months.app.state.runtime
    dead = runtime.definition.tables.dead_letter
    async with runtime.db.sessionmaker() as session:
        (reason,) = (await session.execute(select(dead.c.reason))).scalars().all()
    assert "period" in reason
    assert (await months.http.get(f"/clients/{C}/months", headers=months.headers("client"))).json() == []


async def test_another_client_and_an_office_without_the_client_get_404(months: Months) -> None:
    await months.entry(ksef_number("5213000001", datetime(2026, 11, 3).date()), "book")
    other = await months.month(who="client_d")
    assert other.status_code == 404
    assert (await months.step("approve", who="client_d")).status_code == 404
    bad = await months.http.get(f"/clients/{C}/months/2026-13", headers=months.headers("client"))
    assert bad.status_code == 422
    runtime = months.app.state.runtime
    admin = Principal(
        id="admin-1", ptype="user", org=DEFAULT_OFFICE, org_kind="office", perms=frozenset({"clients.manage"})
    )
    async with runtime.db.sessionmaker() as session:
        row = await IntegrationRepository(session).of_pair(DEFAULT_OFFICE, C)
    assert row is not None
    await Approval.of(runtime).integrations.change_state(admin, row.id, Transition.REVOKE)

    async def closed() -> bool:
        return not await runtime.client_access.allows(DEFAULT_OFFICE, C)

    await wait_until(closed, what="the revocation to close the gate")
    assert (await months.month(who="office")).status_code == 404
    assert (await months.month(who="client")).status_code == 200
