"""``GET /security/public-key-certificates`` (REFERENCE.md §3.10): the simulator's "Ministry" certificates."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from ksef_sim.clock import iso
from ksef_sim.crypto import sha256_b64
from ksef_sim.deps import public
from ksef_sim.state import get_sim

router = APIRouter()


class PublicKeyCertificate(BaseModel):
    certificate: str
    certificateId: str
    publicKeyId: str
    validFrom: str
    validTo: str
    usage: list[str]


@router.get("/security/public-key-certificates", dependencies=[Depends(public())])
async def public_key_certificates(request: Request) -> list[PublicKeyCertificate]:
    sim = get_sim(request)
    result = []
    for key in sim.keys.all():
        der = key.certificate.public_bytes(serialization.Encoding.DER)
        result.append(
            PublicKeyCertificate(
                certificate=key.certificate_der_b64,
                # Opaque on the real service; a digest of the certificate keeps it stable across restarts and
                # distinct from publicKeyId (which survives re-certification, §3.10).
                certificateId=sha256_b64(der),
                publicKeyId=key.public_key_id,
                validFrom=iso(key.certificate.not_valid_before_utc),
                validTo=iso(key.certificate.not_valid_after_utc),
                usage=[key.usage],
            )
        )
    return result
