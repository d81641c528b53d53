"""The KSeF 2.0 simulator app: ``/v2`` like the real hosts, ``/_sim`` for the operator, ``/status`` and ``/messages``
like Latarnia, ``/storage`` for pre-signed links."""

from __future__ import annotations

import argparse
import asyncio
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
)
from ksef_sim.errors import KsefError, install_error_handlers, ksef_error_response
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim

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
                content=b"Service Unavailable", status_code=503, headers={"Retry-After": "60"}, media_type="text/plain"
            )
        if faults.error_rate and sim.rng.random() < faults.error_rate:
            error = KsefError(
                500, "Wystąpił nieoczekiwany błąd (wstrzyknięty).", description="Błąd serwera.", status=500
            )
            return ksef_error_response(request, error)
        return await call_next(request)

    return app


def run() -> None:
    parser = argparse.ArgumentParser(prog="ksef-sim", description="Local KSeF 2.0 simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--db", help="state file (default .data/ksef-sim.sqlite3; env KSEF_SIM_DATABASE_PATH)")
    parser.add_argument("--public-base-url", help="host root used in pre-signed URLs (env KSEF_SIM_PUBLIC_BASE_URL)")
    args = parser.parse_args()
    overrides: dict[str, object] = {}
    if args.db:
        overrides["database_path"] = args.db
    if args.public_base_url:
        overrides["public_base_url"] = args.public_base_url
    settings = SimSettings(**overrides)  # type: ignore[arg-type]
    import uvicorn

    uvicorn.run(create_app(settings), host=args.host, port=args.port)
