"""A session key KSeF cannot decrypt (REFERENCE.md §4: the session opens with 201, its status turns 415 and sends
into it answer 21180): the gateway drops that session and opens another, and nothing is lost or sent twice."""

from __future__ import annotations

from typing import Any

import httpx

from integration.sales.world import Hub
from ksef_gateway.ksef.crypto import sha256_b64
from platform_common.testing import wait_until


async def sim_faults(hub: Hub, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=hub.sim.root_url, headers=hub.sim.operator_headers) as http:
        response = await (http.put("/_sim/faults", json=faults) if faults else http.delete("/_sim/faults"))
        assert response.status_code == 200, response.text


async def test_invoices_sent_into_a_session_with_a_refused_key_go_out_in_a_new_session(hub: Hub) -> None:
    await sim_faults(hub, refuseSessionKeys=True)
    bodies = [hub.fa3(f"FV/KEY/{i}") for i in range(3)]
    ids = [(await hub.submit(xml)).json()["id"] for xml in bodies]

    async def history(invoice_id: str) -> list[dict[str, Any]]:
        r = await hub.api.get(f"/clients/{hub.nip}/sales/{invoice_id}", headers=hub.reader)
        lines: list[dict[str, Any]] = r.json()["history"]
        return lines

    def refusals(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [h for h in lines if h["status"] == "queued" and 21180 in h["detail"].get("codes", [])]

    async def each_refused() -> bool:
        return all([refusals(await history(i)) for i in ids])

    # Each went back to the queue with KSeF's 21180: the session, not the invoice, is unusable.
    await wait_until(each_refused, timeout=30, interval=0.05, what="sends refused with 21180")
    assert hub.accepted_in_sim() == []
    refused_sessions = {h["detail"]["session"] for i in ids for h in await history(i) if h["status"] == "sending"}

    await sim_faults(hub)
    done = [await hub.final(i) for i in ids]
    assert [d["status"] for d in done] == ["accepted"] * 3, done
    assert sorted(i.invoice_hash for i in hub.accepted_in_sim()) == sorted(sha256_b64(b) for b in bodies)
    # Accepted in a session opened after the fault, never in one whose key KSeF refused.
    assert not {d["session_reference"] for d in done} & refused_sessions
