"""Our thin async KSeF 2.0 client: one shared ``httpx.AsyncClient``, our retries, our spans, our rate budget.

Every HTTP call goes through ``KsefClient._call``, which

1. takes a slot from the ``Budget`` for (environment, context, endpoint group) and reports the outcome to it
   (status and ``Retry-After``), so 429s and outages feed the limiter and the circuit breaker;
2. runs inside an OpenTelemetry span named after the operation;
3. retries idempotent calls on 5xx and transport errors with full-jitter exponential backoff (never a 429: the
   budget already blocks the group for ``Retry-After`` and the caller decides whether to wait);
4. tells the ``CallObserver`` (the communication log) what happened: operation, context, outcome, reference
   numbers and KSeF codes only, never tokens, challenges, keys or invoice content.

Access-token calls need the KSeF context for the budget. The client remembers which context each access token it
obtained belongs to; a token from elsewhere falls back to the ``civ`` claim KSeF puts in its JWTs [obs, §3.8].
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import random
import tarfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
from cryptography import x509
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ksef_gateway.budget.service import Budget, BudgetUnavailable, EndpointGroup
from ksef_gateway.ksef.credentials import CertificateCredential, Credential, KsefTokenCredential
from ksef_gateway.ksef.crypto import CryptoError, SymmetricKey, encrypt_ksef_token, sha256_b64
from ksef_gateway.ksef.environments import Environment, base_url
from ksef_gateway.ksef.errors import (
    INVALID_PUBLIC_KEY,
    KsefAuthFailed,
    KsefError,
    KsefForbidden,
    KsefPackageError,
    KsefRateLimited,
    KsefUnauthorized,
    KsefUnavailable,
    error_from_response,
    retry_after_seconds,
)
from ksef_gateway.ksef.models import (
    AccessToken,
    BatchArchive,
    BatchSession,
    Challenge,
    ExportedPackage,
    ExportHandle,
    ExportStatus,
    FormCode,
    KsefAuthSession,
    MetadataPage,
    OnlineSession,
    PartUploadRequest,
    PublicKeyCertificate,
    SentInvoiceStatus,
    SessionStatus,
    export_package,
    parse_instant,
)
from ksef_gateway.ksef.xades import sign_auth_token_request

if TYPE_CHECKING:
    from ksef_gateway.settings import KsefSettings

log = logging.getLogger(__name__)

KSEF_TOKEN_ENCRYPTION = "KsefTokenEncryption"  # noqa: S105 - a key usage name, not a secret
SYMMETRIC_KEY_ENCRYPTION = "SymmetricKeyEncryption"
GATEWAY_PRODUCT = "ksef-hub-gateway/0.1"
METADATA_FILE = "_metadata.json"

T = TypeVar("T")
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CallRecord:
    """One KSeF call as the communication log keeps it (no secrets by construction: nothing here can hold one)."""

    environment: str
    context_nip: str | None
    operation: str
    http_status: int | None
    outcome: str  # ok | failed | auth_failed | unauthorized | forbidden | rate_limited | unavailable
    reference_numbers: tuple[str, ...]
    error_codes: tuple[int, ...]
    description: str | None
    duration_ms: int
    attempts: int
    at: datetime


class CallObserver(Protocol):
    async def record(self, call: CallRecord) -> None: ...


def outcome_of(error: KsefError | None) -> str:
    if error is None:
        return "ok"
    for kind, name in (
        (KsefAuthFailed, "auth_failed"),
        (KsefRateLimited, "rate_limited"),
        (KsefUnavailable, "unavailable"),
        (KsefUnauthorized, "unauthorized"),
        (KsefForbidden, "forbidden"),
    ):
        if isinstance(error, kind):
            return name
    return "failed"


@dataclass
class _Call:
    """What one logical call learned on the way, for the observer."""

    operation: str
    context: str | None
    refs: list[str] = field(default_factory=list)
    attempts: int = 0
    status: int | None = None


def _claims(token: str) -> dict[str, Any]:
    """The unverified payload of a KSeF JWT (only to route budgets and read permissions; KSeF verifies it)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class KsefClient:
    """KSeF 2.0 for one environment. Obtain it from ``KsefClients.for_environment``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        environment: Environment,
        *,
        settings: KsefSettings,
        budget: Budget,
        tracer: trace.Tracer | None = None,
        observer: CallObserver | None = None,
        meter: metrics.Meter | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.environment = environment
        self.base_url = base_url(environment, settings.sim_base_url)
        self._http = http
        self._settings = settings
        self._budget = budget
        self._tracer = tracer or trace.NoOpTracer()
        self._observer = observer
        self._calls = (meter or metrics.NoOpMeter(__name__)).create_counter(
            "ksef_hub.ksef.calls",
            description="Logical KSeF calls (retries included) by context, operation and outcome; 429s are "
            "outcome=rate_limited",
        )
        self._clock = clock
        self._user_agent = f"{GATEWAY_PRODUCT} (replica {settings.replica_id})"
        self._keys: list[PublicKeyCertificate] | None = None
        self._keys_fetched_at = 0.0
        self._keys_lock = asyncio.Lock()
        self._token_contexts: dict[str, tuple[str, datetime]] = {}

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _remember(self, token: str, context_nip: str, valid_until: datetime) -> None:
        now = self._clock()
        for known, (_, until) in list(self._token_contexts.items()):
            if until <= now:
                del self._token_contexts[known]
        self._token_contexts[token] = (context_nip, valid_until)

    def context_of(self, access_token: str) -> str | None:
        known = self._token_contexts.get(access_token)
        if known is not None:
            return known[0]
        value = _claims(access_token).get("civ")
        return str(value) if value else None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._settings.retry_max_backoff_s, self._settings.retry_initial_backoff_s * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # jitter, not cryptography

    async def _observe(self, call: _Call, error: KsefError | None, started: float) -> None:
        outcome = outcome_of(error)
        # Per context, as KSeF counts its limits; an office's clients are hundreds of series, not millions.
        self._calls.add(
            1,
            {
                "environment": str(self.environment),
                "context_nip": call.context or "none",
                "operation": call.operation,
                "outcome": outcome,
            },
        )
        if self._observer is None:
            return
        record = CallRecord(
            environment=str(self.environment),
            context_nip=call.context,
            operation=call.operation,
            http_status=call.status if error is None or error.http_status is None else error.http_status,
            outcome=outcome,
            reference_numbers=tuple(dict.fromkeys(r for r in call.refs if r)),
            error_codes=tuple(error.codes) if error is not None else (),
            description=error.description[:500] if error is not None else None,
            duration_ms=int((time.monotonic() - started) * 1000),
            attempts=call.attempts,
            at=self._clock(),
        )
        try:
            await self._observer.record(record)
        except Exception:  # the log is a record of the call, never a reason for it to fail
            log.exception("communication log observer failed for %s", call.operation)

    async def _call(
        self,
        operation: str,
        method: str,
        path_or_url: str,
        *,
        context: str | None,
        group: EndpointGroup,
        idempotent: bool,
        token: str | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        refs: list[str] | None = None,
        judge: Callable[[httpx.Response], KsefError | None] | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> httpx.Response:
        """One logical KSeF call (with its retries); raises ``KsefError`` for anything but a 2xx.

        ``judge`` turns a 2xx into an error when the body says so (an auth status of 450 comes as HTTP 200).
        ``priority`` and ``max_wait_s`` go to the budget with every attempt: a lower priority goes first, and
        ``BudgetExhausted``/``CircuitOpen`` reach the caller instead of a wait longer than ``max_wait_s``.
        """
        call = _Call(operation, context, list(refs or []))
        started = time.monotonic()
        url = path_or_url if path_or_url.startswith(("http://", "https://")) else self.base_url + path_or_url
        request_headers = {"User-Agent": self._user_agent, "Accept": "application/json", **(headers or {})}
        if token is not None:
            request_headers["Authorization"] = f"Bearer {token}"
        previous: KsefError | None = None  # how the attempt before this one failed
        while True:
            call.attempts += 1
            error: KsefError | None = None
            response: httpx.Response | None = None
            holding = contextlib.AsyncExitStack()
            try:
                slot = await holding.enter_async_context(
                    self._budget.slot(
                        environment=str(self.environment),
                        context=context,
                        group=group,
                        priority=priority,
                        max_wait_s=max_wait_s,
                    )
                )
            except BudgetUnavailable:
                if previous is not None:
                    # Earlier attempts reached KSeF and failed (5xx, no answer), then the budget refused the retry
                    # (the circuit opened meanwhile): they were KSeF calls all the same, so they go into the log.
                    call.attempts -= 1
                    await self._observe(call, previous, started)
                raise
            async with holding:
                with self._tracer.start_as_current_span(f"KSeF {operation}", kind=SpanKind.CLIENT) as span:
                    span.set_attribute("ksef.operation", operation)
                    span.set_attribute("ksef.environment", str(self.environment))
                    span.set_attribute("ksef.attempt", call.attempts)
                    span.set_attribute("http.request.method", method)
                    if context:
                        span.set_attribute("ksef.context", context)
                    try:
                        response = await self._http.request(
                            method, url, json=json_body, content=content, headers=request_headers, params=params
                        )
                    except httpx.TransportError as exc:
                        slot.report(status=None)
                        error = KsefUnavailable(f"no answer from KSeF ({type(exc).__name__})")
                    else:
                        call.status = response.status_code
                        retry_after = retry_after_seconds(response.headers.get("retry-after"))
                        slot.report(status=response.status_code, retry_after_s=retry_after)
                        span.set_attribute("http.response.status_code", response.status_code)
                        if response.status_code >= 400:
                            error = error_from_response(response)
                        else:
                            call.refs.extend(_reference_numbers(response))
                            error = judge(response) if judge is not None else None
                    if error is not None:
                        span.set_status(Status(StatusCode.ERROR, error.description[:200]))
                        if error.codes:
                            span.set_attribute("ksef.error_codes", error.codes)
            if error is None:
                assert response is not None
                await self._observe(call, None, started)
                return response
            retryable = isinstance(error, KsefUnavailable) and idempotent
            if retryable and call.attempts <= self._settings.max_retries:
                previous = error
                await asyncio.sleep(self._backoff(call.attempts))
                continue
            if error.reference_number:
                call.refs.append(error.reference_number)
            await self._observe(call, error, started)
            raise error

    def _token_context(self, access_token: str, explicit: str | None) -> str | None:
        return explicit or self.context_of(access_token)

    # --- public keys (§3.10) ----------------------------------------------------------------------------------

    async def public_keys(
        self, *, refresh: bool = False, stale_key_id: str | None = None
    ) -> list[PublicKeyCertificate]:
        """The Ministry's certificates, cached; ``stale_key_id`` refetches once for everyone who saw 21470."""
        async with self._keys_lock:
            cached = self._keys
            expired = time.monotonic() - self._keys_fetched_at > self._settings.public_keys_ttl_s
            still_stale = stale_key_id is not None and any(k.public_key_id == stale_key_id for k in cached or [])
            if cached is None or expired or (refresh and stale_key_id is None) or still_stale:
                response = await self._call(
                    "security.public_keys",
                    "GET",
                    "/security/public-key-certificates",
                    context=None,
                    group=EndpointGroup.PUBLIC,
                    idempotent=True,
                )
                cached = [
                    PublicKeyCertificate(
                        certificate=x509.load_der_x509_certificate(base64.b64decode(item["certificate"])),
                        public_key_id=str(item.get("publicKeyId") or ""),
                        usage=frozenset(item.get("usage") or ()),
                        valid_from=parse_instant(item["validFrom"]),
                        valid_to=parse_instant(item["validTo"]),
                    )
                    for item in response.json()
                ]
                self._keys, self._keys_fetched_at = cached, time.monotonic()
            return cached

    async def public_key(self, usage: str, *, stale_key_id: str | None = None) -> PublicKeyCertificate:
        """Among the valid certificates for ``usage``, the one with the latest ``validFrom`` (§3.10)."""
        now = self._clock()
        keys = await self.public_keys(stale_key_id=stale_key_id)
        valid = [k for k in keys if usage in k.usage and k.valid_from <= now <= k.valid_to]
        if not valid:
            raise KsefError(f"KSeF publishes no valid {usage} certificate")
        return max(valid, key=lambda k: k.valid_from)

    async def _with_public_key(self, usage: str, use: Callable[[PublicKeyCertificate], Awaitable[T]]) -> T:
        """Run ``use`` with the current key; after 21470 (key withdrawn, e.g. an emergency rotation) refetch the
        certificates once and try again with the new key."""
        key = await self.public_key(usage)
        try:
            return await use(key)
        except KsefError as error:
            if INVALID_PUBLIC_KEY not in error.codes:
                raise
            log.warning("KSeF %s: %s key %s withdrawn (21470); refetching", self.environment, usage, key.public_key_id)
        return await use(await self.public_key(usage, stale_key_id=key.public_key_id))

    # --- authentication (§3) ----------------------------------------------------------------------------------

    async def challenge(self, context_nip: str | None = None) -> Challenge:
        response = await self._call(
            "auth.challenge",
            "POST",
            "/auth/challenge",
            context=context_nip,
            group=EndpointGroup.PUBLIC,
            idempotent=True,
        )
        body = response.json()
        return Challenge(str(body["challenge"]), int(body["timestampMs"]), str(body.get("clientIp") or ""))

    async def _submit_token(self, context_nip: str, credential: KsefTokenCredential) -> dict[str, Any]:
        async def submit(key: PublicKeyCertificate) -> dict[str, Any]:
            # A fresh challenge per attempt: a challenge is single use (§3.1).
            challenge = await self.challenge(context_nip)
            encrypted = encrypt_ksef_token(key.certificate, credential.token.get_secret_value(), challenge.timestamp_ms)
            body = {
                "challenge": challenge.challenge,
                "contextIdentifier": {"type": "Nip", "value": context_nip},
                "encryptedToken": encrypted,
                "publicKeyId": key.public_key_id,
            }
            response = await self._call(
                "auth.ksef_token",
                "POST",
                "/auth/ksef-token",
                context=context_nip,
                group=EndpointGroup.PUBLIC,
                idempotent=False,
                json_body=body,
            )
            result: dict[str, Any] = response.json()
            return result

        return await self._with_public_key(KSEF_TOKEN_ENCRYPTION, submit)

    async def _submit_xades(self, context_nip: str, credential: CertificateCredential) -> dict[str, Any]:
        challenge = await self.challenge(context_nip)
        signed = sign_auth_token_request(
            challenge.challenge, context_nip, credential.certificate_pem, credential.private_key_pem.get_secret_value()
        )
        response = await self._call(
            "auth.xades_signature",
            "POST",
            "/auth/xades-signature",
            context=context_nip,
            group=EndpointGroup.PUBLIC,
            idempotent=False,
            content=signed,
            headers={"Content-Type": "application/xml"},
        )
        result: dict[str, Any] = response.json()
        return result

    async def _auth_status(self, reference: str, authentication_token: str, context_nip: str) -> dict[str, Any]:
        def judge(response: httpx.Response) -> KsefError | None:
            status = response.json().get("status") or {}
            code = int(status.get("code") or 0)
            if code in (100, 200):
                return None
            return KsefAuthFailed(
                code,
                str(status.get("description") or ""),
                [str(d) for d in status.get("details") or []],
                reference_number=reference,
            )

        response = await self._call(
            "auth.status",
            "GET",
            f"/auth/{reference}",
            context=context_nip,
            group=EndpointGroup.OTHER,
            idempotent=True,
            token=authentication_token,
            refs=[reference],
            judge=judge,
        )
        result: dict[str, Any] = response.json()
        return result

    async def authenticate(self, context_nip: str, credential: Credential) -> KsefAuthSession:
        """challenge → KSeF token or XAdES → poll ``GET /auth/{ref}`` → redeem. ``KsefAuthFailed`` carries the
        final status (415, 450, 460 ...) with KSeF's description and our explanation of it."""
        if isinstance(credential, KsefTokenCredential):
            init = await self._submit_token(context_nip, credential)
        else:
            init = await self._submit_xades(context_nip, credential)
        reference = str(init["referenceNumber"])
        authentication_token = str(init["authenticationToken"]["token"])
        deadline = time.monotonic() + self._settings.auth_timeout_s
        interval = self._settings.auth_poll_interval_s
        while True:
            status = await self._auth_status(reference, authentication_token, context_nip)
            if int(status["status"]["code"]) == 200:
                break
            # 100: still checking (DEMO/PROD may verify OCSP/CRL for a while, §3.5).
            if time.monotonic() + interval > deadline:
                raise KsefUnavailable(
                    f"authentication {reference} still in progress after {self._settings.auth_timeout_s:.0f} s",
                    reference_number=reference,
                )
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, self._settings.auth_poll_max_interval_s)
        response = await self._call(
            "auth.redeem",
            "POST",
            "/auth/token/redeem",
            context=context_nip,
            group=EndpointGroup.OTHER,
            idempotent=False,  # one time only: a second redeem is 21301 (§3.6)
            token=authentication_token,
            refs=[reference],
        )
        tokens = response.json()
        session = KsefAuthSession(
            context_nip=context_nip,
            auth_reference=reference,
            access_token=str(tokens["accessToken"]["token"]),
            access_valid_until=parse_instant(tokens["accessToken"]["validUntil"]),
            refresh_token=str(tokens["refreshToken"]["token"]),
            refresh_valid_until=parse_instant(tokens["refreshToken"]["validUntil"]),
        )
        self._remember(session.access_token, context_nip, session.access_valid_until)
        self._remember(session.refresh_token, context_nip, session.refresh_valid_until)
        return session

    async def refresh(
        self,
        refresh_token: str,
        *,
        context_nip: str | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> AccessToken:
        """A new access token with the subject's current permissions; the refresh token is not rotated (§3.7)."""
        context = self._token_context(refresh_token, context_nip)
        response = await self._call(
            "auth.refresh",
            "POST",
            "/auth/token/refresh",
            context=context,
            group=EndpointGroup.OTHER,
            idempotent=True,
            token=refresh_token,
            priority=priority,
            max_wait_s=max_wait_s,
        )
        body = response.json()["accessToken"]
        access = AccessToken(str(body["token"]), parse_instant(body["validUntil"]))
        if context:
            self._remember(access.token, context, access.valid_until)
        return access

    async def revoke_current_session(self, token: str, *, context_nip: str | None = None) -> None:
        """``DELETE /auth/sessions/current`` with the access or refresh token: the refresh token dies with it."""
        await self._call(
            "auth.revoke_session",
            "DELETE",
            "/auth/sessions/current",
            context=self._token_context(token, context_nip),
            group=EndpointGroup.OTHER,
            idempotent=True,
            token=token,
        )
        self._token_contexts.pop(token, None)

    async def own_permissions(self, access_token: str, *, context_nip: str | None = None) -> frozenset[str]:
        """The KSeF permissions the authenticated subject holds in the token's context (InvoiceRead, ...).

        Access tokens carry them in the ``per`` claim [obs]; without it, the personal-permissions query lists the
        subject's grants in this context (it cannot show an owner's implicit permissions, §15).
        """
        claim = _claims(access_token).get("per")
        if isinstance(claim, str):
            try:
                claim = json.loads(claim)
            except ValueError:
                claim = [claim]
        if isinstance(claim, list):
            return frozenset(str(p) for p in claim)
        context = self._token_context(access_token, context_nip)
        found: set[str] = set()
        page = 0
        while True:
            response = await self._call(
                "permissions.personal",
                "POST",
                "/permissions/query/personal/grants",
                context=context,
                group=EndpointGroup.OTHER,
                idempotent=True,
                token=access_token,
                params={"pageOffset": page, "pageSize": 100},
                json_body={"contextIdentifier": {"type": "Nip", "value": context}} if context else {},
            )
            body = response.json()
            found.update(str(p["permissionScope"]) for p in body.get("permissions") or [] if p.get("permissionScope"))
            if not body.get("hasMore"):
                return frozenset(found)
            page += 1

    # --- receiving invoices (§9) ------------------------------------------------------------------------------

    async def query_metadata(
        self,
        access_token: str,
        filters: dict[str, Any],
        *,
        page_offset: int = 0,
        page_size: int = 250,
        sort_order: str = "Asc",
        context_nip: str | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> MetadataPage:
        response = await self._call(
            "invoices.query_metadata",
            "POST",
            "/invoices/query/metadata",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.INVOICE_METADATA,
            idempotent=True,  # a read; the POST only carries the filter
            token=access_token,
            params={"pageOffset": page_offset, "pageSize": page_size, "sortOrder": sort_order},
            json_body=filters,
            priority=priority,
            max_wait_s=max_wait_s,
        )
        body = response.json()
        return MetadataPage(
            invoices=list(body.get("invoices") or []),
            has_more=bool(body.get("hasMore")),
            is_truncated=bool(body.get("isTruncated")),
            permanent_storage_hwm_date=body.get("permanentStorageHwmDate"),
        )

    async def download_invoice(
        self,
        access_token: str,
        ksef_number: str,
        *,
        context_nip: str | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> tuple[bytes, str | None]:
        """The exact XML as submitted and its ``x-ms-meta-hash`` (= invoiceHash) for the caller to verify."""
        response = await self._call(
            "invoices.download",
            "GET",
            f"/invoices/ksef/{ksef_number}",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.INVOICE_DOWNLOAD,
            idempotent=True,
            token=access_token,
            refs=[ksef_number],
            headers={"Accept": "application/xml"},
            priority=priority,
            max_wait_s=max_wait_s,
        )
        return response.content, response.headers.get("x-ms-meta-hash")

    async def start_export(
        self,
        access_token: str,
        filters: dict[str, Any],
        *,
        only_metadata: bool = False,
        context_nip: str | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> ExportHandle:
        """``POST /invoices/exports`` with a fresh AES-256 key and IV wrapped for the Ministry; the handle keeps
        them to decrypt the package."""
        context = self._token_context(access_token, context_nip)
        key = SymmetricKey.generate()

        async def start(ministry: PublicKeyCertificate) -> str:
            wrapped, iv = key.wrapped(ministry.certificate)
            response = await self._call(
                "invoices.export",
                "POST",
                "/invoices/exports",
                context=context,
                group=EndpointGroup.INVOICE_EXPORT,
                idempotent=False,  # each POST starts (and bills) another export
                token=access_token,
                json_body={
                    "encryption": {
                        "encryptedSymmetricKey": wrapped,
                        "initializationVector": iv,
                        "publicKeyId": ministry.public_key_id,
                    },
                    "filters": filters,
                    "onlyMetadata": only_metadata,
                },
                priority=priority,
                max_wait_s=max_wait_s,
            )
            return str(response.json()["referenceNumber"])

        reference = await self._with_public_key(SYMMETRIC_KEY_ENCRYPTION, start)
        return ExportHandle(reference_number=reference, context_nip=context, key=key)

    async def export_status(
        self,
        access_token: str,
        reference_number: str,
        *,
        context_nip: str | None = None,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> ExportStatus:
        response = await self._call(
            "invoices.export_status",
            "GET",
            f"/invoices/exports/{reference_number}",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.INVOICE_EXPORT_STATUS,
            idempotent=True,
            token=access_token,
            refs=[reference_number],
            priority=priority,
            max_wait_s=max_wait_s,
        )
        body = response.json()
        status = body.get("status") or {}
        package = body.get("package")
        return ExportStatus(
            reference_number=reference_number,
            code=int(status.get("code") or 0),
            description=str(status.get("description") or ""),
            details=[str(d) for d in status.get("details") or []],
            package=export_package(package) if isinstance(package, dict) else None,
            completed_date=body.get("completedDate"),
            package_expiration_date=body.get("packageExpirationDate"),
            retry_after_s=retry_after_seconds(response.headers.get("retry-after")),
        )

    async def download_export_package(
        self, handle: ExportHandle, status: ExportStatus, *, priority: float = 0.0, max_wait_s: float | None = None
    ) -> ExportedPackage:
        """Every part from its pre-signed link (no token, not rate-limited), hashes checked before and after
        decryption, parts concatenated and unpacked; each invoice's hash checked against ``_metadata.json``
        (``download_export_parts`` then ``open_export_package``)."""
        parts = await self.download_export_parts(handle, status, priority=priority, max_wait_s=max_wait_s)
        return open_export_package(handle, status, parts)

    async def download_export_parts(
        self, handle: ExportHandle, status: ExportStatus, *, priority: float = 0.0, max_wait_s: float | None = None
    ) -> list[bytes]:
        """The package's encrypted parts in order, each checked against its ``encryptedPartHash``; opening them is
        CPU work of its own (``open_export_package``), which a caller may run off the event loop."""
        package = status.package
        if package is None:
            raise KsefPackageError(f"export {handle.reference_number} has no package (status {status.code})")
        parts = []
        for part in package.parts:
            response = await self._call(
                "invoices.export_part",
                "GET",
                part.url,
                context=handle.context_nip,
                group=EndpointGroup.UNLIMITED,
                idempotent=True,
                refs=[handle.reference_number],
                headers={"Accept": "*/*"},
                priority=priority,
                max_wait_s=max_wait_s,
            )
            encrypted = response.content
            if part.encrypted_part_hash and sha256_b64(encrypted) != part.encrypted_part_hash:
                raise KsefPackageError(
                    f"part {part.ordinal_number} of {handle.reference_number}: encrypted hash differs"
                )
            parts.append(encrypted)
        return parts

    # --- online sessions (§4) ---------------------------------------------------------------------------------

    async def open_online_session(
        self, access_token: str, form_code: FormCode, *, context_nip: str | None = None
    ) -> OnlineSession:
        context = self._token_context(access_token, context_nip)
        key = SymmetricKey.generate()

        async def open_session(ministry: PublicKeyCertificate) -> dict[str, Any]:
            wrapped, iv = key.wrapped(ministry.certificate)
            response = await self._call(
                "sessions.open_online",
                "POST",
                "/sessions/online",
                context=context,
                group=EndpointGroup.ONLINE_SESSION,
                idempotent=False,
                token=access_token,
                json_body={
                    "formCode": form_code.as_json(),
                    "encryption": {
                        "encryptedSymmetricKey": wrapped,
                        "initializationVector": iv,
                        "publicKeyId": ministry.public_key_id,
                    },
                },
            )
            result: dict[str, Any] = response.json()
            return result

        body = await self._with_public_key(SYMMETRIC_KEY_ENCRYPTION, open_session)
        return OnlineSession(
            reference_number=str(body["referenceNumber"]),
            context_nip=context or "",
            form_code=form_code,
            valid_until=parse_instant(body["validUntil"]),
            key=key,
        )

    async def close_online_session(
        self, access_token: str, reference_number: str, *, context_nip: str | None = None
    ) -> None:
        await self._call(
            "sessions.close_online",
            "POST",
            f"/sessions/online/{reference_number}/close",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.ONLINE_SESSION,
            idempotent=False,
            token=access_token,
            refs=[reference_number],
        )

    async def session_status(
        self, access_token: str, reference_number: str, *, context_nip: str | None = None
    ) -> SessionStatus:
        response = await self._call(
            "sessions.status",
            "GET",
            f"/sessions/{reference_number}",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.SESSION_MISC,
            idempotent=True,
            token=access_token,
            refs=[reference_number],
        )
        body = response.json()
        status = body.get("status") or {}
        count = body.get("invoiceCount")
        successful = body.get("successfulInvoiceCount")
        failed = body.get("failedInvoiceCount")
        valid_until = body.get("validUntil")
        return SessionStatus(
            code=int(status.get("code") or 0),
            description=str(status.get("description") or ""),
            invoice_count=int(count) if count is not None else None,
            raw=body,
            successful_invoice_count=int(successful) if successful is not None else None,
            failed_invoice_count=int(failed) if failed is not None else None,
            valid_until=parse_instant(valid_until) if valid_until else None,
        )

    # --- batch sessions (§5) ----------------------------------------------------------------------------------

    async def open_batch_session(
        self,
        access_token: str,
        form_code: FormCode,
        archive: BatchArchive,
        *,
        offline_mode: bool = False,
        context_nip: str | None = None,
    ) -> BatchSession:
        """``POST /sessions/batch`` declaring the archive and its encrypted parts, the archive's key wrapped for
        the Ministry. Never retried here: a lost answer may have opened a session; nothing is in it until the
        parts are uploaded and it is closed, and it expires on its own (440 after 12 h)."""
        context = self._token_context(access_token, context_nip)
        batch_file: dict[str, Any] = {
            "fileSize": archive.file_size,
            "fileHash": archive.file_hash,
            "fileParts": [
                {"ordinalNumber": part.ordinal_number, "fileSize": part.file_size, "fileHash": part.file_hash}
                for part in archive.parts
            ],
        }
        if archive.compression_type != "Zip":  # Zip is the default; the field exists only from 2.6.0 on
            batch_file["compressionType"] = archive.compression_type

        async def open_session(ministry: PublicKeyCertificate) -> dict[str, Any]:
            wrapped, iv = archive.key.wrapped(ministry.certificate)
            response = await self._call(
                "sessions.open_batch",
                "POST",
                "/sessions/batch",
                context=context,
                group=EndpointGroup.BATCH_SESSION,
                idempotent=False,
                token=access_token,
                json_body={
                    "formCode": form_code.as_json(),
                    "batchFile": batch_file,
                    "encryption": {
                        "encryptedSymmetricKey": wrapped,
                        "initializationVector": iv,
                        "publicKeyId": ministry.public_key_id,
                    },
                    "offlineMode": offline_mode,
                },
            )
            result: dict[str, Any] = response.json()
            return result

        body = await self._with_public_key(SYMMETRIC_KEY_ENCRYPTION, open_session)
        requests = tuple(
            PartUploadRequest(
                ordinal_number=int(item["ordinalNumber"]),
                method=str(item.get("method") or "PUT"),
                url=str(item["url"]),
                headers={str(k): str(v) for k, v in (item.get("headers") or {}).items() if v is not None},
            )
            for item in sorted(body.get("partUploadRequests") or [], key=lambda item: int(item["ordinalNumber"]))
        )
        return BatchSession(
            reference_number=str(body["referenceNumber"]), part_upload_requests=requests, key=archive.key
        )

    async def upload_batch_part(
        self,
        request: PartUploadRequest,
        content: bytes,
        *,
        context_nip: str | None = None,
        session_reference: str | None = None,
    ) -> None:
        """PUT one encrypted part to its pre-signed URL with exactly the headers KSeF gave and no Authorization
        (§5 step 4). Not rate-limited (``UNLIMITED``); retried on 5xx and no answer, since writing the same bytes
        to the same blob again is harmless. 403 means the link expired (the upload window is 20 min per part)."""
        await self._call(
            "sessions.upload_batch_part",
            request.method,
            request.url,
            context=context_nip,
            group=EndpointGroup.UNLIMITED,
            idempotent=True,
            token=None,
            content=content,
            headers={"Accept": "*/*", **request.headers},
            refs=[session_reference] if session_reference else None,
        )

    async def close_batch_session(
        self, access_token: str, reference_number: str, *, context_nip: str | None = None
    ) -> None:
        """``POST /sessions/batch/{ref}/close``: KSeF starts processing the package (status 150). Never retried
        here: whether a lost close happened is read from the session status."""
        await self._call(
            "sessions.close_batch",
            "POST",
            f"/sessions/batch/{reference_number}/close",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.BATCH_SESSION,
            idempotent=False,
            token=access_token,
            refs=[reference_number],
        )

    async def send_online_invoice(
        self,
        access_token: str,
        session: OnlineSession,
        xml: bytes,
        *,
        offline_mode: bool = False,
        hash_of_corrected_invoice: str | None = None,
        context_nip: str | None = None,
    ) -> str:
        """Encrypt ``xml`` with the session's key and send it; KSeF's reference of the invoice (``…-EE-…``).

        Never retried here (``idempotent=False``): a send whose answer was lost may have arrived, and only the
        caller, which persisted the attempt first, can reconcile it by the invoice hash (REFERENCE.md §4)."""
        encrypted = session.key.encrypt(xml)
        body: dict[str, Any] = {
            "invoiceHash": sha256_b64(xml),
            "invoiceSize": len(xml),
            "encryptedInvoiceHash": sha256_b64(encrypted),
            "encryptedInvoiceSize": len(encrypted),
            "encryptedInvoiceContent": base64.b64encode(encrypted).decode("ascii"),
            "offlineMode": offline_mode,
        }
        if hash_of_corrected_invoice is not None:
            body["hashOfCorrectedInvoice"] = hash_of_corrected_invoice
        response = await self._call(
            "sessions.send_invoice",
            "POST",
            f"/sessions/online/{session.reference_number}/invoices",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.INVOICE_SEND,
            idempotent=False,
            token=access_token,
            json_body=body,
            refs=[session.reference_number],
        )
        return str(response.json()["referenceNumber"])

    async def sent_invoice_status(
        self, access_token: str, session_reference: str, invoice_reference: str, *, context_nip: str | None = None
    ) -> SentInvoiceStatus:
        response = await self._call(
            "sessions.invoice_status",
            "GET",
            f"/sessions/{session_reference}/invoices/{invoice_reference}",
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.INVOICE_STATUS,
            idempotent=True,
            token=access_token,
            refs=[session_reference, invoice_reference],
        )
        return SentInvoiceStatus.from_json(response.json())

    async def session_invoices(
        self, access_token: str, session_reference: str, *, context_nip: str | None = None
    ) -> list[SentInvoiceStatus]:
        """Every invoice sent in the session (all pages): how a send whose answer was lost is found again."""
        found: list[SentInvoiceStatus] = []
        continuation: str | None = None
        while True:
            response = await self._call(
                "sessions.invoices",
                "GET",
                f"/sessions/{session_reference}/invoices",
                context=self._token_context(access_token, context_nip),
                group=EndpointGroup.SESSION_INVOICE_LIST,
                idempotent=True,
                token=access_token,
                params={"pageSize": 1000},
                headers={"x-continuation-token": continuation} if continuation else None,
                refs=[session_reference],
            )
            body = response.json()
            found += [SentInvoiceStatus.from_json(item) for item in body.get("invoices") or ()]
            continuation = body.get("continuationToken")
            if not continuation:
                return found

    async def invoice_upo(
        self,
        access_token: str,
        session_reference: str,
        *,
        invoice_reference: str | None = None,
        ksef_number: str | None = None,
        context_nip: str | None = None,
    ) -> bytes:
        """One invoice's UPO XML, by KSeF's reference of the send or by the KSeF number (the original of a
        duplicate, in the session that first sent it)."""
        if (invoice_reference is None) == (ksef_number is None):
            raise ValueError("name the invoice by exactly one of invoice_reference and ksef_number")
        path = (
            f"/sessions/{session_reference}/invoices/{invoice_reference}/upo"
            if invoice_reference is not None
            else f"/sessions/{session_reference}/invoices/ksef/{ksef_number}/upo"
        )
        response = await self._call(
            "sessions.invoice_upo",
            "GET",
            path,
            context=self._token_context(access_token, context_nip),
            group=EndpointGroup.SESSION_MISC,
            idempotent=True,
            token=access_token,
            headers={"Accept": "application/xml"},
            refs=[session_reference, invoice_reference or str(ksef_number)],
        )
        return response.content


def open_export_package(handle: ExportHandle, status: ExportStatus, parts: Sequence[bytes]) -> ExportedPackage:
    """Decrypt the parts (``download_export_parts``), check each against its ``partHash``, concatenate and unpack
    them; each invoice's hash is checked against ``_metadata.json``. CPU only, no I/O.

    A part whose hash differs makes the whole package unusable (``KsefPackageError``). One invoice whose bytes
    differ from its ``invoiceHash`` is only reported in ``mismatched``: the other invoices of the window are
    fine, and the caller rejects just that one (and fetches it again later) instead of the whole window."""
    package = status.package
    if package is None:
        raise KsefPackageError(f"export {handle.reference_number} has no package (status {status.code})")
    if len(parts) != len(package.parts):
        raise KsefPackageError(f"export {handle.reference_number}: {len(parts)} of {len(package.parts)} parts")
    archive = bytearray()
    for part, encrypted in zip(package.parts, parts, strict=True):
        try:
            plain = handle.key.decrypt(encrypted)
        except CryptoError as exc:
            raise KsefPackageError(f"part {part.ordinal_number} of {handle.reference_number}: {exc}") from None
        if part.part_hash and sha256_b64(plain) != part.part_hash:
            raise KsefPackageError(f"part {part.ordinal_number} of {handle.reference_number}: hash differs")
        archive.extend(plain)
    files = _unpack(bytes(archive), package.compression_type)
    metadata: list[dict[str, Any]] = []
    if METADATA_FILE in files:
        metadata = list(json.loads(files.pop(METADATA_FILE)).get("invoices") or [])
    invoices = [(name.removesuffix(".xml"), data) for name, data in sorted(files.items()) if name.endswith(".xml")]
    expected = {str(m.get("ksefNumber")): m.get("invoiceHash") for m in metadata}
    mismatched = tuple(
        ksef_number
        for ksef_number, xml in invoices
        if (wanted := expected.get(ksef_number)) and sha256_b64(xml) != wanted
    )
    if mismatched:
        log.warning(
            "export %s: %d invoice(s) do not match their invoiceHash: %s",
            handle.reference_number,
            len(mismatched),
            ", ".join(mismatched[:5]),
        )
    return ExportedPackage(invoices, metadata, mismatched)


def _reference_numbers(response: httpx.Response) -> list[str]:
    if "json" not in response.headers.get("content-type", ""):
        return []
    try:
        body = response.json()
    except ValueError:
        return []
    if isinstance(body, dict) and isinstance(body.get("referenceNumber"), str):
        return [body["referenceNumber"]]
    return []


def _unpack(archive: bytes, compression: str) -> dict[str, bytes]:
    try:
        if compression == "TarGz":
            files: dict[str, bytes] = {}
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                for member in tar.getmembers():
                    extracted = tar.extractfile(member) if member.isfile() else None
                    if extracted is not None:
                        files[member.name] = extracted.read()
            return files
        with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
            return {name: zipped.read(name) for name in zipped.namelist() if not name.endswith("/")}
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise KsefPackageError(f"unreadable export archive: {exc}") from None


class KsefClients:
    """One ``KsefClient`` per environment, all on the same shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        settings: KsefSettings,
        budget: Budget,
        tracer: trace.Tracer | None = None,
        observer: CallObserver | None = None,
        meter: metrics.Meter | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.http = http
        self._settings = settings
        self._budget = budget
        self._tracer = tracer
        self._observer = observer
        self._meter = meter
        self._clock = clock
        self._clients: dict[Environment, KsefClient] = {}

    def for_environment(self, environment: Environment | str) -> KsefClient:
        environment = Environment(environment)
        client = self._clients.get(environment)
        if client is None:
            client = self._clients[environment] = KsefClient(
                self.http,
                environment,
                settings=self._settings,
                budget=self._budget,
                tracer=self._tracer,
                observer=self._observer,
                meter=self._meter,
                clock=self._clock,
            )
        return client
