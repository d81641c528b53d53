"""Authentication (REFERENCE.md §3): challenge → XAdES or KSeF token → status → redeem → refresh → sessions.

Credential problems after the submit is accepted are not HTTP errors: they become the operation's status
(415/425/450/460/470/480) read through ``GET /auth/{referenceNumber}``. Authentication is asynchronous, as on KSeF
(§3.5, §3.6): for ``auth_processing_delay_s`` (simulator clock) after the submit the status is 100 and a redeem is
21301, so clients have to poll; with a frozen clock, advance it past the delay. The credential itself is judged at
submit, the subject's permissions in the context when the processing ends (``domain.auth.settle``).

Routes under ``/auth/…`` with fixed segments are declared before ``GET /auth/{referenceNumber}`` on purpose.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import jwt
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ksef_sim.clock import iso
from ksef_sim.crypto import KSEF_TOKEN_ENCRYPTION, DecryptionError, b64decode
from ksef_sim.deps import access, authentication_claims, public, refresh_claims
from ksef_sim.domain.auth import (
    BAD_ENCODING,
    CERT_INVALID,
    CERT_REVOKED,
    CERT_UNTRUSTED,
    INTERNAL_CERTIFICATE,
    QUALIFIED_SEAL,
    QUALIFIED_SIGNATURE,
    STATUS_DESCRIPTIONS,
    TOKEN_METHOD,
    AuthOperation,
    Challenge,
    Ident,
    Outcome,
    consume_challenge,
    current_permissions,
    decode_continuation,
    encode_continuation,
    ip_rules,
    ms_since_epoch,
    prune_challenges,
    settle,
    token_is_revoked,
    truncate_to_ms,
)
from ksef_sim.domain.auth import (
    check_token_credential as check_token,
)
from ksef_sim.domain.certificates import CertificateStatus, ksef_certificate
from ksef_sim.domain.xades import (
    CERTIFICATE_SUBJECT,
    XadesError,
    is_seal,
    parse_signed_request,
    subject_from_certificate,
)
from ksef_sim.errors import Forbidden, Gone, KsefError, Unauthorized
from ksef_sim.ratelimit import Group
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import AUTHENTICATION_TOKEN, REFRESH_TOKEN, Caller, Identifier, bearer_token, client_ip
from ksef_sim.state import Sim, get_sim

router = APIRouter()

_IP4 = r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_NIP = r"[1-9]((\d[1-9])|([1-9]\d))\d{7}"
# Context identifier formats (REFERENCE.md §2); NipVatUe's per-country part is checked loosely.
_CONTEXT_PATTERNS = {
    "Nip": re.compile(rf"^{_NIP}$"),
    "InternalId": re.compile(rf"^{_NIP}-\d{{5}}$"),
    "NipVatUe": re.compile(rf"^{_NIP}-[A-Z]{{2}}[A-Z0-9+*]{{2,12}}$"),
    "PeppolId": re.compile(r"^P[A-Z]{2}[0-9]{6}$"),
}
ReferenceNumberPath = Annotated[str, Path(min_length=36, max_length=36)]


# --- schemas (field names as in the spec) ----------------------------------------------------------------------


class AuthenticationChallengeResponse(BaseModel):
    challenge: str
    timestamp: str
    timestampMs: int
    clientIp: str


class AuthenticationContextIdentifier(BaseModel):
    type: Literal["Nip", "InternalId", "NipVatUe", "PeppolId"]
    value: str


class AllowedIps(BaseModel):
    ip4Addresses: list[Annotated[str, Field(pattern=rf"^{_IP4}$")]] | None = Field(default=None, max_length=10)
    ip4Ranges: list[Annotated[str, Field(pattern=rf"^{_IP4}-{_IP4}$")]] | None = Field(default=None, max_length=10)
    ip4Masks: list[Annotated[str, Field(pattern=rf"^{_IP4}/(0|[1-9]|[12][0-9]|3[0-2])$")]] | None = Field(
        default=None, max_length=10
    )


class AuthorizationPolicy(BaseModel):
    allowedIps: AllowedIps | None = None


class InitTokenAuthenticationRequest(BaseModel):
    challenge: str = Field(min_length=36, max_length=36)
    contextIdentifier: AuthenticationContextIdentifier
    encryptedToken: str
    publicKeyId: str | None = Field(default=None, min_length=44, max_length=44)
    authorizationPolicy: AuthorizationPolicy | None = None


class TokenInfo(BaseModel):
    token: str
    validUntil: str


class AuthenticationInitResponse(BaseModel):
    referenceNumber: str
    authenticationToken: TokenInfo


class StatusInfo(BaseModel):
    code: int
    description: str
    details: list[str] | None = None


class AuthenticationMethodInfo(BaseModel):
    category: str
    code: str
    displayName: str


class AuthenticationOperationStatusResponse(BaseModel):
    startDate: str
    authenticationMethod: str
    authenticationMethodInfo: AuthenticationMethodInfo
    status: StatusInfo
    isTokenRedeemed: bool | None = None
    lastTokenRefreshDate: str | None = None
    refreshTokenValidUntil: str | None = None


class AuthenticationListItem(AuthenticationOperationStatusResponse):
    referenceNumber: str
    isCurrent: bool


class AuthenticationListResponse(BaseModel):
    continuationToken: str | None = None
    items: list[AuthenticationListItem]


class AuthenticationTokensResponse(BaseModel):
    accessToken: TokenInfo
    refreshToken: TokenInfo


class AuthenticationTokenRefreshResponse(BaseModel):
    accessToken: TokenInfo


# --- helpers ---------------------------------------------------------------------------------------------------


def _check_context(context: Identifier) -> None:
    pattern = _CONTEXT_PATTERNS.get(context.type)
    if pattern is None or not pattern.match(context.value):
        raise KsefError(21405, f"contextIdentifier: nieprawidłowa wartość identyfikatora typu {context.type}.")


def _status_info(outcome: Outcome) -> StatusInfo:
    return StatusInfo(
        code=outcome.code,
        description=STATUS_DESCRIPTIONS.get(outcome.code, STATUS_DESCRIPTIONS[500]),
        details=list(outcome.details) or None,
    )


def _status_response(operation: AuthOperation, now: datetime) -> dict[str, Any]:
    method = operation.method
    return {
        "startDate": iso(operation.start_date),
        "authenticationMethod": method.method,
        "authenticationMethodInfo": AuthenticationMethodInfo(
            category=method.category, code=method.code, displayName=method.display_name
        ),
        "status": _status_info(operation.status(now)),
        "isTokenRedeemed": operation.redeemed_at is not None,
        "lastTokenRefreshDate": iso(operation.last_token_refresh_date) if operation.last_token_refresh_date else None,
        "refreshTokenValidUntil": (
            iso(operation.refresh_token_valid_until) if operation.refresh_token_valid_until else None
        ),
    }


def _start(
    sim: Sim, operation: AuthOperation, outcome: Outcome | None, now: datetime, *, limit: list[str] | None = None
) -> AuthenticationInitResponse:
    """Store the operation and answer 202. ``outcome`` ``None``: the credential checked out, and the permissions
    (at most ``limit``) are judged when the processing ends (``settle``)."""
    if outcome is None:
        operation.awaiting_permissions = True
        operation.permission_limit = limit
    else:
        operation.status_code = outcome.code
        operation.status_details = list(outcome.details)
    operation.decided_at = now + timedelta(seconds=sim.settings.auth_processing_delay_s)
    sim.store.put(operation)
    token, valid_until = sim.tokens.encode(
        {
            "typ": AUTHENTICATION_TOKEN,
            "arn": operation.reference_number,
            "cit": operation.context.type,
            "civ": operation.context.value,
        },
        now=now,
        ttl=timedelta(seconds=sim.settings.authentication_token_ttl_s),
    )
    return AuthenticationInitResponse(
        referenceNumber=operation.reference_number,
        authenticationToken=TokenInfo(token=token, validUntil=iso(valid_until)),
    )


def _operation(sim: Sim, reference: str) -> AuthOperation:
    operation = sim.store.get(AuthOperation, reference)
    if operation is None:
        raise KsefError(21304, f"Operacja uwierzytelniania o numerze referencyjnym {reference} nie została znaleziona.")
    settle(sim.store, operation, sim.clock.now())
    return operation


def _issue_access(sim: Sim, operation: AuthOperation, permissions: frozenset[str], now: datetime) -> TokenInfo:
    assert operation.subject is not None
    token, valid_until = sim.tokens.issue_access(
        now=now,
        ttl=timedelta(seconds=sim.settings.access_token_ttl_s),
        auth_reference_number=operation.reference_number,
        context=operation.context.identifier(),
        subject=operation.subject.identifier(),
        auth_method=operation.method.category,
        permissions=permissions,
        ksef_token_reference=operation.ksef_token_reference,
        allowed_ips=tuple(operation.allowed_ips),
    )
    return TokenInfo(token=token, validUntil=iso(valid_until))


def _current_permissions_or_error(sim: Sim, operation: AuthOperation, now: datetime, action: str) -> frozenset[str]:
    if token_is_revoked(sim.store, operation.ksef_token_reference, now):
        raise KsefError(21301, "Token KSeF został unieważniony.")
    outcome, permissions = current_permissions(sim.store, operation, now)
    if outcome.code == 470:
        raise KsefError(21308, description="Próba wykorzystania metod autoryzacyjnych osoby zmarłej.")
    if outcome.code == 480:
        raise KsefError(21301, f"Status uwierzytelniania ({outcome.code}) nie pozwala na {action}.")
    # 415 now (a permission revoked since authentication): the token is issued empty-handed, and every protected
    # endpoint answers 403 missing-permissions, as a token minted before the revoke would.
    return permissions


# --- routes ----------------------------------------------------------------------------------------------------


@router.post("/auth/challenge", dependencies=[Depends(public())])
async def challenge(request: Request) -> AuthenticationChallengeResponse:
    sim = get_sim(request)
    # KSeF computes the token timestamp in whole milliseconds; a ms-aligned instant keeps timestamp/timestampMs equal.
    now = truncate_to_ms(sim.clock.now())
    ttl = timedelta(seconds=sim.settings.challenge_ttl_s)
    prune_challenges(sim.store, now, ttl)
    record = Challenge(challenge=reference_number(RefType.CHALLENGE, now), timestamp=now, client_ip=client_ip(request))
    sim.store.put(record)
    return AuthenticationChallengeResponse(
        challenge=record.challenge, timestamp=iso(now), timestampMs=ms_since_epoch(now), clientIp=record.client_ip
    )


@router.post("/auth/ksef-token", status_code=202, dependencies=[Depends(public())])
async def ksef_token(request: Request, body: InitTokenAuthenticationRequest) -> AuthenticationInitResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    context = Identifier(body.contextIdentifier.type, body.contextIdentifier.value)
    _check_context(context)
    key = sim.keys.resolve(KSEF_TOKEN_ENCRYPTION, body.publicKeyId)
    if key is None:
        raise KsefError(21470, f"Klucz o identyfikatorze {body.publicKeyId} nie jest wspierany.")
    try:
        ciphertext = b64decode(body.encryptedToken)
    except ValueError as exc:
        raise KsefError(21405, "encryptedToken: wartość nie jest poprawnym Base64.") from exc
    allowed = body.authorizationPolicy.allowedIps if body.authorizationPolicy else None
    record = consume_challenge(sim.store, body.challenge, now, timedelta(seconds=sim.settings.challenge_ttl_s))
    operation = AuthOperation(
        reference_number=reference_number(RefType.AUTH, now),
        start_date=now,
        method=TOKEN_METHOD,
        context=Ident.of(context),
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        allowed_ips=list(
            ip_rules(allowed.ip4Addresses, allowed.ip4Ranges, allowed.ip4Masks) if allowed is not None else ()
        ),
    )
    try:
        plaintext = key.decrypt(ciphertext)
    except DecryptionError:
        return _start(sim, operation, Outcome(450, (BAD_ENCODING,)), now)
    token, failure = check_token(sim.store, plaintext, record, context, now)
    if token is None:
        assert failure is not None
        return _start(sim, operation, failure, now)
    token.last_use_date = now
    sim.store.put(token)
    operation.subject = token.author
    operation.ksef_token_reference = token.reference_number
    # The token's permissions ∩ what its author holds in the context when processing ends (REFERENCE.md §16).
    return _start(sim, operation, None, now, limit=list(token.permissions))


@router.post("/auth/xades-signature", status_code=202, dependencies=[Depends(public())])
async def xades_signature(
    request: Request,
    verifyCertificateChain: bool | None = None,
) -> AuthenticationInitResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    try:
        signed = parse_signed_request(await request.body(), now)
    except XadesError as exc:
        raise KsefError(exc.code, *exc.details) from exc
    certificate = signed.certificate
    # EU-entity contexts identify their people by certificate fingerprint only (REFERENCE.md §15).
    if signed.context.type == "NipVatUe" and signed.subject_identifier_type == CERTIFICATE_SUBJECT:
        raise KsefError(21117, "Kontekst NipVatUe wymaga SubjectIdentifierType=certificateFingerprint.")
    subject = subject_from_certificate(certificate, signed.subject_identifier_type)
    if subject is None:
        raise KsefError(
            21115,
            "Certyfikat nie zawiera identyfikatora podmiotu: serialNumber (TINPL/NIP/PNOPL/PESEL) "
            "ani organizationIdentifier (VATPL).",
        )
    consume_challenge(sim.store, signed.challenge, now, timedelta(seconds=sim.settings.challenge_ttl_s))
    internal = ksef_certificate(sim.store, certificate)
    if internal is not None:
        method = INTERNAL_CERTIFICATE
    else:
        method = QUALIFIED_SEAL if is_seal(certificate) else QUALIFIED_SIGNATURE
    operation = AuthOperation(
        reference_number=reference_number(RefType.AUTH, now),
        start_date=now,
        method=method,
        context=Ident.of(signed.context),
        subject=Ident.of(subject),
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        allowed_ips=list(signed.allowed_ips),
    )
    outcome: Outcome | None = None
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        outcome = Outcome(460, (CERT_INVALID,))
    elif internal is not None and internal.status(now) is not CertificateStatus.ACTIVE:
        outcome = Outcome(460, (CERT_REVOKED,))
    elif verifyCertificateChain and internal is None:
        # Only KSeF certificates chain to a CA the simulator knows; TEST's qualified-trust check fails the same
        # way for self-signed certificates.
        outcome = Outcome(460, (CERT_UNTRUSTED,))
    elif internal is not None:
        internal.last_use_date = now
        sim.store.put(internal)
    return _start(sim, operation, outcome, now)


@router.get("/auth/sessions", response_model_exclude_none=True)
async def list_sessions(
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.OTHER))],
    pageSize: Annotated[int, Query(ge=10, le=100)] = 10,
    x_continuation_token: Annotated[str | None, Header()] = None,
) -> AuthenticationListResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    offset = decode_continuation(x_continuation_token)
    auth_ttl = timedelta(seconds=sim.settings.authentication_token_ttl_s)
    context = Ident.of(caller.context)
    own = [op for op in sim.store.all(AuthOperation) if op.context == context]
    for op in own:
        settle(sim.store, op, now)
    sessions = [op for op in own if op.session_active(now, auth_ttl)]
    sessions.sort(key=lambda op: (op.start_date, op.reference_number), reverse=True)
    page = sessions[offset : offset + pageSize]
    more = offset + pageSize < len(sessions)
    return AuthenticationListResponse(
        continuationToken=encode_continuation(offset + pageSize) if more else None,
        items=[
            AuthenticationListItem(
                **_status_response(op, now),
                referenceNumber=op.reference_number,
                isCurrent=op.reference_number == caller.auth_reference_number,
            )
            for op in page
        ],
    )


async def _session_reference(request: Request) -> str:
    """``DELETE /auth/sessions/current`` takes an access token or a refresh token (spec); the limit applies to both."""
    token = bearer_token(request)
    try:
        kind = jwt.decode(token, options={"verify_signature": False}).get("typ")
    except jwt.PyJWTError as exc:
        raise Unauthorized("Nieprawidłowy token.") from exc
    if kind == REFRESH_TOKEN:
        claims = await refresh_claims(request)
        return str(claims["arn"])
    caller = await access(Group.OTHER)(request)
    return caller.auth_reference_number


def _revoke(sim: Sim, operation: AuthOperation, now: datetime) -> None:
    if operation.revoked_at is None:
        operation.revoked_at = now
        sim.store.put(operation)


@router.delete("/auth/sessions/current", status_code=204)
async def revoke_current_session(request: Request, reference: Annotated[str, Depends(_session_reference)]) -> Response:
    sim = get_sim(request)
    _revoke(sim, _operation(sim, reference), sim.clock.now())
    return Response(status_code=204)


@router.delete("/auth/sessions/{referenceNumber}", status_code=204)
async def revoke_session(
    request: Request,
    referenceNumber: ReferenceNumberPath,
    caller: Annotated[Caller, Depends(access(Group.OTHER))],
) -> Response:
    sim = get_sim(request)
    operation = sim.store.get(AuthOperation, referenceNumber)
    if operation is None or operation.context != Ident.of(caller.context):
        raise KsefError(
            21304, f"Operacja uwierzytelniania o numerze referencyjnym {referenceNumber} nie została znaleziona."
        )
    own = operation.subject is not None and operation.subject.identifier() == caller.subject
    if not own and operation.reference_number != caller.auth_reference_number:
        caller.require_any("CredentialsManage")
    _revoke(sim, operation, sim.clock.now())
    return Response(status_code=204)


@router.post("/auth/token/redeem")
async def redeem(
    request: Request, claims: Annotated[dict[str, Any], Depends(authentication_claims)]
) -> AuthenticationTokensResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    operation = _operation(sim, claims["arn"])
    if operation.redeemed_at is not None:
        raise KsefError(
            21301, f"Tokeny dla operacji uwierzytelniania {operation.reference_number} zostały już pobrane."
        )
    status = operation.status(now).code
    if status != 200:
        raise KsefError(21301, f"Status uwierzytelniania ({status}) nie pozwala na pobranie tokenów.")
    permissions = _current_permissions_or_error(sim, operation, now, "pobranie tokenów")
    access_token = _issue_access(sim, operation, permissions, now)
    refresh_token, refresh_until = sim.tokens.encode(
        {
            "typ": REFRESH_TOKEN,
            "arn": operation.reference_number,
            "cit": operation.context.type,
            "civ": operation.context.value,
        },
        now=now,
        ttl=timedelta(seconds=sim.settings.refresh_token_ttl_s),
    )
    operation.redeemed_at = now
    operation.refresh_token_valid_until = refresh_until
    sim.store.put(operation)
    return AuthenticationTokensResponse(
        accessToken=access_token, refreshToken=TokenInfo(token=refresh_token, validUntil=iso(refresh_until))
    )


@router.post("/auth/token/refresh")
async def refresh(
    request: Request, claims: Annotated[dict[str, Any], Depends(refresh_claims)]
) -> AuthenticationTokenRefreshResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    operation = _operation(sim, claims["arn"])
    status = operation.status(now).code
    if status != 200:
        raise KsefError(21301, f"Status uwierzytelniania ({status}) nie pozwala na odświeżenie tokenu dostępowego.")
    permissions = _current_permissions_or_error(sim, operation, now, "odświeżenie tokenu dostępowego")
    access_token = _issue_access(sim, operation, permissions, now)
    operation.last_token_refresh_date = now
    sim.store.put(operation)
    return AuthenticationTokenRefreshResponse(accessToken=access_token)


@router.get("/auth/{referenceNumber}", response_model_exclude_none=True)
async def operation_status(
    request: Request,
    referenceNumber: ReferenceNumberPath,
    claims: Annotated[dict[str, Any], Depends(authentication_claims)],
) -> AuthenticationOperationStatusResponse:
    sim = get_sim(request)
    now = sim.clock.now()
    operation = _operation(sim, referenceNumber)
    # The authentication token answers for its own operation only.
    if claims.get("arn") != referenceNumber:
        raise Forbidden("insufficient-resource-access", "Brak dostępu do wskazanego zasobu.")
    if operation.gone(now, timedelta(seconds=sim.settings.async_status_retention_s)):
        raise Gone("Operacja wygasła i nie jest już dostępna.")
    return AuthenticationOperationStatusResponse(**_status_response(operation, now))
