"""Builds the embedded platform: every service mounted under its prefix of one FastAPI app.

Mounted apps' lifespans do not run by themselves (fastapi#811, starlette#649), so the root lifespan enters
each one through an ``AsyncExitStack``: services start in order and stop in reverse.

The services verify credentials exactly as in production: JWTs against auth-svc's JWKS and API keys through
auth-svc's introspection, both over HTTP to the runner's own URL, each service with client credentials made
for this run (``AuthWiring``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from pydantic import SecretStr

import approval_svc.main
import auth_svc.demo
import auth_svc.main
import buffer_svc.main
import ksef_gateway.main
import notify_svc.main
from approval_svc.settings import ApprovalSettings
from auth_svc.settings import AuthSettings
from buffer_svc.settings import BufferSettings
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.wiring import Gateway
from ksef_hub.demo import ensure_demo_ksef
from ksef_sim.main import create_app as create_ksef_sim_app
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim
from notify_svc.settings import NotifySettings
from platform_common.app import AppFactory
from platform_common.auth import public
from platform_common.logging import configure_logging
from platform_common.messaging.transport import InProcessBus
from platform_common.problems import install_problem_handlers
from platform_common.runtime import ServiceDefinition
from platform_common.settings import DatabaseSettings, MessagingSettings, ServiceSettings

log = logging.getLogger("ksef_hub")


@dataclass(frozen=True)
class EmbeddedService:
    prefix: str
    definition: ServiceDefinition
    settings_cls: type[ServiceSettings]
    create_app: AppFactory

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def db_file(self) -> str:
        return f"{self.definition.schema}.db"


AUTH_PREFIX = "/auth"
AUTH_SERVICE = EmbeddedService(AUTH_PREFIX, auth_svc.main.DEFINITION, AuthSettings, auth_svc.main.create_app)

SERVICES: tuple[EmbeddedService, ...] = (
    AUTH_SERVICE,
    EmbeddedService("/gateway", ksef_gateway.main.DEFINITION, GatewaySettings, ksef_gateway.main.create_app),
    EmbeddedService("/buffer", buffer_svc.main.DEFINITION, BufferSettings, buffer_svc.main.create_app),
    EmbeddedService("/approval", approval_svc.main.DEFINITION, ApprovalSettings, approval_svc.main.create_app),
    EmbeddedService("/notify", notify_svc.main.DEFINITION, NotifySettings, notify_svc.main.create_app),
)


def local_url(host: str, port: int) -> str:
    """The URL that reaches a server bound to ``host``: a wildcard bind address is not one to call."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  # compared, not bound
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class AuthWiring:
    """How the other services reach the mounted auth-svc, and the client secret each one proves itself with."""

    url: str
    client_secrets: Mapping[str, SecretStr]

    @classmethod
    def for_run(cls, public_url: str) -> AuthWiring:
        # Made afresh on every start rather than kept in the data folder: they only have to agree inside this
        # one process, and so no credential is left on disk.
        client_secrets = {s.name: SecretStr(secrets.token_urlsafe(32)) for s in SERVICES if s is not AUTH_SERVICE}
        return cls(url=public_url.rstrip("/") + AUTH_PREFIX, client_secrets=client_secrets)

    def client_settings(self, service_name: str, auth: AuthSettings) -> dict[str, Any]:
        """``AuthClientSettings`` fields for one service (a dict, so <PREFIX>AUTH__* variables fill the rest)."""
        return {
            "jwks_url": f"{self.url}/.well-known/jwks.json",
            "introspection_url": f"{self.url}/internal/introspect",
            "token_url": f"{self.url}/oauth/token",
            "issuer": auth.issuer,
            "audience": auth.audience,
            "client_id": service_name,
            "client_secret": self.client_secrets[service_name],
        }


def embedded_settings(
    service: EmbeddedService, data_dir: Path, wiring: AuthWiring, public_url: str = "http://127.0.0.1:8000"
) -> ServiceSettings:
    # Environment variables still apply to every other field (e.g. AUTH_TELEMETRY__ENABLED=true); the runner
    # owns the database, the transport and how the services reach auth-svc.
    values: dict[str, Any] = {
        "db": DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{(data_dir / service.db_file).resolve()}")),
        "messaging": MessagingSettings(transport="inprocess", relay_poll_interval_s=0.2),
        "data_dir": data_dir,
    }
    if service is not AUTH_SERVICE:
        auth = embedded_settings(AUTH_SERVICE, data_dir, wiring)
        assert isinstance(auth, AuthSettings)
        settings = service.settings_cls(**values, auth=wiring.client_settings(service.name, auth))
        if isinstance(settings, GatewaySettings):
            settings = gateway_settings(settings, public_url)
        return settings
    # A dict, merged with AUTH_SERVICE_CREDENTIALS: clients registered there keep working.
    settings = AuthSettings(**values, service_credentials=dict(wiring.client_secrets))
    if "link_base_url" not in settings.model_fields_set:
        # Invitation and reset links point at this runner, on whatever port it listens.
        settings = settings.model_copy(update={"link_base_url": wiring.url})
    return settings


# The local KSeF 2.0 simulator rides along so the platform has a KSeF to talk to without the Ministry's TEST host.
KSEF_SIM_PREFIX = "/ksef-sim"
KSEF_SIM_DB_FILE = "ksef-sim.sqlite3"


def gateway_settings(settings: GatewaySettings, public_url: str) -> GatewaySettings:
    """The gateway talks to the mounted simulator at the address this runner serves (so ``--port`` works), as
    environment ``sim``; GATEWAY_KSEF__SIM_BASE_URL / GATEWAY_KSEF__ENVIRONMENT still win when set (e.g. to use
    KSeF TEST from the embedded mode)."""
    ksef = settings.ksef
    chosen = ksef.model_fields_set
    updates: dict[str, Any] = {}
    if "sim_base_url" not in chosen:
        updates["sim_base_url"] = f"{public_url.rstrip('/')}{KSEF_SIM_PREFIX}/v2"
    if "environment" not in chosen:
        updates["environment"] = Environment.SIM
    sync = settings.sync
    if "fetch_now_ignores_min_interval" not in sync.model_fields_set:
        # "Fetch now" against the local simulator need not wait out KSeF's 15-minute polling guidance.
        sync = sync.model_copy(update={"fetch_now_ignores_min_interval": True})
    return settings.model_copy(update={"ksef": ksef.model_copy(update=updates), "sync": sync})


def ksef_sim_settings(data_dir: Path) -> SimSettings:
    # KSEF_SIM_* environment variables still apply to every other field (delays, rate limits, public base URL).
    # With no public base URL the simulator builds its pre-signed links from the called host plus the mount prefix.
    return SimSettings(database_path=data_dir / KSEF_SIM_DB_FILE)


async def _demo_ksef(sim: Sim, gateway: Gateway, public_url: str) -> None:
    try:
        await ensure_demo_ksef(sim, gateway, public_url)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the KSeF demo data could not be set up (the platform runs without it)")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_embedded_app(data_dir: Path, *, public_url: str = "http://127.0.0.1:8000") -> FastAPI:
    """The platform to serve at ``public_url`` (the services call auth-svc there: it must be where it listens)."""
    public_url = public_url.rstrip("/")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    bus = InProcessBus()
    wiring = AuthWiring.for_run(public_url)
    apps = [
        (s, s.create_app(embedded_settings(s, data_dir, wiring, public_url), bus=bus, migrate_on_start=True))
        for s in SERVICES
    ]
    ksef_sim_app = create_ksef_sim_app(ksef_sim_settings(data_dir))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        configure_logging(os.environ.get("KSEF_HUB_LOG_LEVEL", "INFO"), json=False, force=True)
        async with AsyncExitStack() as stack:
            # The simulator first: it only opens its state file, and the services may call it as soon as they run.
            await stack.enter_async_context(ksef_sim_app.router.lifespan_context(ksef_sim_app))
            for _service, sub_app in apps:
                await stack.enter_async_context(sub_app.router.lifespan_context(sub_app))
            # The demo accounts the README lists (idempotent: existing users keep their passwords).
            auth_app = next(a for s, a in apps if s is AUTH_SERVICE)
            await auth_svc.demo.ensure_demo_data(auth_app.state.runtime)
            # The demo clients' KSeF data: invoices in the simulator, their tokens in the gateway's vault. The vault
            # checks a token in KSeF over HTTP, i.e. through this server, which serves only once startup is over: a
            # background task, stopped first on shutdown.
            gateway_app = next(a for s, a in apps if s.name == ksef_gateway.main.DEFINITION.name)
            demo = asyncio.create_task(
                _demo_ksef(ksef_sim_app.state.sim, Gateway.of(gateway_app.state.runtime), public_url),
                name="ksef-demo-data",
            )
            stack.push_async_callback(_cancel, demo)
            _app.state.demo_ksef = demo  # tests wait for it
            lines = [f"KSeF Hub (embedded) is up at {public_url} - data in {data_dir}"]
            lines += [f"  {s.name:<13} {public_url}{s.prefix}  (ready: {public_url}{s.prefix}/readyz)" for s, _ in apps]
            lines.append(
                f"  {'ksef-sim':<13} {public_url}{KSEF_SIM_PREFIX}/v2  (KSeF 2.0 simulator; operator API "
                f"{public_url}{KSEF_SIM_PREFIX}/_sim, Latarnia {public_url}{KSEF_SIM_PREFIX}/status)"
            )
            print("\n".join(lines), flush=True)
            yield

    root = FastAPI(title="KSeF Hub (embedded)", lifespan=lifespan)
    install_problem_handlers(root)

    @root.get("/", summary="What runs here", dependencies=[Depends(public("service directory; links only"))])
    async def index(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "product": "KSeF Hub",
            "mode": "embedded",
            "services": {s.name: {"url": base + s.prefix, "docs": f"{base}{s.prefix}/docs"} for s, _ in apps},
            "ksefSimulator": {"url": f"{base}{KSEF_SIM_PREFIX}/v2", "docs": f"{base}{KSEF_SIM_PREFIX}/docs"},
        }

    @root.get("/healthz", dependencies=[Depends(public("liveness probe of the whole process"))])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for service, sub_app in apps:
        root.mount(service.prefix, sub_app)
    root.mount(KSEF_SIM_PREFIX, ksef_sim_app)
    return root
