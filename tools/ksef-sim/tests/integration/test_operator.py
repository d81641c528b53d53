"""The operator API under /_sim: faults hit /v2 (and only /v2), the clock moves the world, keys rotate, seeding
fills what the receiving side queries; invalid input is a 422 problem document."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ksef_sim.crypto import KSEF_TOKEN_ENCRYPTION, SYMMETRIC_KEY_ENCRYPTION, b64, rsa_oaep_encrypt, sha256_b64
from ksef_sim.records import StoredInvoice
from ksef_sim.state import Sim
from ksef_sim.testing import operator_headers

BUYER = "7352765225"
SUBJECT3 = "9795075130"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PKC = "/v2/security/public-key-certificates"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def root(sim_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim_app, client=("127.0.0.1", 50000))
    headers = operator_headers(sim_app)
    async with httpx.AsyncClient(transport=transport, base_url="https://ksef-sim.test", headers=headers) as c:
        yield c


@pytest.fixture(autouse=True)
def frozen(sim: Sim) -> None:
    sim.clock.set(NOW, frozen=True)


def assert_problem(response: httpx.Response, *fields: str) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == 422 and body["title"]
    for field in fields:
        assert field in body["detail"], body
        assert any(error["field"] == field for error in body.get("errors", [])) or field in body["detail"]
    return body


# --- faults -----------------------------------------------------------------------------------------------------


async def test_outage_answers_503_on_v2_only_until_cleared(root: httpx.AsyncClient) -> None:
    assert (await root.get(PKC)).status_code == 200

    put = await root.put("/_sim/faults", json={"outage": True, "outageMessage": "Awaria testowa"})
    assert put.status_code == 200
    assert put.json()["outage"] is True and put.json()["kind"] == "FAILURE"
    assert put.json()["outageSince"].startswith("2026-03-10T12:00:00")

    down = await root.get(PKC)
    assert down.status_code == 503 and down.headers["retry-after"]
    # The operator, Latarnia and health stay reachable to observe and heal.
    assert (await root.get("/_sim/faults")).json()["outage"] is True
    assert (await root.get("/status")).json()["status"] == "FAILURE"
    assert (await root.get("/healthz")).status_code == 200

    cleared = await root.delete("/_sim/faults")
    assert cleared.status_code == 200 and cleared.json()["outage"] is False and cleared.json()["outageSince"] is None
    assert (await root.get(PKC)).status_code == 200


async def test_the_outage_retry_after_is_configurable(root: httpx.AsyncClient) -> None:
    put = await root.put("/_sim/faults", json={"outage": True, "retryAfterSeconds": 2})
    assert put.status_code == 200 and put.json()["retryAfterSeconds"] == 2

    down = await root.get(PKC)
    assert down.status_code == 503 and down.headers["retry-after"] == "2"


async def test_stats_count_v2_answers_by_status_the_operator_api_not_at_all(root: httpx.AsyncClient) -> None:
    assert (await root.get(PKC)).status_code == 200
    await root.post("/_sim/faults/force-429", json={"count": 2})
    for _ in range(2):
        assert (await root.get(PKC)).status_code == 429
    await root.put("/_sim/faults", json={"outage": True})
    assert (await root.get(PKC)).status_code == 503
    await root.delete("/_sim/faults")

    stats = (await root.get("/_sim/stats")).json()
    assert stats["responsesByStatus"] == {"200": 1, "429": 2, "503": 1}


async def test_put_replaces_the_whole_fault_set(root: httpx.AsyncClient, sim: Sim) -> None:
    await root.put("/_sim/faults", json={"errorRate": 0.5, "stuckExports": True, "latencyMs": 5})
    response = await root.put("/_sim/faults", json={"stuckExports": True})

    assert response.json() == {
        "outage": False,
        "kind": "FAILURE",
        "outageMessage": None,
        "retryAfterSeconds": 60,
        "latencyMs": 0,
        "errorRate": 0.0,
        "stuckExports": True,
        "refuseSessionKeys": False,
        "forced429s": 0,
        "outageSince": None,
    }
    assert (sim.faults.error_rate, sim.faults.latency_ms, sim.faults.stuck_exports) == (0.0, 0, True)


async def test_error_rate_one_fails_every_v2_call_with_a_ksef_500(root: httpx.AsyncClient) -> None:
    await root.put("/_sim/faults", json={"errorRate": 1.0})

    for _ in range(3):
        response = await root.get(PKC)
        assert response.status_code == 500
        assert response.json()["exception"]["exceptionDetailList"][0]["exceptionCode"] == 500
    assert (await root.get("/_sim/stats")).status_code == 200  # never the operator

    await root.put("/_sim/faults", json={"errorRate": 0})
    assert (await root.get(PKC)).status_code == 200


async def test_latency_is_added_to_v2_calls(root: httpx.AsyncClient) -> None:
    await root.put("/_sim/faults", json={"latencyMs": 120})

    began = time.perf_counter()
    assert (await root.get(PKC)).status_code == 200
    assert time.perf_counter() - began >= 0.12

    began = time.perf_counter()
    assert (await root.get("/_sim/faults")).status_code == 200
    assert time.perf_counter() - began < 0.12


async def test_forced_429s_hit_the_next_calls_then_stop(root: httpx.AsyncClient) -> None:
    response = await root.post("/_sim/faults/force-429", json={"count": 2})
    assert response.status_code == 200 and response.json()["forced429s"] == 2

    first = await root.get(PKC)
    assert first.status_code == 429 and first.headers["retry-after"]
    assert (await root.get("/_sim/faults")).json()["forced429s"] == 1
    assert (await root.get(PKC)).status_code == 429
    assert (await root.get(PKC)).status_code == 200

    await root.post("/_sim/faults/force-429", json={"count": 5})
    assert (await root.delete("/_sim/faults")).json()["forced429s"] == 0
    assert (await root.get(PKC)).status_code == 200


async def test_stuck_exports_stay_at_100_until_the_fault_is_cleared(
    root: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    await root.post("/_sim/seed", json={"buyerNip": BUYER, "count": 5, "spreadDays": 2})
    await root.put("/_sim/faults", json={"stuckExports": True})
    certificate = sim.keys.for_usage(SYMMETRIC_KEY_ENCRYPTION).certificate_der_b64
    body = {
        "encryption": {
            "encryptedSymmetricKey": b64(rsa_oaep_encrypt(certificate, os.urandom(32))),
            "initializationVector": b64(os.urandom(16)),
        },
        "filters": {
            "subjectType": "Subject2",
            "dateRange": {"dateType": "PermanentStorage", "from": (NOW - timedelta(days=5)).isoformat()},
        },
    }
    headers = bearer(mint_access(BUYER))
    created = await root.post("/v2/invoices/exports", json=body, headers=headers)
    assert created.status_code == 201, created.text
    status_url = f"/v2/invoices/exports/{created.json()['referenceNumber']}"

    sim.clock.advance(600)
    assert (await root.get(status_url, headers=headers)).json()["status"]["code"] == 100

    await root.delete("/_sim/faults")
    sim.clock.advance(60)
    assert (await root.get(status_url, headers=headers)).json()["status"]["code"] == 200


def _encryption(sim: Sim) -> dict[str, str]:
    certificate = sim.keys.for_usage(SYMMETRIC_KEY_ENCRYPTION).certificate_der_b64
    return {
        "encryptedSymmetricKey": b64(rsa_oaep_encrypt(certificate, os.urandom(32))),
        "initializationVector": b64(os.urandom(16)),
    }


async def test_refused_session_keys_make_new_sessions_415_until_cleared(
    root: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    headers = bearer(mint_access(BUYER))
    fa3 = {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"}

    async def open_online() -> str:
        opened = await root.post(
            "/v2/sessions/online", json={"formCode": fa3, "encryption": _encryption(sim)}, headers=headers
        )
        assert opened.status_code == 201, opened.text  # §4: a bad key is never refused at open
        return str(opened.json()["referenceNumber"])

    async def status(ref: str) -> int:
        return int((await root.get(f"/v2/sessions/{ref}", headers=headers)).json()["status"]["code"])

    faults = await root.put("/_sim/faults", json={"refuseSessionKeys": True})
    assert faults.status_code == 200 and faults.json()["refuseSessionKeys"] is True
    assert sim.faults.refuse_session_keys is True

    online = await open_online()
    assert await status(online) == 415
    # A well-formed send into it (what the key could not decrypt does not matter any more): 400 21180, as §4 says.
    send = await root.post(
        f"/v2/sessions/online/{online}/invoices",
        json={
            "invoiceHash": b64(os.urandom(32)),
            "invoiceSize": 100,
            "encryptedInvoiceHash": b64(os.urandom(32)),
            "encryptedInvoiceSize": 112,
            "encryptedInvoiceContent": b64(os.urandom(112)),
        },
        headers=headers,
    )
    assert send.status_code == 400
    assert [e["exceptionCode"] for e in send.json()["exception"]["exceptionDetailList"]] == [21180]

    # Batch: the package cannot be decrypted either, which shows once it is processed after close (§5).
    part = os.urandom(64)
    package = {"fileSize": 48, "fileHash": b64(os.urandom(32))}
    batch = await root.post(
        "/v2/sessions/batch",
        json={
            "formCode": fa3,
            "batchFile": {
                **package,
                "fileParts": [{"ordinalNumber": 1, "fileSize": len(part), "fileHash": sha256_b64(part)}],
            },
            "encryption": _encryption(sim),
        },
        headers=headers,
    )
    assert batch.status_code == 201, batch.text
    batch_ref = batch.json()["referenceNumber"]
    [upload] = batch.json()["partUploadRequests"]
    assert (await root.put(upload["url"], content=part, headers=upload["headers"])).status_code == 201
    assert (await root.post(f"/v2/sessions/batch/{batch_ref}/close", headers=headers)).status_code == 204
    assert await status(batch_ref) == 415

    # Cleared: new sessions are usable again; those opened under the fault keep their undecryptable key.
    assert (await root.delete("/_sim/faults")).json()["refuseSessionKeys"] is False
    assert await status(await open_online()) == 100
    assert await status(online) == 415


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"errorRate": 1.5}, ["errorRate"]),
        ({"latencyMs": -1}, ["latencyMs"]),
        ({"kind": "PARTIAL"}, ["kind"]),
        ({"outage": True, "typo": 1}, ["typo"]),
    ],
)
async def test_invalid_faults_are_422_problems_and_change_nothing(
    root: httpx.AsyncClient, sim: Sim, body: dict[str, Any], fields: list[str]
) -> None:
    assert_problem(await root.put("/_sim/faults", json=body), *fields)
    assert sim.faults.outage is False and sim.faults.error_rate == 0.0


async def test_invalid_force_429_count_is_a_422(root: httpx.AsyncClient) -> None:
    assert_problem(await root.post("/_sim/faults/force-429", json={"count": -3}), "count")
    assert_problem(await root.post("/_sim/faults/force-429", json={}), "count")


# --- clock ------------------------------------------------------------------------------------------------------


async def test_clock_advances_sets_and_resets_and_is_persisted(root: httpx.AsyncClient, sim: Sim) -> None:
    view = (await root.get("/_sim/clock")).json()
    assert view["frozen"] is True and view["now"].startswith("2026-03-10T12:00:00")

    advanced = await root.post("/_sim/clock/advance", json={"seconds": 5400})
    assert advanced.status_code == 200 and advanced.json()["now"].startswith("2026-03-10T13:30:00")
    assert sim.clock.now() == NOW + timedelta(seconds=5400)
    assert sim.store.get_meta("clock")["frozen_at"].startswith("2026-03-10T13:30:00")

    running = await root.put("/_sim/clock", json={"now": "2027-01-01T00:00:00+01:00", "frozen": False})
    assert running.json()["frozen"] is False
    assert abs((sim.clock.now() - datetime(2026, 12, 31, 23, tzinfo=UTC)).total_seconds()) < 60
    assert sim.store.get_meta("clock")["frozen_at"] is None and sim.store.get_meta("clock")["offset_s"] > 0

    reset = await root.delete("/_sim/clock")
    assert reset.json()["frozen"] is False and reset.json()["offsetSeconds"] == 0
    assert abs((sim.clock.now() - datetime.now(UTC)).total_seconds()) < 60
    assert sim.store.get_meta("clock") == {"offset_s": 0.0, "frozen_at": None}


async def test_clock_refuses_naive_times_and_going_backwards(root: httpx.AsyncClient, sim: Sim) -> None:
    assert_problem(await root.put("/_sim/clock", json={"now": "2027-01-01T00:00:00"}), "now")
    assert_problem(await root.post("/_sim/clock/advance", json={"seconds": -60}), "seconds")
    assert sim.clock.now() == NOW


async def test_clock_moves_token_expiry(root: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    headers = bearer(mint_access(BUYER))
    query = {"subjectType": "Subject2", "dateRange": {"dateType": "PermanentStorage", "from": "2026-03-01T00:00:00Z"}}
    assert (await root.post("/v2/invoices/query/metadata", json=query, headers=headers)).status_code == 200

    await root.post("/_sim/clock/advance", json={"seconds": 24 * 3600})
    assert (await root.post("/v2/invoices/query/metadata", json=query, headers=headers)).status_code == 401


# --- keys -------------------------------------------------------------------------------------------------------


async def test_key_rotation_withdraws_the_old_public_key_id(root: httpx.AsyncClient, sim: Sim) -> None:
    before = {c["usage"][0]: c["publicKeyId"] for c in (await root.get(PKC)).json()}

    rotated = await root.post("/_sim/keys/rotate", json={"usage": SYMMETRIC_KEY_ENCRYPTION})
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["previousPublicKeyId"] == before[SYMMETRIC_KEY_ENCRYPTION] != body["publicKeyId"]

    after = {c["usage"][0]: c["publicKeyId"] for c in (await root.get(PKC)).json()}
    assert after == {
        SYMMETRIC_KEY_ENCRYPTION: body["publicKeyId"],
        KSEF_TOKEN_ENCRYPTION: before[KSEF_TOKEN_ENCRYPTION],
    }
    assert sim.keys.resolve(SYMMETRIC_KEY_ENCRYPTION, body["previousPublicKeyId"]) is None  # → 21470
    assert sim.keys.resolve(SYMMETRIC_KEY_ENCRYPTION, body["publicKeyId"]) is not None


async def test_key_rotation_needs_a_known_usage(root: httpx.AsyncClient) -> None:
    assert_problem(await root.post("/_sim/keys/rotate", json={"usage": "Signing"}), "usage")


# --- seeding and stats ------------------------------------------------------------------------------------------


async def test_seeded_invoices_are_what_the_buyer_queries(
    root: httpx.AsyncClient, sim: Sim, mint_access: Callable[..., str]
) -> None:
    response = await root.post(
        "/_sim/seed",
        json={"buyerNip": BUYER, "count": 140, "sellers": 6, "spreadDays": 20, "subject3Nip": SUBJECT3},
    )
    assert response.status_code == 201, response.text
    seeded = response.json()
    assert seeded["created"] == 140 and seeded["buyerNip"] == BUYER and len(seeded["sellers"]) == 6
    assert len(seeded["ksefNumbers"]) == 100 and len(set(seeded["ksefNumbers"])) == 100
    assert seeded["withSubject3"] > 0
    assert datetime.fromisoformat(seeded["lastAcquisitionDate"]) <= NOW

    stats = (await root.get("/_sim/stats")).json()
    assert stats["invoices"] == 140 == sum(stats["invoicesByType"].values())
    assert stats["invoicesByType"]["Kor"] == seeded["corrections"]
    assert stats["records"]["invoice"] == 140

    # The receiving side sees them: the buyer's purchase invoices (Subject2) and the third party's (Subject3).
    query = {
        "subjectType": "Subject2",
        "dateRange": {"dateType": "PermanentStorage", "from": (NOW - timedelta(days=21)).isoformat()},
    }
    page = await root.post("/v2/invoices/query/metadata?pageSize=250", json=query, headers=bearer(mint_access(BUYER)))
    assert page.status_code == 200, page.text
    found = {i["ksefNumber"] for i in page.json()["invoices"]}
    assert found == {i.ksef_number for i in sim.store.all(StoredInvoice)}
    first = seeded["ksefNumbers"][0]
    download = await root.get(f"/v2/invoices/ksef/{first}", headers=bearer(mint_access(BUYER)))
    assert download.status_code == 200 and download.content == sim.store.get_blob(f"invoice/{first}")

    query["subjectType"] = "Subject3"
    third = await root.post(
        "/v2/invoices/query/metadata?pageSize=250", json=query, headers=bearer(mint_access(SUBJECT3))
    )
    assert len(third.json()["invoices"]) == seeded["withSubject3"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"buyerNip": "123", "count": 1}, "buyerNip"),
        ({"buyerNip": BUYER, "count": 0}, "count"),
        ({"buyerNip": BUYER, "count": 1, "corrections": 2}, "corrections"),
        ({"buyerNip": BUYER, "count": 1, "start": "2026-01-01T00:00:00"}, "start"),
        ({"buyerNip": BUYER}, "count"),
    ],
)
async def test_invalid_seed_requests_are_422(
    root: httpx.AsyncClient, sim: Sim, body: dict[str, Any], field: str
) -> None:
    assert_problem(await root.post("/_sim/seed", json=body), field)
    assert sim.store.count(StoredInvoice) == 0


async def test_seed_window_in_the_future_is_a_clear_422(root: httpx.AsyncClient, sim: Sim) -> None:
    start = (NOW + timedelta(days=1)).isoformat()
    body = assert_problem(await root.post("/_sim/seed", json={"buyerNip": BUYER, "count": 3, "start": start}))
    assert "after the simulator's now" in body["detail"]
    assert sim.store.count(StoredInvoice) == 0
