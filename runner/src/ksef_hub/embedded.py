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
import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from pydantic import SecretStr

import approval_svc.demo
import approval_svc.main
import auth_svc.demo
import auth_svc.main
import buffer_svc.main
import ksef_gateway.main
import ksef_gateway.sales.demo
import notify_svc.main
from approval_svc.integrations.service import Office
from approval_svc.settings import ApprovalSettings
from auth_svc.settings import AuthSettings
from buffer_svc.settings import BufferSettings
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.settings import GatewaySettings
from ksef_gateway.wiring import Gateway
from ksef_hub.demo import ensure_demo_ksef, ensure_demo_month
from ksef_hub.mail_catcher import MAIL_PATH, EmbeddedMailCatcher
from ksef_hub.web_ui import install_web_ui
from ksef_hub.webhook_catcher import WEBHOOKS_PATH, EmbeddedWebhookCatcher
from ksef_sim.main import create_app as create_ksef_sim_app
from ksef_sim.operator_token import token_file
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim
from notify_svc.settings import NotifySettings
from platform_common.app import AppFactory
from platform_common.auth import public
from platform_common.auth.principal import Principal
from platform_common.logging import configure_logging
from platform_common.messaging.transport import InProcessBus
from platform_common.problems import install_problem_handlers
from platform_common.runtime import ServiceDefinition, ServiceRuntime
from platform_common.sealing import ensure_private_key_file, public_key_of
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
    service: EmbeddedService,
    data_dir: Path,
    wiring: AuthWiring,
    public_url: str = "http://127.0.0.1:8000",
    mail_catcher: EmbeddedMailCatcher | None = None,
    webhook_catcher: EmbeddedWebhookCatcher | None = None,
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
        if isinstance(settings, ApprovalSettings):
            settings = approval_settings(settings, data_dir, wiring, public_url)
        if isinstance(settings, BufferSettings) and "gateway_api_url" not in settings.model_fields_set:
            # The invoices' XML from the mounted gateway, on whatever port this runner listens.
            settings = settings.model_copy(update={"gateway_api_url": f"{public_url.rstrip('/')}/gateway"})
        if isinstance(settings, NotifySettings):
            settings = with_notify_seal_key(settings, data_dir)
            if mail_catcher is not None:
                settings = mail_catcher.notify_settings(settings)
            if webhook_catcher is not None:
                settings = webhook_catcher.notify_settings(settings)
        return with_metrics_token(settings, data_dir)
    # A dict, merged with AUTH_SERVICE_CREDENTIALS: clients registered there keep working.
    settings = AuthSettings(**values, service_credentials=dict(wiring.client_secrets))
    if "link_base_url" not in settings.model_fields_set:
        # Invitation and reset links point at this runner, on whatever port it listens.
        settings = settings.model_copy(update={"link_base_url": wiring.url})
    if "notify_public_key" not in settings.model_fields_set:
        settings = settings.model_copy(update={"notify_public_key": embedded_notify_public_key(data_dir)})
    return with_metrics_token(settings, data_dir)


# The scrape token of every service's /metrics when <PREFIX>_TELEMETRY__METRICS_TOKEN is not set: made on first
# start (0600) and kept, so that a Prometheus pointed at `make run` keeps scraping across restarts.
METRICS_TOKEN_FILE = "metrics-token"  # noqa: S105 (a file name, not the token)
ServiceSettingsT = TypeVar("ServiceSettingsT", bound=ServiceSettings)


def with_metrics_token(settings: ServiceSettingsT, data_dir: Path) -> ServiceSettingsT:
    if settings.telemetry.metrics_token is not None:
        return settings
    path = data_dir / METRICS_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    token = SecretStr(path.read_text(encoding="ascii").strip())
    return settings.model_copy(update={"telemetry": settings.telemetry.model_copy(update={"metrics_token": token})})


def embedded_notify_public_key(data_dir: Path) -> str:
    """Links and codes are sealed to the key notify-svc opens them with, whichever source that key comes from."""
    notify = with_notify_seal_key(NotifySettings(data_dir=data_dir), data_dir)
    seal_key = notify.seal_key()
    assert seal_key is not None
    return public_key_of(seal_key.get_secret_value())


def approval_settings(
    settings: ApprovalSettings, data_dir: Path, wiring: AuthWiring, public_url: str
) -> ApprovalSettings:
    """Consent and activation links point at this runner; the office's details come from the mounted auth-svc."""
    chosen = settings.model_fields_set
    updates: dict[str, Any] = {}
    if "public_url" not in chosen:
        updates["public_url"] = f"{public_url.rstrip('/')}/approval"
    if "auth_api_url" not in chosen:
        updates["auth_api_url"] = wiring.url
    if "notify_public_key" not in chosen:
        updates["notify_public_key"] = embedded_notify_public_key(data_dir)
    return settings.model_copy(update=updates)


# notify-svc's sealing key when NOTIFY_SEAL_PRIVATE_KEY / NOTIFY_SEAL_KEY_FILE are not set: made on first start
# and kept (0600), so that links sealed before a restart, still in an outbox or a dead letter, stay readable.
NOTIFY_SEAL_KEY_FILE = "notify-seal.key"


def with_notify_seal_key(settings: NotifySettings, data_dir: Path) -> NotifySettings:
    if settings.seal_key() is not None:
        return settings
    path = data_dir / NOTIFY_SEAL_KEY_FILE
    ensure_private_key_file(path)
    return settings.model_copy(update={"seal_key_file": path})


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


def uses_ksef_sim(gateway: GatewaySettings) -> bool:
    """The simulator is mounted only for a gateway that talks to it: with KSeF TEST, DEMO or PROD configured it would
    be a second, unused KSeF with an operator API beside the real one."""
    return gateway.ksef.environment is Environment.SIM


def ksef_sim_settings(data_dir: Path) -> SimSettings:
    # KSEF_SIM_* environment variables still apply to every other field (delays, rate limits, public base URL).
    # With no public base URL the simulator builds its pre-signed links from the called host plus the mount prefix.
    return SimSettings(database_path=data_dir / KSEF_SIM_DB_FILE)


def is_loopback(host: str) -> bool:
    """Only loopback binds keep the platform to this machine; a name other than ``localhost`` may resolve anywhere."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# In the data folder: whether the demo accounts there were made with the published password. A password applies
# only to the accounts it creates, so a folder seeded once with the published one keeps it whatever comes later.
DEMO_MARKER = "demo-accounts"
MADE_WITH_PUBLISHED = "published-password"
MADE_WITH_OWN = "own-password"


class DemoExposed(RuntimeError):
    """Serving the demo accounts with their published password beyond this machine."""


def check_demo_exposure(host: str, data_dir: Path, *, demo: bool, demo_password: str) -> None:
    if is_loopback(host):
        return
    if demo and demo_password == auth_svc.demo.DEMO_PASSWORD:
        raise DemoExposed(
            f"refusing to listen on {host}: the demo accounts' password is published in the README. Set "
            "KSEF_HUB_DEMO_PASSWORD to a password of your own, or run without demo data (KSEF_HUB_DEMO=false, "
            "make run DEMO=0), or listen on loopback (KSEF_HUB_HOST=127.0.0.1)."
        )
    marker = data_dir / DEMO_MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == MADE_WITH_PUBLISHED:
        raise DemoExposed(
            f"refusing to listen on {host}: the demo accounts in {data_dir} were made with the published password "
            "(a new one applies only to accounts it creates). Use a fresh data folder (KSEF_HUB_DATA_DIR)."
        )


def _record_demo_password(data_dir: Path, demo_password: str) -> None:
    marker = data_dir / DEMO_MARKER
    published = demo_password == auth_svc.demo.DEMO_PASSWORD
    if published or not marker.exists():
        marker.write_text((MADE_WITH_PUBLISHED if published else MADE_WITH_OWN) + "\n", encoding="utf-8")


def secure_data_dir(data_dir: Path) -> None:
    """The data folder holds every database, the simulator's state and its operator token: the owner's alone
    (folders 0700, files 0600), tightened on every start for folders made before or by a wider umask."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (data_dir, *data_dir.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # chmod would follow it out of the folder
        wanted = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if stat.S_IMODE(info.st_mode) != wanted:
            path.chmod(wanted)


async def _demo_integrations(approval: ServiceRuntime, data: auth_svc.demo.DemoData) -> None:
    """The active demo client's integration (its ``integration.activated`` opens it in every service's access
    projection) and the pending demo client's consent request, in flight (its mail lands in the catcher)."""
    office_name, office_nip = auth_svc.demo.OFFICE
    office = Office(data.office_id, office_name, office_nip)
    admin = data.users[auth_svc.demo.OFFICE_ADMIN]
    active_name, active_nip = auth_svc.demo.CLIENT_ACTIVE
    if await approval_svc.demo.ensure_demo_active(approval, office, admin, active_nip, active_name):
        log.info("demo: integration with %s recorded as active", active_name)
    client_name, client_nip = auth_svc.demo.CLIENT_PENDING
    if await approval_svc.demo.ensure_demo_request(approval, office, admin, client_nip, client_name):
        log.info("demo: consent request sent to %s for %s", approval_svc.demo.DEMO_CLIENT_EMAIL, client_name)


async def _demo_ksef(sim: Sim, gateway: Gateway, public_url: str) -> None:
    try:
        await ensure_demo_ksef(sim, gateway, public_url)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the KSeF demo data could not be set up (the platform runs without it)")


async def _demo_month(
    ksef: asyncio.Task[None],
    sim: Sim,
    gateway: Gateway,
    buffer: ServiceRuntime,
    approval: ServiceRuntime,
    data: auth_svc.demo.DemoData,
) -> None:
    """After the KSeF demo data: the active client's previous month decided and approved by its owner, and the
    late invoice fetched at once (as "fetch now" would) rather than at the next poll, 15 minutes on."""
    await ksef
    _name, nip = auth_svc.demo.CLIENT_ACTIVE
    owner = Principal(
        id=str(data.users[auth_svc.demo.CLIENT_OWNER]),
        ptype="user",
        org=data.client_ids[nip],
        org_kind="client",
        perms=frozenset({"buffer.read", "buffer.decide", "month.approve"}),
        nips=frozenset({nip}),
    )
    try:
        visible_at = await ensure_demo_month(sim, buffer, approval, owner)
        if visible_at is not None:
            await asyncio.sleep(max(0.0, (visible_at - sim.clock.now()).total_seconds()))
            await gateway.sync_service.fetch_now(nip, requested_by="demo")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the month demo (decisions, approval) could not be set up (the platform runs without it)")


async def _demo_sales(ksef: asyncio.Task[None], gateway: Gateway) -> None:
    """After the KSeF demo data (the token that may send): the active client's demo sales invoices queued."""
    await ksef
    name, nip = auth_svc.demo.CLIENT_ACTIVE
    try:
        await ksef_gateway.sales.demo.ensure_demo_sales(gateway.sales, nip, name, gateway.offline_certificates)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("the sales demo could not be set up (the platform runs without it)")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_embedded_app(
    data_dir: Path,
    *,
    public_url: str = "http://127.0.0.1:8000",
    demo: bool = True,
    demo_password: str = auth_svc.demo.DEMO_PASSWORD,
) -> FastAPI:
    """The platform to serve at ``public_url`` (the services call auth-svc there: it must be where it listens).

    ``demo``: the demo accounts (with ``demo_password``), the demo clients' invoices in the simulator and their KSeF
    tokens in the gateway; without it the platform starts empty.
    """
    public_url = public_url.rstrip("/")
    data_dir = data_dir.resolve()
    secure_data_dir(data_dir)
    bus = InProcessBus()
    wiring = AuthWiring.for_run(public_url)
    on_loopback = is_loopback(urlsplit(public_url).hostname or "")
    mail_catcher = EmbeddedMailCatcher() if on_loopback else None
    webhook_catcher = EmbeddedWebhookCatcher(public_url) if on_loopback else None
    apps = [
        (
            s,
            s.create_app(
                embedded_settings(s, data_dir, wiring, public_url, mail_catcher, webhook_catcher),
                bus=bus,
                migrate_on_start=True,
            ),
        )
        for s in SERVICES
    ]
    gateway_app = next(a for s, a in apps if s.name == ksef_gateway.main.DEFINITION.name)
    sim_settings = ksef_sim_settings(data_dir)
    ksef_sim_app = create_ksef_sim_app(sim_settings) if uses_ksef_sim(gateway_app.state.settings) else None
    operator_token_source = (
        "KSEF_SIM_OPERATOR_TOKEN" if sim_settings.operator_token is not None else token_file(sim_settings)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        configure_logging(os.environ.get("KSEF_HUB_LOG_LEVEL", "INFO"), json=False, force=True)
        async with AsyncExitStack() as stack:
            if mail_catcher is not None:
                # Before notify-svc, whose sender may find mail queued before a restart.
                mail_catcher.start()
                stack.callback(mail_catcher.stop)
            # The simulator first: it only opens its state file, and the services may call it as soon as they run.
            if ksef_sim_app is not None:
                await stack.enter_async_context(ksef_sim_app.router.lifespan_context(ksef_sim_app))
            for _service, sub_app in apps:
                await stack.enter_async_context(sub_app.router.lifespan_context(sub_app))
            _app.state.demo_ksef = None
            _app.state.demo_month = None
            _app.state.demo_sales = None
            if demo:
                # The demo accounts the README lists (idempotent: existing users keep their passwords).
                auth_app = next(a for s, a in apps if s is AUTH_SERVICE)
                _record_demo_password(data_dir, demo_password)
                demo_data = await auth_svc.demo.ensure_demo_data(auth_app.state.runtime, password=demo_password)
                approval_app = next(a for s, a in apps if s.name == approval_svc.main.DEFINITION.name)
                await _demo_integrations(approval_app.state.runtime, demo_data)
                if webhook_catcher is not None:
                    notify_app = next(a for s, a in apps if s.name == notify_svc.main.DEFINITION.name)
                    await webhook_catcher.ensure_demo_subscription(
                        notify_app.state.runtime, demo_data.office_id, str(demo_data.users[auth_svc.demo.OFFICE_ADMIN])
                    )
            if demo and ksef_sim_app is not None:
                # The demo clients' KSeF data: invoices in the simulator, their tokens in the gateway's vault. The
                # vault checks a token in KSeF over HTTP, i.e. through this server, which serves only once startup
                # is over: a background task, stopped first on shutdown.
                demo_ksef = asyncio.create_task(
                    _demo_ksef(ksef_sim_app.state.sim, Gateway.of(gateway_app.state.runtime), public_url),
                    name="ksef-demo-data",
                )
                stack.push_async_callback(_cancel, demo_ksef)
                _app.state.demo_ksef = demo_ksef  # tests wait for it
                buffer_app = next(a for s, a in apps if s.name == buffer_svc.main.DEFINITION.name)
                demo_month = asyncio.create_task(
                    _demo_month(
                        demo_ksef,
                        ksef_sim_app.state.sim,
                        Gateway.of(gateway_app.state.runtime),
                        buffer_app.state.runtime,
                        approval_app.state.runtime,
                        demo_data,
                    ),
                    name="month-demo",
                )
                stack.push_async_callback(_cancel, demo_month)
                _app.state.demo_month = demo_month
                demo_sales = asyncio.create_task(
                    _demo_sales(demo_ksef, Gateway.of(gateway_app.state.runtime)), name="sales-demo"
                )
                stack.push_async_callback(_cancel, demo_sales)
                _app.state.demo_sales = demo_sales
            # The files the services and the simulator have just created (SQLite files and their -wal/-shm, which
            # SQLite then creates with the database file's mode) whatever the umask of this process.
            secure_data_dir(data_dir)
            lines = [f"KSeF Hub (embedded) is up at {public_url} - data in {data_dir}"]
            lines.append(f"  {'web UI':<13} {public_url}/  (log in with a demo account listed there)")
            lines += [f"  {s.name:<13} {public_url}{s.prefix}  (ready: {public_url}{s.prefix}/readyz)" for s, _ in apps]
            lines.append(
                f"  {'metrics':<13} {public_url}<prefix>/metrics  (Prometheus; bearer token in "
                f"{data_dir / METRICS_TOKEN_FILE} unless <PREFIX>_TELEMETRY__METRICS_TOKEN is set)"
            )
            if ksef_sim_app is not None:
                lines.append(
                    f"  {'ksef-sim':<13} {public_url}{KSEF_SIM_PREFIX}/v2  (KSeF 2.0 simulator; operator API "
                    f"{public_url}{KSEF_SIM_PREFIX}/_sim with the token in {operator_token_source}, Latarnia "
                    f"{public_url}{KSEF_SIM_PREFIX}/status)"
                )
            if mail_catcher is not None:
                lines.append(
                    f"  {'mail':<13} {public_url}{MAIL_PATH}  (e-mail caught on 127.0.0.1:{mail_catcher.port})"
                )
            if webhook_catcher is not None and demo:
                lines.append(
                    f"  {'webhooks':<13} {public_url}{WEBHOOKS_PATH}  (the demo office's deliveries, verified)"
                )
            lines.append("  demo data: " + ("on (README, 'Demo accounts')" if demo else "off"))
            print("\n".join(lines), flush=True)
            yield

    root = FastAPI(title="KSeF Hub (embedded)", lifespan=lifespan)
    install_problem_handlers(root)

    install_web_ui(root, demo=demo, demo_password=demo_password)

    @root.get("/services", summary="What runs here", dependencies=[Depends(public("service directory; links only"))])
    async def index(request: Request) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        return {
            "product": "KSeF Hub",
            "mode": "embedded",
            "webUi": base + "/",
            "services": {s.name: {"url": base + s.prefix, "docs": f"{base}{s.prefix}/docs"} for s, _ in apps},
            **(
                {"ksefSimulator": {"url": f"{base}{KSEF_SIM_PREFIX}/v2", "docs": f"{base}{KSEF_SIM_PREFIX}/docs"}}
                if ksef_sim_app is not None
                else {}
            ),
        }

    @root.get("/healthz", dependencies=[Depends(public("liveness probe of the whole process"))])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if mail_catcher is not None:
        root.include_router(mail_catcher.router())  # before the /notify mount, which would take the path
    if webhook_catcher is not None:
        root.include_router(webhook_catcher.router())
    for service, sub_app in apps:
        root.mount(service.prefix, sub_app)
    if ksef_sim_app is not None:
        root.mount(KSEF_SIM_PREFIX, ksef_sim_app)
    return root
