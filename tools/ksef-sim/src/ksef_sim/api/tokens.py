"""KSeF tokens (REFERENCE.md §16): ``POST /tokens``, ``GET /tokens``, ``GET|DELETE /tokens/{referenceNumber}``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ksef_sim.clock import iso
from ksef_sim.deps import access
from ksef_sim.domain.auth import (
    TOKEN_CONTEXT_TYPES,
    KsefToken,
    TokenStatus,
    decode_continuation,
    encode_continuation,
    new_token,
)
from ksef_sim.errors import Forbidden, KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Caller
from ksef_sim.state import get_sim

router = APIRouter()

TokenPermission = Literal[
    "InvoiceRead",
    "InvoiceWrite",
    "CredentialsRead",
    "CredentialsManage",
    "SubunitManage",
    "EnforcementOperations",
    "Introspection",
]
ReferenceNumberPath = Annotated[str, Path(min_length=36, max_length=36)]


class GenerateTokenRequest(BaseModel):
    permissions: list[TokenPermission]
    description: str = Field(min_length=5, max_length=256)


class GenerateTokenResponse(BaseModel):
    referenceNumber: str
    token: str = Field(max_length=160)


class IdentifierModel(BaseModel):
    type: str
    value: str


class TokenStatusResponse(BaseModel):
    referenceNumber: str
    authorIdentifier: IdentifierModel
    contextIdentifier: IdentifierModel
    description: str
    requestedPermissions: list[str]
    dateCreated: str
    lastUseDate: str | None = None
    status: str
    statusDetails: list[str] = []


class QueryTokensResponse(BaseModel):
    continuationToken: str | None = None
    tokens: list[TokenStatusResponse]


def _view(token: KsefToken, now: datetime) -> TokenStatusResponse:
    return TokenStatusResponse(
        referenceNumber=token.reference_number,
        authorIdentifier=IdentifierModel(type=token.author.type, value=token.author.value),
        contextIdentifier=IdentifierModel(type=token.context.type, value=token.context.value),
        description=token.description,
        requestedPermissions=list(token.permissions),
        dateCreated=iso(token.date_created),
        lastUseDate=iso(token.last_use_date) if token.last_use_date else None,
        status=token.status(now).value,
        statusDetails=[],
    )


def _visible(caller: Caller, token: KsefToken) -> bool:
    """The scope rule of ``GET /tokens`` (spec): Credentials* see the whole context, a token sees itself, others
    see the tokens they authored."""
    if token.context.identifier() != caller.context:
        return False
    if caller.has_any("CredentialsManage", "CredentialsRead"):
        return True
    if caller.auth_method == "Token":
        return token.reference_number == caller.ksef_token_reference
    return token.author.identifier() == caller.subject


def _may_revoke(caller: Caller, token: KsefToken) -> bool:
    if caller.has_any("CredentialsManage"):
        return True
    if caller.auth_method == "Token":
        return token.reference_number == caller.ksef_token_reference
    return token.author.identifier() == caller.subject


@router.post("/tokens", status_code=202)
async def generate_token(
    request: Request, body: GenerateTokenRequest, caller: Annotated[Caller, Depends(access(Group.OTHER))]
) -> GenerateTokenResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    # Creating tokens needs a signature-based authentication, never a token (REFERENCE.md §16).
    if caller.auth_method == "Token":
        raise Forbidden(
            "auth-method-not-allowed",
            "Ta operacja nie jest dostępna dla użytej metody uwierzytelnienia.",
            {"authenticationMethodCategory": caller.auth_method},
        )
    if caller.context.type not in TOKEN_CONTEXT_TYPES:
        raise KsefError(
            26002,
            f"Bieżący typ kontekstu: {caller.context.type}; dozwolone: {', '.join(TOKEN_CONTEXT_TYPES)}.",
        )
    missing = sorted(set(body.permissions) - caller.permissions)
    if missing:
        raise KsefError(26001, f"Brakujące uprawnienia: {', '.join(missing)}.")
    reference = reference_number(RefType.KSEF_TOKEN, now)
    record, plaintext = new_token(
        reference, caller.subject, caller.context, body.description, list(body.permissions), now
    )
    sim.store.put(record)
    return GenerateTokenResponse(referenceNumber=reference, token=plaintext)


@router.get("/tokens", response_model_exclude_none=True)
async def query_tokens(
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.OTHER))],
    status: Annotated[list[TokenStatus] | None, Query()] = None,
    description: Annotated[str | None, Query(min_length=3)] = None,
    authorIdentifier: Annotated[str | None, Query(min_length=3)] = None,
    authorIdentifierType: Annotated[Literal["Nip", "Pesel", "Fingerprint"] | None, Query()] = None,
    pageSize: Annotated[int, Query(ge=10, le=100)] = 10,
    x_continuation_token: Annotated[str | None, Header()] = None,
) -> QueryTokensResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    offset = decode_continuation(x_continuation_token)
    wanted = set(status or ())
    matches = []
    for token in sim.store.all(KsefToken):
        if not _visible(caller, token):
            continue
        if wanted and token.status(now) not in wanted:
            continue
        if description and description.casefold() not in token.description.casefold():
            continue
        if authorIdentifier and authorIdentifier.casefold() not in token.author.value.casefold():
            continue
        if authorIdentifierType and token.author.type != authorIdentifierType:
            continue
        matches.append(token)
    matches.sort(key=lambda t: (t.date_created, t.reference_number), reverse=True)
    page = matches[offset : offset + pageSize]
    more = offset + pageSize < len(matches)
    return QueryTokensResponse(
        continuationToken=encode_continuation(offset + pageSize) if more else None,
        tokens=[_view(token, now) for token in page],
    )


def _token(request: Request, caller: Caller, reference: str) -> KsefToken:
    token = get_sim(request).store.get(KsefToken, reference)
    # Tokens of other contexts do not exist for the caller.
    if token is None or token.context.identifier() != caller.context:
        raise KsefError(21405, f"Token o numerze referencyjnym {reference} nie istnieje.")
    return token


@router.get("/tokens/{referenceNumber}", response_model_exclude_none=True)
async def token_status(
    request: Request,
    referenceNumber: ReferenceNumberPath,
    caller: Annotated[Caller, Depends(access(Group.OTHER))],
) -> TokenStatusResponse:
    token = _token(request, caller, referenceNumber)
    if not _visible(caller, token):
        raise Forbidden("insufficient-resource-access", "Brak dostępu do wskazanego zasobu.")
    return _view(token, get_sim(request).clock.now())


@router.delete("/tokens/{referenceNumber}", status_code=204)
async def revoke_token(
    request: Request,
    referenceNumber: ReferenceNumberPath,
    caller: Annotated[Caller, Depends(access(Group.OTHER))],
) -> Response:
    sim = get_sim(request)
    token = _token(request, caller, referenceNumber)
    if not _may_revoke(caller, token):
        raise Forbidden("insufficient-resource-access", "Brak dostępu do wskazanego zasobu.")
    if token.revoke_requested_at is None:
        token.revoke_requested_at = sim.clock.now()
        sim.store.put(token)
    return Response(status_code=204)
