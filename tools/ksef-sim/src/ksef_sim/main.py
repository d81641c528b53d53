"""The KSeF 2.0 simulator app: ``/v2`` like the real hosts, ``/_sim`` for the operator (and its public
``/_sim/trust``), ``/status`` and ``/messages`` like Latarnia, ``/storage`` for pre-signed links."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

from ksef_sim.api import (
    auth,
    certificates,
    invoices,
    latarnia,
    limits,
    operator,
    peppol,
    permissions,
    security,
    sessions,
    sessions_batch,
    sessions_online,
    storage,
    testdata,
    tokens,
    trust,
)
from ksef_sim.api.sessions_batch import MAX_ENCRYPTED_PART
from ksef_sim.api.sessions_online import MB
from ksef_sim.errors import KsefError, install_error_handlers, ksef_error_response
from ksef_sim.operator_token import resolve_operator_token
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim
from platform_common.limits import declare_body_limits, install_http_limits
from platform_common.settings import HttpLimitsSettings

API_PREFIX = "/v2"

# Order matters where paths overlap: /auth/challenge, /auth/sessions and /auth/token/* before /auth/{referenceNumber};
# /sessions/online|batch before /sessions/{referenceNumber}.
V2_ROUTERS = (
    security.router,
    auth.router,
    tokens.router,
    certificates.router,
    permissions.router,
    testdata.router,
    limits.router,
    peppol.router,
    sessions_online.router,
    sessions_batch.router,
    sessions.router,
    invoices.router,
)


def create_app(settings: SimSettings | None = None) -> FastAPI:
    settings = settings or SimSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.operator_token = resolve_operator_token(settings)
        sim = Sim.open(settings)
        app.state.sim = sim
        try:
            yield
        finally:
            sim.close()

    app = FastAPI(title="KSeF 2.0 simulator", version="2.6.0-sim", lifespan=lifespan)
    install_error_handlers(app)

    v2 = APIRouter(prefix=API_PREFIX)
    for router in V2_ROUTERS:
        v2.include_router(router)
    app.include_router(v2)
    app.include_router(storage.router)
    app.include_router(latarnia.router)
    app.include_router(trust.router, prefix="/_sim")
    app.include_router(operator.router, prefix="/_sim")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.middleware("http")
    async def injected_faults(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Faults hit the API only; the operator, Latarnia and storage stay reachable to observe and heal.
        path = request.url.path[len(request.scope.get("root_path", "")) :]
        if not path.startswith(API_PREFIX + "/"):
            return await call_next(request)
        sim: Sim = request.app.state.sim
        faults = sim.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.outage:
            return Response(
                content=b"Service Unavailable",
                status_code=503,
                headers={"Retry-After": str(faults.outage_retry_after_s)},
                media_type="text/plain",
            )
        if faults.error_rate and sim.rng.random() < faults.error_rate:
            error = KsefError(
                500, "Wystąpił nieoczekiwany błąd (wstrzyknięty).", description="Błąd serwera.", status=500
            )
            return ksef_error_response(request, error)
        return await call_next(request)

    @app.middleware("http")
    async def count_responses(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Added last, so it wraps the fault middleware: injected 503s and 500s are counted too.
        response = await call_next(request)
        path = request.url.path[len(request.scope.get("root_path", "")) :]
        if path.startswith(API_PREFIX + "/"):
            sim: Sim = request.app.state.sim
            sim.traffic.record(response.status_code)
        return response

    # Bodies, query strings and headers are bounded like every platform service's (413/414/431 problem documents:
    # KSeF's spec gives no shape for these). The two routes that take more than the 1 MiB default, at the largest
    # size KSeF can accept there (REFERENCE.md §5, §8):
    install_http_limits(app, HttpLimitsSettings())
    declare_body_limits(
        app,
        {
            ("POST", API_PREFIX + "/sessions/online/{referenceNumber}/invoices"): SEND_INVOICE_BODY_LIMIT,
            ("PUT", "/storage/{blob:path}"): MAX_ENCRYPTED_PART,
        },
    )
    return app


# The largest invoice any context may be allowed (/testdata/limits accepts up to 10 MB with attachments), AES-CBC
# encrypted (PKCS#7 adds up to a block), base64-encoded, plus its JSON envelope of hashes and sizes. Anything larger
# could pass no invoice limit, so it is refused before it is read.
_LARGEST_INVOICE = 10 * MB
SEND_INVOICE_BODY_LIMIT = 4 * -(-((_LARGEST_INVOICE // 16 + 1) * 16) // 3) + 64 * 1024


def run(argv: list[str] | None = None) -> None:
    """``ksef-sim [--host H --port P --db PATH]`` serves; ``ksef-sim seed ...`` fills a state file and exits."""
    parser = argparse.ArgumentParser(prog="ksef-sim", description="Local KSeF 2.0 simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket instead of --host/--port")
    parser.add_argument("--db", help="state file (default .data/ksef-sim.sqlite3; env KSEF_SIM_DATABASE_PATH)")
    parser.add_argument("--public-base-url", help="host root used in pre-signed URLs (env KSEF_SIM_PUBLIC_BASE_URL)")
    parser.add_argument(
        "--operator-token-file",
        help="bearer token of /_sim (default: next to the state file, made and printed on first start; "
        "env KSEF_SIM_OPERATOR_TOKEN_FILE, or KSEF_SIM_OPERATOR_TOKEN for the token itself)",
    )
    commands = parser.add_subparsers(dest="command", metavar="{seed}")
    seed = commands.add_parser(
        "seed",
        help="write realistic FA(3) purchase invoices into a state file, then exit",
        description="Write accepted FA(3) invoices of many sellers to one buyer straight into the state file. "
        "Run it while no simulator serves that file (a running one would not see them until restarted); "
        "use POST /_sim/seed against a running one.",
    )
    seed.add_argument("--db", dest="seed_db", required=True, help="state file to write into")
    seed.add_argument("--buyer", required=True, help="buyer NIP (Podmiot2)")
    seed.add_argument("--count", type=int, required=True)
    seed.add_argument("--sellers", type=int, default=25)
    seed.add_argument("--start", help="start of the acquisition window, ISO-8601 with offset (default now - spread)")
    seed.add_argument("--spread-days", type=float, default=30.0)
    seed.add_argument("--subject3", help="NIP to put in Podmiot3 of a share of the invoices")
    seed.add_argument("--corrections", type=float, default=0.1, help="share of KOR invoices (default 0.1)")
    seed.add_argument("--foreign-currency-share", type=float, default=0.1)
    seed.add_argument("--random-seed", type=int, help="deterministic output (env KSEF_SIM_RANDOM_SEED)")
    args = parser.parse_args(argv)
    if args.command == "seed":
        raise SystemExit(_seed_command(parser, args))

    overrides: dict[str, object] = {}
    if args.db:
        overrides["database_path"] = args.db
    if args.public_base_url:
        overrides["public_base_url"] = args.public_base_url
    if args.operator_token_file:
        overrides["operator_token_file"] = args.operator_token_file
    settings = SimSettings(**overrides)  # type: ignore[arg-type]
    import signal

    import uvicorn

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then restores the previous handlers and re-raises the signal.
    # A stop on request is a clean exit for the simulator (exit code 0 for service managers and tests), so the
    # handlers it restores ignore the re-raised signal.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda _signum, _frame: None)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, fd=args.fd)


def _seed_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import json
    import re
    from datetime import datetime
    from pathlib import Path

    from ksef_sim.domain.seed import NIP_PATTERN, SeedError, SeedOptions, seed_invoices

    for flag, nip in (("--buyer", args.buyer), ("--subject3", args.subject3)):
        if nip is not None and not re.fullmatch(NIP_PATTERN, nip):
            parser.error(f"{flag} {nip!r} is not a NIP")
    start = None
    if args.start:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            parser.error(f"--start {args.start!r} is not ISO-8601")
        if start.tzinfo is None:
            parser.error("--start needs a UTC offset, e.g. 2026-01-01T00:00:00+01:00")
    overrides: dict[str, object] = {"database_path": Path(args.seed_db)}
    if args.random_seed is not None:
        overrides["random_seed"] = args.random_seed
    sim = Sim.open(SimSettings(**overrides))  # type: ignore[arg-type]
    try:
        result = seed_invoices(
            sim,
            SeedOptions(
                buyer_nip=args.buyer,
                count=args.count,
                sellers=args.sellers,
                start=start,
                spread_days=args.spread_days,
                subject3_nip=args.subject3,
                corrections=args.corrections,
                foreign_currency_share=args.foreign_currency_share,
            ),
        )
    except SeedError as exc:
        print(f"ksef-sim seed: {exc}", file=sys.stderr)
        return 2
    finally:
        sim.close()
    summary = {
        "created": result.created,
        "corrections": result.corrections,
        "foreignCurrency": result.foreign_currency,
        "withSubject3": result.with_subject3,
        "sellers": len(result.sellers),
        "firstAcquisitionDate": result.first_acquisition.isoformat() if result.first_acquisition else None,
        "lastAcquisitionDate": result.last_acquisition.isoformat() if result.last_acquisition else None,
    }
    print(json.dumps(summary))
    return 0
