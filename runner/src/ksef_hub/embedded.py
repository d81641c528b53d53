"""Builds the embedded platform: every service mounted under its prefix of one FastAPI app.

Mounted apps' lifespans do not run by themselves (fastapi#811, starlette#649), so the root lifespan enters
each one through an ``AsyncExitStack``: services start in order and stop in reverse.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
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
from ksef_gateway.settings import GatewaySettings
from ksef_sim.main import create_app as create_ksef_sim_app
from ksef_sim.settings import SimSettings
from notify_svc.settings import NotifySettings
from platform_common.app import AppFactory
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


SERVICES: tuple[EmbeddedService, ...] = (
    EmbeddedService("/auth", auth_svc.main.DEFINITION, AuthSettings, auth_svc.main.create_app),
    EmbeddedService("/gateway", ksef_gateway.main.DEFINITION, GatewaySettings, ksef_gateway.main.create_app),
    EmbeddedService("/buffer", buffer_svc.main.DEFINITION, BufferSettings, buffer_svc.main.create_app),
    EmbeddedService("/approval", approval_svc.main.DEFINITION, ApprovalSettings, approval_svc.main.create_app),
    EmbeddedService("/notify", notify_svc.main.DEFINITION, NotifySettings, notify_svc.main.create_app),
)


def embedded_settings(service: EmbeddedService, data_dir: Path) -> ServiceSettings:
    # Environment variables still apply to every other field (e.g. AUTH_TELEMETRY__ENABLED=true).
    return service.settings_cls(
        db=DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{(data_dir / service.db_file).resolve()}")),
        messaging=MessagingSettings(transport="inprocess", relay_poll_interval_s=0.2),
        data_dir=data_dir,
    )


# The local KSeF 2.0 simulator rides along so the platform has a KSeF to talk to without the Ministry's TEST host.
KSEF_SIM_PREFIX = "/ksef-sim"
KSEF_SIM_DB_FILE = "ksef-sim.sqlite3"


def ksef_sim_settings(data_dir: Path) -> SimSettings:
    # KSEF_SIM_* environment variables still apply to every other field (delays, rate limits, public base URL).
    # With no public base URL the simulator builds its pre-signed links from the called host plus the mount prefix.
    return SimSettings(database_path=data_dir / KSEF_SIM_DB_FILE)


def create_embedded_app(data_dir: Path, *, public_url: str = "http://127.0.0.1:8000") -> FastAPI:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    bus = InProcessBus()
    apps = [(s, s.create_app(embedded_settings(s, data_dir), bus=bus, migrate_on_start=True)) for s in SERVICES]
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
            auth_app = next(a for s, a in apps if s.definition is auth_svc.main.DEFINITION)
            await auth_svc.demo.ensure_demo_data(auth_app.state.runtime)
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

    @root.get("/", summary="What runs here")
    async def index(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "product": "KSeF Hub",
            "mode": "embedded",
            "services": {s.name: {"url": base + s.prefix, "docs": f"{base}{s.prefix}/docs"} for s, _ in apps},
            "ksefSimulator": {"url": f"{base}{KSEF_SIM_PREFIX}/v2", "docs": f"{base}{KSEF_SIM_PREFIX}/docs"},
        }

    @root.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for service, sub_app in apps:
        root.mount(service.prefix, sub_app)
    root.mount(KSEF_SIM_PREFIX, ksef_sim_app)
    return root
