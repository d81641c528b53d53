"""The pre-signed blob endpoints behind every ``downloadUrl``/``url`` the API hands out (no bearer token, no rate
limit; REFERENCE.md §5, §6, §9). An invalid or expired signature answers 403 like Azure storage."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ksef_sim.crypto import sha256_b64
from ksef_sim.state import get_sim

router = APIRouter()

# Writable blob prefixes: only batch parts are uploaded by clients.
UPLOAD_PREFIX = "batch/"


def _content_type(blob: str) -> str:
    return "application/xml" if blob.endswith(".xml") else "application/octet-stream"


def _forbidden() -> Response:
    return Response(
        content=b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
        b"<Message>Server failed to authenticate the request or the link has expired.</Message></Error>",
        status_code=403,
        media_type="application/xml",
    )


@router.get("/storage/{blob:path}", include_in_schema=False)
async def download(blob: str, request: Request, se: str = "", sig: str = "") -> Response:
    sim = get_sim(request)
    if not sim.presigner.verify("GET", blob, se, sig, sim.clock.now()):
        return _forbidden()
    data = sim.store.get_blob(blob)
    if data is None:
        return Response(status_code=404)
    return Response(content=data, media_type=_content_type(blob), headers={"x-ms-meta-hash": sha256_b64(data)})


@router.put("/storage/{blob:path}", include_in_schema=False)
async def upload(blob: str, request: Request, se: str = "", sig: str = "") -> Response:
    sim = get_sim(request)
    if not blob.startswith(UPLOAD_PREFIX) or not sim.presigner.verify("PUT", blob, se, sig, sim.clock.now()):
        return _forbidden()
    if request.headers.get("x-ms-blob-type") != "BlockBlob":
        return Response(
            content=b"<Error><Code>MissingRequiredHeader</Code><Message>x-ms-blob-type</Message></Error>",
            status_code=400,
            media_type="application/xml",
        )
    sim.store.put_blob(blob, await request.body())
    return Response(status_code=201)
