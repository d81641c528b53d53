"""UPOs are receipts only when their signature holds: the simulator signs them (XAdES, its own CA, published at
``/_sim/trust/upo-ca.pem``), the gateway verifies each before storing it, and a tampered one leaves the invoice
waiting with the reason, until a good one arrives."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from integration.sales.world import Hub
from ksef_gateway.sales.upo import load_trust_anchors, verify_upo


async def test_a_tampered_upo_is_refused_and_the_genuine_one_is_stored(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = hub.gateway.sales_sender._ksef  # what the sender asks KSeF through
    genuine = port.upo
    served: list[bytes] = []

    async def tampered_once(*args: Any, **kwargs: Any) -> bytes:
        upo = await genuine(*args, **kwargs)
        if not served:
            # Change what the signature covers: KSeF's number in the document, as a forger would.
            upo = upo.replace(b"<NumerKSeFDokumentu>", b"<NumerKSeFDokumentu>9", 1)
        served.append(upo)
        return upo

    monkeypatch.setattr(port, "upo", tampered_once)
    invoice = (await hub.submit(hub.fa3("FV/UPO/1"))).json()
    done = await hub.final(invoice["id"])
    assert done["status"] == "accepted" and len(served) >= 2
    refused = [h for h in done["history"] if "upo_refused" in h["detail"]]
    assert len(refused) == 1 and refused[0]["status"] == "submitted", done["history"]

    upo = await hub.api.get(f"/clients/{hub.nip}/sales/{invoice['id']}/upo", headers=hub.reader)
    assert upo.status_code == 200 and upo.content == served[-1]
    async with httpx.AsyncClient(base_url=hub.sim.root_url) as http:
        ca = await http.get("/_sim/trust/upo-ca.pem")
    assert ca.status_code == 200
    verify_upo(upo.content, load_trust_anchors(ca.content))  # the stored receipt verifies independently
