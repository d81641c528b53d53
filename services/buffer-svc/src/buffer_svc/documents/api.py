"""The invoices' documents over HTTP: an entry's XML and HTML preview, a month's ZIP bundle for desktop ERPs.

The routes' gate is the buffer's (the client's people, or an office whose integration is active now); the XML is
fetched from the gateway with this service's own token and checked against KSeF's hash before it is served.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from buffer_svc.documents.domain import DocumentError
from buffer_svc.documents.gateway import TokenSource
from buffer_svc.documents.service import Documents
from buffer_svc.wiring import Buffer
from platform_common.auth import Principal, require
from platform_common.auth.authenticator import Authenticator
from platform_common.auth.dependencies import path_client_nip
from platform_common.contracts.months import PERIOD_PATTERN
from platform_common.problems import Problem

router = APIRouter(tags=["documents"])

Reader = Annotated[Principal, Depends(require("buffer.read", client_nip_param="nip"))]
HASH_HEADER = "X-KSeF-Invoice-Hash"


def _documents(request: Request) -> Documents:
    return Buffer.of(request.app.state.runtime).documents


def _service_token(request: Request) -> TokenSource:
    authenticator: Authenticator = request.app.state.authenticator
    tokens = authenticator.service_tokens
    if tokens is None:
        raise Problem(
            503,
            "Service Unavailable",
            "buffer-svc has no client credentials (BUFFER_AUTH__CLIENT_SECRET), so it cannot fetch documents.",
            code="documents-unavailable",
        )
    return tokens.token


DocumentsDep = Annotated[Documents, Depends(_documents)]
TokenDep = Annotated[TokenSource, Depends(_service_token)]


def _problem(exc: DocumentError) -> Problem:
    titles = {404: "Not Found", 422: "Unprocessable Content", 502: "Bad Gateway", 503: "Service Unavailable"}
    return Problem(exc.status, titles.get(exc.status, "Refused"), str(exc), code=exc.code)


@router.get(
    "/clients/{nip}/purchases/{entry_id}/xml",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "The FA XML exactly as KSeF stored it"}},
    summary="The invoice's XML (checked against KSeF's SHA-256, which X-KSeF-Invoice-Hash carries)",
)
async def xml(nip: str, entry_id: uuid.UUID, principal: Reader, documents: DocumentsDep, token: TokenDep) -> Response:
    try:
        document = await documents.xml(principal, path_client_nip(nip), entry_id, token)
    except DocumentError as exc:
        raise _problem(exc) from None
    return Response(
        document.content,
        media_type="application/xml",
        headers={
            HASH_HEADER: document.invoice_hash,
            "Content-Disposition": f'attachment; filename="{document.ksef_number}.xml"',
        },
    )


@router.get(
    "/clients/{nip}/purchases/{entry_id}/preview",
    response_class=HTMLResponse,
    summary="The invoice as a readable page (parties, lines, totals by rate), in Polish or English",
)
async def preview(
    nip: str,
    entry_id: uuid.UUID,
    principal: Reader,
    documents: DocumentsDep,
    token: TokenDep,
    lang: Literal["pl", "en"] = "pl",
) -> HTMLResponse:
    try:
        page = await documents.preview(principal, path_client_nip(nip), entry_id, token, language=lang)
    except DocumentError as exc:
        raise _problem(exc) from None
    # The page comes from a third party's document: nothing in it may run or load anything.
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


@router.get(
    "/clients/{nip}/ready.zip",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "faktury/*.xml, manifest.json, manifest.csv"}},
    summary="Ready to book as a ZIP of the FA XML files with a manifest (for desktop ERPs)",
)
async def bundle(
    nip: str,
    principal: Reader,
    documents: DocumentsDep,
    token: TokenDep,
    period: Annotated[str | None, Query(pattern=PERIOD_PATTERN)] = None,
    include_imported: bool = False,
) -> Response:
    client_nip = path_client_nip(nip)
    try:
        archive = await documents.bundle(principal, client_nip, period, token, include_imported=include_imported)
    except DocumentError as exc:
        raise _problem(exc) from None
    name = f"ksef-{client_nip}-{period or 'all'}.zip"
    return Response(
        archive, media_type="application/zip", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
