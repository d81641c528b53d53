"""What a client needs to trust the simulator's signatures, mounted at ``/_sim/trust`` (not a KSeF endpoint).

Public on purpose, unlike the rest of ``/_sim``: no token, no rate limit, no injected faults. It hands out only
public certificates, and a gateway pointed at the simulator loads its UPO trust anchor from here the way it would
be configured with the Ministry's CA for the real service.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request, Response

from ksef_sim.domain.certificates import SimCa
from ksef_sim.state import get_sim

PEM_MEDIA_TYPE = "application/x-pem-file"

router = APIRouter(tags=["Simulator trust"])


@router.get(
    "/trust/upo-ca.pem",
    response_class=Response,
    responses={200: {"content": {PEM_MEDIA_TYPE: {}}, "description": "The CA certificate, PEM"}},
    summary="The CA that issues the simulator's UPO signing certificate",
)
async def upo_ca(request: Request) -> Response:
    sim = get_sim(request)
    ca = SimCa.load_or_create(sim.store, sim.clock.now())
    return Response(content=ca.certificate.public_bytes(serialization.Encoding.PEM), media_type=PEM_MEDIA_TYPE)
