"""The simulator operator's API, mounted at ``/_sim`` (not a KSeF endpoint; no rate limit, no faults). Every route
wants ``Authorization: Bearer <operator token>`` (``ksef_sim.operator_token``) and answers 401 without it: on a
listener others can reach, this API would let anybody change KSeF's clock or take it down.

- ``/faults``: outage (every ``/v2`` call 503, Latarnia FAILURE / TOTAL_FAILURE / MAINTENANCE), added latency, a
  fraction of random 5xx, stuck exports (status 100 until cleared), refused session keys (new sessions end in 415),
  forced 429s.
- ``/clock``: move, freeze or reset the simulator clock that every time-driven transition reads.
- ``/keys/rotate``: replace a Ministry key; clients holding the old ``publicKeyId`` then get 21470.
- ``/seed`` and ``/stats``: bulk realistic FA(3) purchase invoices for tests and benchmarks, and what the store holds
  and how the ``/v2`` API answered (calls per HTTP status).

Being our own API, errors here are RFC 7807 problem documents with 422 for invalid input (instead of KSeF's
400 21405 used under ``/v2``), so a typo in a test fixture reads clearly.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

from ksef_sim.domain import latarnia
from ksef_sim.domain.latarnia import Category
from ksef_sim.domain.seed import NIP_PATTERN, SeedError, SeedOptions, seed_invoices
from ksef_sim.errors import PROBLEM_JSON
from ksef_sim.records import StoredInvoice
from ksef_sim.state import Faults, Sim, get_sim
from ksef_sim.store import Record


def _problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _is_operator(request: Request) -> bool:
    expected: SecretStr | None = getattr(request.app.state, "operator_token", None)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if expected is None or scheme.lower() != "bearer" or not given:
        return False  # no token set up (lifespan not run): closed, not open
    return hmac.compare_digest(given.strip().encode(), expected.get_secret_value().encode())


class _OperatorRoute(APIRoute):
    """Checks the operator token before anything of the request is read, and turns request-validation failures into
    422 problem documents before the app-wide KSeF handler (21405)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if not _is_operator(request):
                return _problem(
                    401,
                    "Operator token required",
                    "The simulator's operator API wants 'Authorization: Bearer <operator token>'.",
                    headers={"WWW-Authenticate": 'Bearer realm="ksef-sim operator"'},
                )
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [
                    {
                        "field": ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body",
                        "message": str(error.get("msg", "invalid")),
                    }
                    for error in exc.errors()
                ]
                detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
                return _problem(422, "Invalid operator request", detail, errors)
            except SeedError as exc:
                return _problem(422, "Invalid operator request", str(exc))

        return route


# Declared for the OpenAPI document (the "Authorize" button of /docs); the check itself is ``_is_operator``.
_operator_bearer = HTTPBearer(
    auto_error=False, scheme_name="SimOperatorToken", description="The simulator's operator token."
)
router = APIRouter(
    tags=["Simulator operator"],
    route_class=_OperatorRoute,
    dependencies=[Security(_operator_bearer)],
    responses={401: {"description": "No or wrong operator token (RFC 7807 problem document)"}},
)

_UNPROCESSABLE: dict[int | str, dict[str, Any]] = {422: {"description": "Invalid input (RFC 7807 problem document)"}}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


# --- faults -----------------------------------------------------------------------------------------------------


class FaultsRequest(_Model):
    """The whole fault configuration; ``PUT`` replaces it, omitted fields take their defaults (no fault)."""

    outage: bool = Field(False, description="Every /v2 call answers 503 with Retry-After; Latarnia reports it.")
    kind: Category = Field(Category.FAILURE, description="What Latarnia reports while the outage lasts.")
    outage_message: str | None = Field(None, max_length=500, description="Appended to the Latarnia message text.")
    retry_after_seconds: int = Field(
        60, ge=0, le=86_400, description="The Retry-After header of the outage's 503 answers."
    )
    latency_ms: int = Field(0, ge=0, le=120_000, description="Delay added to every /v2 call.")
    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of /v2 calls answered 500 at random.")
    stuck_exports: bool = Field(False, description="New invoice exports stay at status 100 until cleared.")
    refuse_session_keys: bool = Field(
        False,
        description="Online and batch sessions opened while set answer 201 but their key counts as undecryptable: "
        "status 415; sends into an online one answer 400 21180, a closed batch one ends in 415 (REFERENCE.md §4).",
    )


class FaultsView(FaultsRequest):
    forced429s: int = Field(
        alias="forced429s", description="How many of the next rate-limited /v2 calls still get a forced 429."
    )
    outage_since: datetime | None = Field(None, description="Start of the running Latarnia event, if any.")


class Force429Request(_Model):
    count: int = Field(ge=0, le=1_000_000, description="Answer 429 to the next `count` rate-limited /v2 calls.")


def _faults_view(sim: Sim) -> FaultsView:
    faults = sim.faults
    opened = latarnia.open_event_message(sim.store) if faults.outage else None
    return FaultsView(
        outage=faults.outage,
        kind=Category(faults.outage_kind),
        outage_message=faults.outage_message,
        retry_after_seconds=faults.outage_retry_after_s,
        latency_ms=faults.latency_ms,
        error_rate=faults.error_rate,
        stuck_exports=faults.stuck_exports,
        refuse_session_keys=faults.refuse_session_keys,
        forced429s=sim.limiter.forced_429s,
        outage_since=opened.start if opened else None,
    )


def _apply_faults(sim: Sim, wanted: FaultsRequest) -> None:
    """Replace the faults, publishing Latarnia start/end messages when the outage begins, ends or changes kind."""
    now = sim.clock.now()
    latarnia.reconcile(sim.store, sim.faults.outage, now)
    before = sim.faults
    kind_changed = before.outage and wanted.outage and before.outage_kind != wanted.kind.value
    if before.outage and (not wanted.outage or kind_changed):
        latarnia.end_event(sim.store, now)
    if wanted.outage and (not before.outage or kind_changed):
        latarnia.start_event(sim.store, wanted.kind, now, wanted.outage_message)
    sim.faults = Faults(
        outage=wanted.outage,
        outage_message=wanted.outage_message,
        latency_ms=wanted.latency_ms,
        error_rate=wanted.error_rate,
        stuck_exports=wanted.stuck_exports,
        refuse_session_keys=wanted.refuse_session_keys,
        outage_kind=wanted.kind.value,
        outage_retry_after_s=wanted.retry_after_seconds,
    )


@router.get("/faults", response_model=FaultsView, summary="Current injected faults")
async def get_faults(request: Request) -> FaultsView:
    sim = get_sim(request)
    latarnia.reconcile(sim.store, sim.faults.outage, sim.clock.now())
    return _faults_view(sim)


@router.put("/faults", response_model=FaultsView, responses=_UNPROCESSABLE, summary="Replace the injected faults")
async def put_faults(body: FaultsRequest, request: Request) -> FaultsView:
    sim = get_sim(request)
    _apply_faults(sim, body)
    return _faults_view(sim)


@router.delete("/faults", response_model=FaultsView, summary="Clear every fault, forced 429s included")
async def clear_faults(request: Request) -> FaultsView:
    sim = get_sim(request)
    _apply_faults(sim, FaultsRequest())
    sim.limiter.forced_429s = 0
    return _faults_view(sim)


@router.post("/faults/force-429", response_model=FaultsView, responses=_UNPROCESSABLE, summary="Force 429s")
async def force_429(body: Force429Request, request: Request) -> FaultsView:
    sim = get_sim(request)
    sim.limiter.forced_429s = body.count
    return _faults_view(sim)


# --- clock ------------------------------------------------------------------------------------------------------


class ClockView(_Model):
    now: datetime
    frozen: bool
    offset_seconds: float = Field(description="Simulator time minus real time while running (unused when frozen).")


class AdvanceRequest(_Model):
    seconds: float = Field(ge=0, le=10 * 366 * 24 * 3600, description="Move the clock forward (never backwards).")


class SetClockRequest(_Model):
    now: AwareDatetime = Field(description="The new simulator time; an offset is required.")
    frozen: bool = Field(False, description="Stop the clock at `now` instead of letting it run from there.")


def _clock_view(sim: Sim) -> ClockView:
    clock = sim.clock
    return ClockView(now=clock.now(), frozen=clock.frozen_at is not None, offset_seconds=clock.offset.total_seconds())


@router.get("/clock", response_model=ClockView, summary="Simulator time")
async def get_clock(request: Request) -> ClockView:
    return _clock_view(get_sim(request))


@router.post("/clock/advance", response_model=ClockView, responses=_UNPROCESSABLE, summary="Move the clock forward")
async def advance_clock(body: AdvanceRequest, request: Request) -> ClockView:
    sim = get_sim(request)
    sim.clock.advance(body.seconds)
    sim.save_clock()
    return _clock_view(sim)


@router.put("/clock", response_model=ClockView, responses=_UNPROCESSABLE, summary="Set (and optionally freeze) time")
async def set_clock(body: SetClockRequest, request: Request) -> ClockView:
    sim = get_sim(request)
    sim.clock.set(body.now, frozen=body.frozen)
    sim.save_clock()
    return _clock_view(sim)


@router.delete("/clock", response_model=ClockView, summary="Back to real time")
async def reset_clock(request: Request) -> ClockView:
    sim = get_sim(request)
    sim.clock.reset()
    sim.save_clock()
    return _clock_view(sim)


# --- Ministry keys ----------------------------------------------------------------------------------------------


class RotateKeyRequest(_Model):
    usage: Literal["KsefTokenEncryption", "SymmetricKeyEncryption"]


class RotateKeyView(_Model):
    usage: str
    public_key_id: str
    previous_public_key_id: str


@router.post("/keys/rotate", response_model=RotateKeyView, responses=_UNPROCESSABLE, summary="Rotate a Ministry key")
async def rotate_key(body: RotateKeyRequest, request: Request) -> RotateKeyView:
    sim = get_sim(request)
    previous = sim.keys.for_usage(body.usage).public_key_id
    fresh = sim.keys.rotate(sim.store, body.usage, sim.clock.now())
    return RotateKeyView(usage=body.usage, public_key_id=fresh.public_key_id, previous_public_key_id=previous)


# --- seeding and stats ------------------------------------------------------------------------------------------


class SeedRequest(_Model):
    buyer_nip: str = Field(pattern=NIP_PATTERN, description="Podmiot2 NIP of every invoice.")
    count: int = Field(ge=1, le=200_000)
    sellers: int = Field(25, ge=1, le=10_000, description="Distinct sellers (valid-checksum NIPs).")
    start: AwareDatetime | None = Field(None, description="Start of the acquisition window; default now - spreadDays.")
    spread_days: float = Field(30.0, gt=0, le=3650, description="Window length; acquisition dates never pass now.")
    subject3_nip: str | None = Field(None, pattern=NIP_PATTERN, description="Put this NIP in Podmiot3 of some.")
    subject3_share: float | None = Field(None, ge=0, le=1, description="Default 0.25 with subject3Nip, else 0.1.")
    corrections: float = Field(0.1, ge=0, le=1, description="Share of KOR invoices correcting earlier seeded ones.")
    foreign_currency_share: float = Field(0.1, ge=0, le=1, description="Share of EUR/USD invoices.")
    buyer_name: str | None = Field(None, min_length=1, max_length=200)
    issued_days_before: int = Field(
        0, ge=0, le=366, description="P_1 this many days before the sending day: KSeF marks them Offline."
    )


class SeedView(_Model):
    created: int
    buyer_nip: str
    sellers: list[str]
    corrections: int
    foreign_currency: int
    with_subject3: int
    first_acquisition_date: datetime | None
    last_acquisition_date: datetime | None
    ksef_numbers: list[str] = Field(description="The first 100 KSeF numbers, in acquisition order.")


@router.post(
    "/seed", response_model=SeedView, status_code=201, responses=_UNPROCESSABLE, summary="Seed purchase invoices"
)
async def seed(body: SeedRequest, request: Request) -> SeedView:
    sim = get_sim(request)
    result = seed_invoices(
        sim,
        SeedOptions(
            buyer_nip=body.buyer_nip,
            count=body.count,
            sellers=body.sellers,
            start=body.start,
            spread_days=body.spread_days,
            subject3_nip=body.subject3_nip,
            subject3_share=body.subject3_share,
            corrections=body.corrections,
            foreign_currency_share=body.foreign_currency_share,
            buyer_name=body.buyer_name,
            issued_days_before=body.issued_days_before,
        ),
    )
    return SeedView(
        created=result.created,
        buyer_nip=body.buyer_nip,
        sellers=result.sellers,
        corrections=result.corrections,
        foreign_currency=result.foreign_currency,
        with_subject3=result.with_subject3,
        first_acquisition_date=result.first_acquisition,
        last_acquisition_date=result.last_acquisition,
        ksef_numbers=result.ksef_numbers,
    )


class StatsView(_Model):
    now: datetime
    invoices: int
    invoices_by_type: dict[str, int]
    invoices_not_yet_indexed: int = Field(description="Accepted but not yet visible to PermanentStorage queries.")
    records: dict[str, int] = Field(description="Count of every record kind the simulator knows, by KIND.")
    responses_by_status: dict[str, int] = Field(
        description="How many /v2 calls were answered with each HTTP status since start (429s from the rate limits, "
        "503s of an injected outage, ...)."
    )


def _record_classes() -> list[type[Record]]:
    found: dict[str, type[Record]] = {}
    pending: list[type[Record]] = list(Record.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        kind = cls.__dict__.get("KIND")
        if isinstance(kind, str):
            found.setdefault(kind, cls)
    return [found[k] for k in sorted(found)]


@router.get("/stats", response_model=StatsView, summary="What the simulator holds")
async def stats(request: Request) -> StatsView:
    sim = get_sim(request)
    now = sim.clock.now()
    invoices = sim.store.all(StoredInvoice)
    by_type: dict[str, int] = {}
    for invoice in invoices:
        by_type[invoice.invoice_type] = by_type.get(invoice.invoice_type, 0) + 1
    return StatsView(
        now=now,
        invoices=len(invoices),
        invoices_by_type=by_type,
        invoices_not_yet_indexed=sum(1 for i in invoices if i.indexed_at > now),
        records={cls.KIND: sim.store.count(cls) for cls in _record_classes()},
        responses_by_status={str(status): count for status, count in sorted(sim.traffic.by_status.items())},
    )
