"""SessionManager and OnlineSessions against the simulator: one authentication per context however many callers,
contexts in parallel, refresh before expiry, re-authentication after revocation or refresh-token expiry, the
401 retry, invalidation, and the online-session pool."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from ksef_gateway.ksef import FA2, FA3, Credential, Environment, KsefAuthFailed, KsefError, KsefTokenCredential
from ksef_gateway.sessions.service import NoCredential, OnlineSessions, SessionManager
from ksef_gateway.testing import KsefHarness, owner_certificate, valid_nips
from ksef_sim.domain.auth import AuthOperation
from ksef_sim.testing import RunningSim
from platform_common.testing.auth import FakeClock

ALPHA, BETA = valid_nips(2, start=731_000_000)


class StaticSource:
    """A ``CredentialSource`` (and ``CredentialFeedback``) over a dict, recording what it is told."""

    def __init__(self, credentials: dict[str, Credential]) -> None:
        self.credentials = credentials
        self.failed: list[tuple[str, KsefError]] = []
        self.authenticated: list[tuple[str, frozenset[str]]] = []
        self.asked: list[str] = []

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        self.asked.append(context_nip)
        if context_nip not in self.credentials:
            raise NoCredential(context_nip)
        return Environment.SIM, self.credentials[context_nip]

    async def mark_failed(self, context_nip: str, error: KsefError) -> None:
        self.failed.append((context_nip, error))

    async def mark_authenticated(self, context_nip: str, permissions: frozenset[str], valid_until: datetime) -> None:
        self.authenticated.append((context_nip, permissions))


def operations(running: RunningSim, nip: str) -> list[AuthOperation]:
    return [op for op in running.sim.store.all(AuthOperation) if op.context.value == nip]


def sim_clock(running: RunningSim) -> Any:
    return running.sim.clock.now


def metadata_filter(running: RunningSim) -> dict[str, Any]:
    start = running.sim.clock.now() - timedelta(days=1)
    return {"subjectType": "Subject2", "dateRange": {"dateType": "PermanentStorage", "from": start.isoformat()}}


async def test_concurrent_callers_of_one_context_share_one_authentication(
    ksef: KsefHarness, running: RunningSim
) -> None:
    source = StaticSource({ALPHA: owner_certificate(ALPHA)})
    manager = SessionManager(ksef.clients, source, None, sim_clock(running))

    tokens = await asyncio.gather(*(manager.access_token(ALPHA) for _ in range(10)))

    assert len(set(tokens)) == 1
    assert len(operations(running, ALPHA)) == 1
    assert source.asked == [ALPHA]
    assert source.authenticated and {"InvoiceRead", "InvoiceWrite"} <= source.authenticated[0][1]


async def test_different_contexts_authenticate_in_parallel(ksef: KsefHarness, running: RunningSim) -> None:
    both_asked = asyncio.Event()

    class Rendezvous(StaticSource):
        async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
            found = await super().credential_for(context_nip)
            if len(set(self.asked)) == 2:
                both_asked.set()
            # Each context's authentication waits until the other one has started: with one lock for all
            # contexts this would never happen.
            await asyncio.wait_for(both_asked.wait(), timeout=10)
            return found

    source = Rendezvous({ALPHA: owner_certificate(ALPHA), BETA: owner_certificate(BETA)})
    manager = SessionManager(ksef.clients, source, None, sim_clock(running))

    alpha, beta = await asyncio.gather(manager.access_token(ALPHA), manager.access_token(BETA))

    assert alpha != beta
    assert len(operations(running, ALPHA)) == len(operations(running, BETA)) == 1


async def test_the_access_token_is_refreshed_before_it_expires(ksef: KsefHarness, running: RunningSim) -> None:
    manager = SessionManager(
        ksef.clients, StaticSource({ALPHA: owner_certificate(ALPHA)}), None, sim_clock(running), refresh_margin_s=120
    )
    first = await manager.access_token(ALPHA)
    running.sim.clock.advance(700)  # 200 s left of 900: still fine
    assert await manager.access_token(ALPHA) == first

    running.sim.clock.advance(100)  # 100 s left: inside the margin
    second = await manager.access_token(ALPHA)

    assert second != first
    [operation] = operations(running, ALPHA)
    assert operation.last_token_refresh_date is not None
    assert ksef.recorder.operations().count("auth.refresh") == 1
    page = await ksef.client.query_metadata(second, metadata_filter(running))
    assert page.invoices == []


async def test_a_revoked_session_leads_to_a_new_authentication(ksef: KsefHarness, running: RunningSim) -> None:
    source = StaticSource({ALPHA: await ksef.token_credential(ALPHA)})
    manager = SessionManager(ksef.clients, source, None, sim_clock(running))
    first = await manager.access_token(ALPHA)
    # Someone revokes the gateway's auth session in KSeF (DELETE /auth/sessions/current).
    response = await ksef.http.delete(
        f"{running.api_url}/auth/sessions/current", headers={"Authorization": f"Bearer {first}"}
    )
    assert response.status_code == 204
    running.sim.clock.advance(850)

    fresh = await manager.access_token(ALPHA)

    refreshes = [c for c in ksef.recorder.calls if c.operation == "auth.refresh"]
    assert [(c.outcome, c.error_codes) for c in refreshes] == [("failed", (21301,))]
    token_logins = [op for op in operations(running, ALPHA) if op.method.category == "Token"]
    assert len(token_logins) == 2 and token_logins[0].revoked_at is not None
    assert source.failed == []  # the credential is fine; only its session was revoked
    await ksef.client.query_metadata(fresh, metadata_filter(running))


async def test_an_expired_refresh_token_means_a_new_authentication_without_trying_it(
    ksef: KsefHarness, running: RunningSim
) -> None:
    manager = SessionManager(ksef.clients, StaticSource({ALPHA: owner_certificate(ALPHA)}), None, sim_clock(running))
    await manager.access_token(ALPHA)
    running.sim.clock.advance(8 * 24 * 3600)  # past the 7-day refresh token

    await manager.access_token(ALPHA)

    assert "auth.refresh" not in ksef.recorder.operations()
    assert len(operations(running, ALPHA)) == 2


async def test_a_401_is_retried_once_with_a_fresh_token(ksef: KsefHarness, running: RunningSim) -> None:
    # Our clock stands still while KSeF's moves past the access token's expiry (clock skew, early expiry).
    manager = SessionManager(ksef.clients, StaticSource({ALPHA: owner_certificate(ALPHA)}), None, FakeClock())
    await manager.access_token(ALPHA)
    running.sim.clock.advance(1000)

    page = await manager.call(ALPHA, lambda client, token: client.query_metadata(token, metadata_filter(running)))

    assert page.invoices == []
    queries = [c.outcome for c in ksef.recorder.calls if c.operation == "invoices.query_metadata"]
    assert queries == ["unauthorized", "ok"]
    assert ksef.recorder.operations().count("auth.refresh") == 1


async def test_a_rejected_credential_is_reported_to_the_source(ksef: KsefHarness, running: RunningSim) -> None:
    real = await ksef.create_ksef_token(ALPHA)
    reference, context, _ = real.split("|")
    source = StaticSource({ALPHA: KsefTokenCredential(SecretStr(f"{reference}|{context}|{'f' * 64}"))})
    manager = SessionManager(ksef.clients, source, None, sim_clock(running))

    with pytest.raises(KsefAuthFailed):
        await manager.access_token(ALPHA)

    assert [(nip, type(error)) for nip, error in source.failed] == [(ALPHA, KsefAuthFailed)]
    with pytest.raises(NoCredential):
        await manager.access_token(BETA)


async def test_invalidation_closes_the_ksef_session_and_forgets_the_tokens(
    ksef: KsefHarness, running: RunningSim
) -> None:
    manager = SessionManager(ksef.clients, StaticSource({ALPHA: owner_certificate(ALPHA)}), None, sim_clock(running))
    first = await manager.access_token(ALPHA)

    await manager.invalidate(ALPHA)

    [old] = operations(running, ALPHA)
    assert old.revoked_at is not None
    assert await manager.access_token(ALPHA) != first
    assert len(operations(running, ALPHA)) == 2


async def test_online_sessions_are_reused_per_context_and_form_and_closed_when_idle(
    ksef: KsefHarness, running: RunningSim
) -> None:
    clock = FakeClock(running.sim.clock.now())
    manager = SessionManager(ksef.clients, StaticSource({ALPHA: owner_certificate(ALPHA)}), None, clock)
    pool = OnlineSessions(manager, clock, idle_s=600, sweep_interval_s=3600)
    await pool.start()

    fa3 = await pool.acquire(ALPHA, FA3)
    clock.advance(300)
    again = await pool.acquire(ALPHA, FA3)
    fa2 = await pool.acquire(ALPHA, FA2)

    assert again is fa3
    assert fa2.reference_number != fa3.reference_number
    token = await manager.access_token(ALPHA)
    assert (await ksef.client.session_status(token, fa3.reference_number)).code == 100

    clock.advance(400)  # FA(3) was used 400 s ago, FA(2) 400 s ago: both still within 600 s
    assert await pool.close_idle() == 0
    clock.advance(250)
    await pool.acquire(ALPHA, FA2)  # keeps FA(2) alive
    assert await pool.close_idle() == 1
    assert [s.reference_number for s in pool.open_sessions()] == [fa2.reference_number]
    assert (await ksef.client.session_status(token, fa3.reference_number)).code != 100

    await pool.stop()  # closes the rest
    assert pool.open_sessions() == []
    assert (await ksef.client.session_status(token, fa2.reference_number)).code != 100
