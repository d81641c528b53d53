"""The handshake's use cases on SQLite and PostgreSQL: each refused case says why and changes nothing it should not,
and every change leaves its event in the outbox (the consent link and the code sealed to notify-svc's key)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from approval_svc.integrations.domain import IntegrationError, Transition
from approval_svc.integrations.service import ConsentDecision, ConsentRequest, Integrations, Office
from approval_svc.main import DEFINITION
from approval_svc.settings import ApprovalSettings
from approval_svc.wiring import Approval
from platform_common.auth.principal import Principal
from platform_common.contracts.integrations import (
    IntegrationConsented,
    IntegrationConsentRequested,
    IntegrationRefused,
)
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, MessagingSettings

PRIVATE, PUBLIC = generate_keypair()
OFFICE = Office(uuid.uuid4(), "Biuro Testowe", "5260250216")
ADMIN = Principal(
    id=str(uuid.uuid4()), ptype="user", org=OFFICE.id, org_kind="office", perms=frozenset({"clients.manage"})
)
CLIENT_A, CLIENT_B = "7777777702", "1112223303"


def _client_owner(nip: str, perms: frozenset[str] = frozenset({"users.manage"})) -> Principal:
    """A user of the client company ``nip``: its owner, or with ``perms`` someone else there."""
    return Principal(
        id=str(uuid.uuid4()),
        ptype="user",
        org=uuid.uuid4(),
        org_kind="client",
        perms=perms,
        nips=frozenset({nip}),
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def runtime(db_url: str) -> AsyncIterator[ServiceRuntime]:
    settings = ApprovalSettings(
        db=DatabaseSettings(url=db_url),
        messaging=MessagingSettings(transport="inprocess"),
        notify_public_key=PUBLIC,
        public_url="https://hub.example/approval",
    )
    rt = ServiceRuntime(DEFINITION, settings, migrate_on_start=True)
    await rt.start()
    yield rt
    await rt.stop()


@pytest.fixture
def clock(runtime: ServiceRuntime) -> Clock:
    clock = Clock()
    Approval.of(runtime).integrations.clock = clock
    return clock


@pytest.fixture
def integrations(runtime: ServiceRuntime, clock: Clock) -> Integrations:
    return Approval.of(runtime).integrations


async def _events(runtime: ServiceRuntime) -> list[Envelope]:
    outbox = runtime.definition.tables.outbox
    async with runtime.db.sessionmaker() as session:
        rows = (await session.execute(select(outbox.c.payload).order_by(outbox.c.seq))).all()
    return [Envelope.model_validate_json(r.payload) for r in rows]


async def _ask(integrations: Integrations, runtime: ServiceRuntime, nip: str = CLIENT_A) -> tuple[uuid.UUID, str]:
    view = await integrations.request(
        ADMIN,
        OFFICE,
        ConsentRequest(
            client_nip=nip,
            client_email="zarzad@klient.example",
            return_email="biuro@b.example",
            client_name="Klient A" if nip == CLIENT_A else None,
        ),
    )
    event = (await _events(runtime))[-1].parse(IntegrationConsentRequested)
    link = event.open_link(PRIVATE)
    (token,) = parse_qs(urlsplit(link).query)["token"]
    return view["id"], token


async def _consent(integrations: Integrations, runtime: ServiceRuntime, token: str) -> str:
    await integrations.decide(token, None, ConsentDecision(agree=True, access_mode="grant"))
    return (await _events(runtime))[-1].parse(IntegrationConsented).open_code(PRIVATE)


async def _refused(code: str, call: object) -> IntegrationError:
    with pytest.raises(IntegrationError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code == code, str(refused.value)
    return refused.value


async def test_events_carry_the_lifecycle_in_revision_order(
    integrations: Integrations, runtime: ServiceRuntime
) -> None:
    integration_id, token = await _ask(integrations, runtime)
    code = await _consent(integrations, runtime, token)
    await integrations.activate(ADMIN, integration_id, code)
    await integrations.change_state(_client_owner(CLIENT_A), integration_id, Transition.SUSPEND)
    await integrations.change_state(ADMIN, integration_id, Transition.REVOKE)
    events = await _events(runtime)
    assert [(e.type, e.payload["revision"], e.payload["state"]) for e in events] == [
        ("integration.consent_requested", 1, "requested"),
        ("integration.consented", 2, "consented"),
        ("integration.activated", 3, "active"),
        ("integration.suspended", 4, "suspended"),
        ("integration.revoked", 5, "revoked"),
    ]
    assert {e.client_nip for e in events} == {CLIENT_A}, "one client's changes share one ordering key"
    assert events[3].payload["changed_by_side"] == "client"
    for event in events:
        assert token not in event.model_dump_json() and code not in event.model_dump_json()


async def test_a_link_is_single_use_and_expires(
    integrations: Integrations, runtime: ServiceRuntime, clock: Clock
) -> None:
    integration_id, token = await _ask(integrations, runtime)
    await _refused("link-invalid", integrations.consent_page(token + "x", None))
    await _consent(integrations, runtime, token)
    await _refused("link-used", integrations.consent_page(token, None))
    await _refused("link-used", integrations.decide(token, None, ConsentDecision(agree=False)))
    assert (await integrations.get(ADMIN, integration_id))["state"] == "consented"

    _, late = await _ask(integrations, runtime, CLIENT_B)
    clock.now += timedelta(days=8)
    await _refused("link-expired", integrations.decide(late, None, ConsentDecision(agree=True, access_mode="token")))
    assert len(await _events(runtime)) == 3, "an expired link changed nothing"


async def test_a_renewed_request_kills_the_old_link(integrations: Integrations, runtime: ServiceRuntime) -> None:
    integration_id, old = await _ask(integrations, runtime)
    await integrations.renew(ADMIN, integration_id)
    await _refused("link-invalid", integrations.consent_page(old, None))


async def test_only_the_company_asked_decides(integrations: Integrations, runtime: ServiceRuntime) -> None:
    integration_id, token = await _ask(integrations, runtime)
    await _refused("own-office", integrations.decide(token, ADMIN, ConsentDecision(agree=True, access_mode="grant")))
    stranger = _client_owner(CLIENT_B)
    await _refused("other-company", integrations.consent_page(token, stranger))
    await integrations.decide(token, _client_owner(CLIENT_A), ConsentDecision(agree=False))
    view = await integrations.get(ADMIN, integration_id)
    assert view["state"] == "refused" and view["ended_by"] is not None
    refused = (await _events(runtime))[-1].parse(IntegrationRefused)
    # What notify-svc needs to tell the office: where, in which language, about whom.
    assert (refused.return_email, refused.return_language, refused.client_name) == ("biuro@b.example", "pl", "Klient A")


async def test_six_wrong_codes_lock_and_the_right_one_then_fails(
    integrations: Integrations, runtime: ServiceRuntime
) -> None:
    integration_id, token = await _ask(integrations, runtime)
    code = await _consent(integrations, runtime, token)
    wrong = "AAAAA-AAAAA" if code != "AAAAA-AAAAA" else "BBBBB-BBBBB"
    for left in (4, 3, 2, 1):
        error = await _refused("wrong-code", integrations.activate(ADMIN, integration_id, wrong))
        assert f"{left} attempt" in str(error)
    await _refused("code-locked", integrations.activate(ADMIN, integration_id, wrong))
    await _refused("code-locked", integrations.activate(ADMIN, integration_id, code))
    view = await integrations.get(ADMIN, integration_id)
    assert view["state"] == "consented" and view["activation_code"]["state"] == "locked"
    # Renewing starts again with a new link (and, after consent, a new code).
    await integrations.renew(ADMIN, integration_id)
    assert (await integrations.get(ADMIN, integration_id))["state"] == "requested"


async def test_a_code_of_another_integration_does_not_open_this_one(
    integrations: Integrations, runtime: ServiceRuntime
) -> None:
    first, first_token = await _ask(integrations, runtime, CLIENT_A)
    second, second_token = await _ask(integrations, runtime, CLIENT_B)
    first_code = await _consent(integrations, runtime, first_token)
    await _consent(integrations, runtime, second_token)
    await _refused("wrong-code", integrations.activate(ADMIN, second, first_code))
    assert (await integrations.activate(ADMIN, first, first_code))["state"] == "active"


async def test_an_expired_code_expires_the_integration(
    integrations: Integrations, runtime: ServiceRuntime, clock: Clock
) -> None:
    integration_id, token = await _ask(integrations, runtime)
    code = await _consent(integrations, runtime, token)
    clock.now += timedelta(hours=73)
    await _refused("code-expired", integrations.activate(ADMIN, integration_id, code))
    assert (await integrations.get(ADMIN, integration_id))["state"] == "expired"
    assert (await _events(runtime))[-1].type == "integration.expired"


async def test_another_office_sees_nothing(integrations: Integrations, runtime: ServiceRuntime) -> None:
    integration_id, _ = await _ask(integrations, runtime)
    other = Principal(id="x", ptype="user", org=uuid.uuid4(), org_kind="office", perms=frozenset({"clients.manage"}))
    await _refused("not-found", integrations.get(other, integration_id))
    await _refused("not-found", integrations.change_state(other, integration_id, Transition.REVOKE))
    await _refused("not-found", integrations.activate(other, integration_id, "AAAAA-AAAAA"))


async def test_unused_links_and_codes_expire_in_the_background(
    integrations: Integrations, runtime: ServiceRuntime, clock: Clock
) -> None:
    unanswered, _ = await _ask(integrations, runtime, CLIENT_A)
    consented, token = await _ask(integrations, runtime, CLIENT_B)
    await _consent(integrations, runtime, token)
    assert await integrations.expire_overdue() == 0
    clock.now += timedelta(hours=73)  # past the code's 72 h, not the link's 7 days
    assert await integrations.expire_overdue() == 1
    assert (await integrations.get(ADMIN, consented))["state"] == "expired"
    assert (await integrations.get(ADMIN, unanswered))["state"] == "requested"
    clock.now += timedelta(days=7)
    assert await integrations.expire_overdue() == 1
    assert (await integrations.get(ADMIN, unanswered))["state"] == "expired"
    assert [e.type for e in await _events(runtime)][-2:] == ["integration.expired", "integration.expired"]


async def test_an_established_integration_is_recorded_once_and_announced(
    integrations: Integrations, runtime: ServiceRuntime
) -> None:
    assert await integrations.record_established(OFFICE, CLIENT_A, "Klient A", "zarzad@klient.example", by=ADMIN.id)
    assert not await integrations.record_established(
        OFFICE, CLIENT_A, "Klient A", "zarzad@klient.example", by=ADMIN.id
    ), "a second start of the demo makes nothing new"
    (event,) = await _events(runtime)
    assert (event.type, event.payload["state"], event.client_nip) == ("integration.activated", "active", CLIENT_A)
    (view,) = await integrations.list_for(ADMIN, OFFICE.id)
    assert view["state"] == "active" and view["activated_by"] == ADMIN.id
    # It is an ordinary integration from then on: the office can revoke it.
    await integrations.change_state(ADMIN, view["id"], Transition.REVOKE)
    assert (await _events(runtime))[-1].type == "integration.revoked"


async def test_the_signed_in_owner_decides_without_the_link_and_spends_it(
    integrations: Integrations, runtime: ServiceRuntime
) -> None:
    integration_id, token = await _ask(integrations, runtime)
    agree = ConsentDecision(agree=True, access_mode="grant")
    await _refused("own-office", integrations.decide_signed_in(ADMIN, integration_id, agree))
    await _refused("not-found", integrations.decide_signed_in(_client_owner(CLIENT_B), integration_id, agree))
    employee = _client_owner(CLIENT_A, perms=frozenset({"buffer.decide"}))
    await _refused("forbidden", integrations.decide_signed_in(employee, integration_id, agree))
    assert len(await _events(runtime)) == 1, "a refused attempt changed nothing"

    owner = _client_owner(CLIENT_A)
    view = await integrations.decide_signed_in(owner, integration_id, agree)
    assert (view["state"], view["consented_by"], view["access_mode"]) == ("consented", owner.id, "grant")
    consented = (await _events(runtime))[-1].parse(IntegrationConsented)
    assert consented.open_code(PRIVATE), "the activation code goes to the office's return address"
    assert consented.client_email is None, "the owner decided in the application: no confirmation to the link's holder"
    await _refused("link-used", integrations.consent_page(token, None))
    await _refused("link-closed", integrations.decide_signed_in(owner, integration_id, ConsentDecision(agree=False)))


async def test_the_signed_in_owner_may_refuse(integrations: Integrations, runtime: ServiceRuntime) -> None:
    integration_id, _ = await _ask(integrations, runtime)
    await _refused(
        "access-mode", integrations.decide_signed_in(_client_owner(CLIENT_A), integration_id, ConsentDecision(True))
    )
    view = await integrations.decide_signed_in(_client_owner(CLIENT_A), integration_id, ConsentDecision(agree=False))
    assert view["state"] == "refused"
    assert (await _events(runtime))[-1].type == "integration.refused"
