"""Authentication against the simulator over real HTTP: KSeF token and XAdES certificate, the failures a
credential setup must explain, and the Ministry key rotation (21470)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from ksef_gateway.ksef import KsefAuthFailed, KsefTokenCredential
from ksef_gateway.testing import KsefHarness, owner_certificate, valid_nips
from ksef_sim.domain.auth import AuthOperation
from ksef_sim.testing import RunningSim

SELLER, BUYER, STRANGER = valid_nips(3)


async def test_certificate_authentication_gives_usable_tokens(ksef: KsefHarness, running: RunningSim) -> None:
    session = await ksef.client.authenticate(SELLER, owner_certificate(SELLER))

    assert session.context_nip == SELLER
    assert "-AU-" in session.auth_reference
    assert session.access_valid_until < session.refresh_valid_until
    # The simulator verified the XAdES signature and saw the owner: every permission of the context.
    assert {"InvoiceRead", "InvoiceWrite"} <= await ksef.client.own_permissions(session.access_token)
    operation = running.sim.store.get(AuthOperation, session.auth_reference)
    assert operation is not None and operation.method.category == "XadesSignature"
    assert operation.user_agent.startswith("ksef-hub-gateway/") and "replica-test" in operation.user_agent


async def test_ksef_token_authentication_gives_the_token_permissions(ksef: KsefHarness, running: RunningSim) -> None:
    credential = await ksef.token_credential(BUYER, permissions=("InvoiceRead",))

    session = await ksef.client.authenticate(BUYER, credential)

    assert await ksef.client.own_permissions(session.access_token) == {"InvoiceRead"}
    operation = running.sim.store.get(AuthOperation, session.auth_reference)
    assert operation is not None and operation.method.category == "Token"
    refreshed = await ksef.client.refresh(session.refresh_token)
    assert refreshed.token != session.access_token


async def test_a_wrong_token_fails_with_status_450_and_says_why(ksef: KsefHarness, running: RunningSim) -> None:
    real = await ksef.create_ksef_token(BUYER)
    reference, context, _secret = real.split("|")
    forged = KsefTokenCredential(SecretStr(f"{reference}|{context}|{'0' * 64}"))

    with pytest.raises(KsefAuthFailed) as failure:
        await ksef.client.authenticate(BUYER, forged)

    error = failure.value
    assert error.auth_status == 450 and error.codes == [450]
    assert "KSeF token is invalid" in error.description and "Nieprawidłowy token" in error.description
    assert error.reference_number and "-AU-" in error.reference_number
    # The failure is in the log as what it was, with the status code as its code.
    status_call = [c for c in ksef.recorder.calls if c.operation == "auth.status"][-1]
    assert (status_call.outcome, status_call.error_codes) == ("auth_failed", (450,))


async def test_a_token_of_another_context_is_a_bad_token(ksef: KsefHarness, running: RunningSim) -> None:
    credential = await ksef.token_credential(BUYER)

    with pytest.raises(KsefAuthFailed) as failure:
        await ksef.client.authenticate(SELLER, credential)

    assert failure.value.auth_status == 450


async def test_no_permission_in_the_context_fails_with_415(ksef: KsefHarness, running: RunningSim) -> None:
    # The stranger's own certificate, in the seller's context where nobody granted the stranger anything.
    with pytest.raises(KsefAuthFailed) as failure:
        await ksef.client.authenticate(SELLER, owner_certificate(STRANGER))

    assert failure.value.auth_status == 415
    assert "holds no permission in this context" in str(failure.value)


async def test_a_rotated_token_key_is_refetched_once_and_the_login_retried(
    ksef: KsefHarness, running: RunningSim
) -> None:
    credential = await ksef.token_credential(BUYER)
    await ksef.client.authenticate(BUYER, credential)  # caches the Ministry keys
    await ksef.operator("POST", "/keys/rotate", {"usage": "KsefTokenEncryption"})
    ksef.recorder.calls.clear()

    session = await ksef.client.authenticate(BUYER, credential)

    assert session.access_token
    submits = [c for c in ksef.recorder.calls if c.operation == "auth.ksef_token"]
    assert [(c.outcome, c.error_codes) for c in submits] == [("failed", (21470,)), ("ok", ())]
    assert ksef.recorder.operations().count("security.public_keys") == 1
