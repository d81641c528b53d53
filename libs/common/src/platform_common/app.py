"""The FastAPI application shared shape: lifespan, health endpoints, problem details, input limits, tracing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from platform_common.auth import Authenticator, install_authenticator, install_client_access, public, require
from platform_common.limits import install_http_limits
from platform_common.logging import configure_logging
from platform_common.messaging.ops_api import ops_router
from platform_common.messaging.transport import InProcessBus
from platform_common.metrics import metrics_router
from platform_common.problems import install_problem_handlers, problem_response
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.settings import ServiceSettings
from platform_common.telemetry import Telemetry, setup_telemetry


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get(
        "/healthz",
        summary="Liveness: the process answers",
        dependencies=[Depends(public("liveness probe for orchestrators"))],
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: database and transport reachable",
        response_model=None,
        dependencies=[Depends(public("readiness probe for orchestrators; reveals only check names"))],
    )
    async def readyz(request: Request) -> JSONResponse | dict[str, Any]:
        runtime: ServiceRuntime = request.app.state.runtime
        checks = await runtime.readiness() if runtime.started else {"runtime": "starting"}
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks}
        return problem_response(503, detail="Not ready", code="not-ready", checks=checks)

    return router


def create_service_app(
    definition: ServiceDefinition,
    settings: ServiceSettings,
    *,
    bus: InProcessBus | None = None,
    telemetry: Telemetry | None = None,
    migrate_on_start: bool = False,
) -> FastAPI:
    telemetry = telemetry or setup_telemetry(definition.name, settings.telemetry)
    runtime = ServiceRuntime(definition, settings, bus=bus, telemetry=telemetry, migrate_on_start=migrate_on_start)
    authenticator = Authenticator(settings.auth, service_name=definition.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.telemetry.log_level, json=settings.telemetry.log_json)
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            # The one that is installed now: tests may have replaced it.
            await app.state.authenticator.aclose()

    app = FastAPI(
        title=definition.name,
        version=definition.version,
        description=definition.description,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    install_authenticator(app, authenticator)
    if runtime.client_access is not None:
        install_client_access(app, runtime.client_access)
    install_problem_handlers(app)
    install_http_limits(app, settings.http_limits)
    app.include_router(health_router())
    app.include_router(metrics_router())
    app.include_router(ops_router(definition.operator or require("ops")))
    for router in definition.routers:
        app.include_router(router)
    if telemetry.instrumented:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # Probes and scrapes every few seconds would drown the RED metrics and traces of the real traffic.
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            excluded_urls="/healthz$,/readyz$,/metrics$",
        )
    if telemetry.enabled:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # Query spans only: they have no metric worth a hook on every statement when traces are off.
        SQLAlchemyInstrumentor().instrument(
            engine=runtime.db.engine.sync_engine, tracer_provider=telemetry.tracer_provider
        )
    return app


class AppFactory(Protocol):
    def __call__(
        self,
        settings: ServiceSettings | None = None,
        *,
        bus: InProcessBus | None = None,
        telemetry: Telemetry | None = None,
        migrate_on_start: bool = False,
    ) -> FastAPI: ...


def app_factory(definition: ServiceDefinition, settings_cls: type[ServiceSettings]) -> AppFactory:
    """A service's ``create_app(settings)``: settings from the environment unless given (never at import)."""

    def create_app(
        settings: ServiceSettings | None = None,
        *,
        bus: InProcessBus | None = None,
        telemetry: Telemetry | None = None,
        migrate_on_start: bool = False,
    ) -> FastAPI:
        if settings is not None and not isinstance(settings, settings_cls):
            raise TypeError(f"{definition.name} needs {settings_cls.__name__}, got {type(settings).__name__}")
        return create_service_app(
            definition, settings or settings_cls(), bus=bus, telemetry=telemetry, migrate_on_start=migrate_on_start
        )

    create_app.__name__ = f"create_{definition.schema}_app"
    return create_app
