"""The distributed mode on one machine (``ksef-hub up`` / ``make up``): every service its own OS process over a
PostgreSQL and a Kafka broker of their own, as docker-compose.yml describes them.

- **Infrastructure**: an instance of ``scripts/infra.sh`` (its own directory and ports), so the broker and the
  database can be restarted (chaos) without touching the test suite's.
- **The services' settings come from docker-compose.yml**: each service's ``environment`` there, interpolated as
  compose does, with the in-network addresses (``auth-svc:8000``, ``postgres``, ``kafka:9092``, the web UI's
  public origin) replaced by this machine's. A setting compose lacks fails here first: this runner is what keeps
  the compose file true. The only departures are the loopback ones (notify-svc in development so that it may
  deliver webhooks to a plain-HTTP receiver on loopback; no OTLP collector).
- **Processes**: ``<service> migrate`` once per service, then ``<service> serve --fd N`` per replica on a socket
  the supervisor bound (a process killed and restarted takes over the same address, and nothing else can take it
  in between); two replicas of the gateway and of buffer-svc. A process that dies is started again, as
  ``restart: unless-stopped`` and Kubernetes would.
- **The front** (one port): the web UI, the five API prefixes proxied round-robin over the replicas (a replica
  that refuses the connection is skipped, as a Service skips an unready pod), the simulator under ``/ksef-sim``,
  the SMTP catcher's mail at ``/notify/dev/mail``, a webhook receiver at ``/dev/webhooks/{name}`` and the
  processes at ``/_up/processes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import signal
import socket
import sys
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from ksef_hub.embedded import SERVICES
from ksef_hub.mail_catcher import EmbeddedMailCatcher
from ksef_hub.web_ui import install_web_ui
from platform_common.auth import public
from platform_common.problems import Problem, install_problem_handlers, problem_response

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
COMPOSE_FILE = REPO / "docker-compose.yml"
INFRA_SCRIPT = REPO / "scripts" / "infra.sh"
# Processes per service; the rest run one. The gateway's replicas split the client contexts by lease
# (ksef_gateway.ownership), buffer-svc's share the Kafka partitions of their consumer groups.
REPLICAS = {"ksef-gateway": 2, "buffer-svc": 2}
PREFIXES = {s.name: s.prefix.strip("/") for s in SERVICES}
ENV_PREFIXES = {s.name: str(s.settings_cls.model_config.get("env_prefix", "")) for s in SERVICES}
# The largest request body a service accepts (a sales invoice's XML) plus headroom; the services bound their own.
MAX_PROXIED_BODY = 16 * 1024 * 1024
WEBHOOKS_PATH = "/dev/webhooks"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


@dataclass(frozen=True)
class InfraInstance:
    """One instance of scripts/infra.sh: a directory of its own and three ports."""

    directory: Path
    pg_port: int
    kafka_port: int
    kafka_controller_port: int

    def env(self) -> dict[str, str]:
        default_libs = REPO / ".cache" / "infra" / "kafka" / "libs"
        env = {
            "KSEF_HUB_INFRA_DIR": str(self.directory),
            "KSEF_HUB_PG_PORT": str(self.pg_port),
            "KSEF_HUB_KAFKA_PORT": str(self.kafka_port),
            "KSEF_HUB_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
        }
        if (default_libs / ".stamp").exists() and "KSEF_HUB_KAFKA_LIBS" not in os.environ:
            env["KSEF_HUB_KAFKA_LIBS"] = str(default_libs)  # the default instance's jars: no second Maven run
        return env

    @property
    def db_url(self) -> str:
        return f"postgresql+asyncpg://ksefhub:ksefhub@127.0.0.1:{self.pg_port}/ksefhub"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    async def run(self, *commands: str) -> None:
        for command in commands:
            process = await asyncio.create_subprocess_exec(
                "bash",
                str(INFRA_SCRIPT),
                command,
                env=os.environ | self.env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"scripts/infra.sh {command} failed:\n{output.decode(errors='replace')[-3000:]}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` (what docker-compose.yml uses)."""
    return _INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def compose_environment(service: str, env: Mapping[str, str], compose_file: Path = COMPOSE_FILE) -> dict[str, str]:
    services = yaml.safe_load(compose_file.read_text())["services"]
    raw = services[service].get("environment") or {}
    return {str(k): interpolate(str(v), env) for k, v in raw.items()}


@dataclass
class Addresses:
    front: str
    auth: str
    sim: str
    smtp_port: int
    infra: InfraInstance


def local_environment(service: str, compose_env: Mapping[str, str], at: Addresses) -> dict[str, str]:
    """Compose's environment of ``service`` with this machine's addresses in place of the compose network's."""
    prefix = ENV_PREFIXES[service]
    rewrites = {
        "http://auth-svc:8000": at.auth,
        "http://ksef-gateway:8000": f"{at.front}/gateway",
        "http://ksef-sim:8090": at.sim,
        "http://127.0.0.1:8080": at.front,  # compose's public origin (the web-ui container)
    }
    env: dict[str, str] = {}
    for key, value in compose_env.items():
        if key.startswith("OTEL_EXPORTER_OTLP_"):
            continue  # no collector here
        for old, new in rewrites.items():
            value = value.replace(old, new)
        env[key] = value
    env[f"{prefix}DB__URL"] = at.infra.db_url
    env[f"{prefix}KAFKA__BOOTSTRAP_SERVERS"] = at.infra.kafka_bootstrap
    env[f"{prefix}TELEMETRY__ENABLED"] = "false"
    if service == "notify-svc":
        env["NOTIFY_SMTP__HOST"] = "127.0.0.1"
        env["NOTIFY_SMTP__PORT"] = str(at.smtp_port)
        # Production delivers webhooks over https to public addresses only; the receiver here is plain HTTP on
        # loopback, which development allows when the network is listed.
        env["NOTIFY_ENVIRONMENT"] = "development"
        env["NOTIFY_WEBHOOKS__REQUIRE_HTTPS"] = "false"
        env["NOTIFY_WEBHOOKS__ALLOWED_NETWORKS"] = '["127.0.0.0/8"]'
    return env


def listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def _command(name: str) -> str:
    """A console script of this environment (the services', the simulator's)."""
    return str(Path(sys.executable).parent / name)


@dataclass
class Process:
    name: str  # e.g. ksef-gateway-2
    service: str  # e.g. ksef-gateway
    argv: list[str]
    env: dict[str, str]
    sock: socket.socket
    health_path: str = "/readyz"
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: datetime | None = None
    exits: deque[int] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None


class StartupFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Bootstrap:
    """``auth-svc bootstrap``'s first operator and office (its administrator signs in with ``password``)."""

    operator_email: str
    office_name: str
    office_nip: str
    admin_email: str
    password: str


class Supervisor:
    """Starts, watches and stops the processes of one distributed platform."""

    def __init__(
        self,
        state_dir: Path,
        infra: InfraInstance,
        *,
        front_port: int = 0,
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
        replicas: Mapping[str, int] | None = None,
        bootstrap: Bootstrap | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.infra = infra
        self.front_sock = listening_socket(front_port)
        self.front_url = f"http://127.0.0.1:{self.front_sock.getsockname()[1]}"
        self.extra_env = extra_env or {}
        self.replicas = dict(REPLICAS if replicas is None else replicas)
        self.mail = EmbeddedMailCatcher()
        self.webhooks: deque[dict[str, Any]] = deque(maxlen=20_000)
        self.processes: dict[str, Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    # --- the topology ---------------------------------------------------------------------------------------------

    def _plan(self) -> list[Process]:
        sim_sock = listening_socket()
        sim_url = f"http://127.0.0.1:{sim_sock.getsockname()[1]}"
        auth_sock = listening_socket()
        at = Addresses(
            front=self.front_url,
            auth=f"http://127.0.0.1:{auth_sock.getsockname()[1]}",
            sim=sim_url,
            smtp_port=self.mail.port,
            infra=self.infra,
        )
        sim_db = self.state_dir / "ksef-sim.sqlite3"
        plan = [
            Process(
                "ksef-sim",
                "ksef-sim",
                [_command("ksef-sim"), "--fd", str(sim_sock.fileno()), "--db", str(sim_db)],
                {"KSEF_SIM_OPERATOR_TOKEN_FILE": str(self.state_dir / "ksef-sim-operator.token")}
                | dict(self.extra_env.get("ksef-sim", {})),
                sim_sock,
                health_path="/healthz",
            )
        ]
        for service in PREFIXES:
            env = local_environment(service, compose_environment(service, os.environ), at)
            env |= dict(self.extra_env.get(service, {}))
            count = self.replicas.get(service, 1)
            for n in range(1, count + 1):
                sock = auth_sock if service == "auth-svc" else listening_socket()
                name = service if count == 1 else f"{service}-{n}"
                replica_env = dict(env)
                if service == "ksef-gateway":
                    replica_env["GATEWAY_KSEF__REPLICA_ID"] = name  # context leases and KSeF's User-Agent
                plan.append(
                    Process(name, service, [_command(service), "serve", "--fd", str(sock.fileno())], replica_env, sock)
                )
        return plan

    def sim_operator_token(self) -> str:
        return (self.state_dir / "ksef-sim-operator.token").read_text().strip()

    # --- life cycle -----------------------------------------------------------------------------------------------

    async def start(self, *, timeout: float = 180.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        await self.infra.run("up")
        self.mail.start()
        plan = self._plan()
        self.processes = {p.name: p for p in plan}
        for service in PREFIXES:  # the one-shot migrate step, as compose's <service>-migrate and the k8s Jobs
            first = next(p for p in plan if p.service == service)
            await self._one_shot(first, "migrate")
        if self.bootstrap is not None:
            auth = self.processes["auth-svc"]
            b = self.bootstrap
            await self._one_shot(
                auth,
                "bootstrap",
                [
                    "--operator-email",
                    b.operator_email,
                    "--office-name",
                    b.office_name,
                    "--office-nip",
                    b.office_nip,
                    "--admin-email",
                    b.admin_email,
                ],
                {"AUTH_BOOTSTRAP_OPERATOR_PASSWORD": b.password, "AUTH_BOOTSTRAP_ADMIN_PASSWORD": b.password},
            )
        for proc in plan:
            await self._spawn(proc)
            self._watchers.append(asyncio.create_task(self._watch(proc), name=f"watch {proc.name}"))
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(self.ready(p) for p in plan))
        self._write_state()

    async def _one_shot(
        self, proc: Process, command: str, args: list[str] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        """``<service> migrate`` (or ``bootstrap``): a step of its own that must succeed before the service serves."""
        name = f"{proc.service}-{command}"
        with (self.logs / f"{name}.log").open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                _command(proc.service),
                command,
                *(args or []),
                env=self._env(proc) | dict(env or {}),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
            if await process.wait() != 0:
                raise StartupFailed(f"{name} failed: {self._tail(name)}")

    def _env(self, proc: Process) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not re.match(r"^(AUTH|GATEWAY|BUFFER|APPROVAL|NOTIFY)_", k)}
        return keep | proc.env

    async def _spawn(self, proc: Process) -> None:
        out = (self.logs / f"{proc.name}.log").open("ab")
        try:
            proc.process = await asyncio.create_subprocess_exec(
                *proc.argv,
                env=self._env(proc),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(proc.sock.fileno(),),
                start_new_session=True,  # a Ctrl-C at the terminal reaches the supervisor, which stops them in order
            )
        finally:
            out.close()
        proc.started_at = datetime.now(UTC)

    async def _watch(self, proc: Process) -> None:
        """Start a process that died again (after a short pause, longer while it keeps dying at once)."""
        failures_in_a_row = 0
        while not self._stopping:
            assert proc.process is not None
            code = await proc.process.wait()
            if self._stopping:
                return
            proc.exits.append(code)
            ran = (datetime.now(UTC) - proc.started_at).total_seconds() if proc.started_at else 0.0
            failures_in_a_row = 0 if ran > 30 else failures_in_a_row + 1
            log.warning("%s exited with %s after %.1fs; starting it again", proc.name, code, ran)
            await asyncio.sleep(min(0.1 * 2**failures_in_a_row, 5.0))
            if self._stopping:
                return
            proc.restarts += 1
            await self._spawn(proc)

    async def ready(self, proc: Process, *, timeout: float = 180.0) -> None:
        """Until the process answers its readiness probe on its own socket."""
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client, asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(proc.url + proc.health_path)).status_code == 200:
                        return
                if proc.process is not None and proc.process.returncode is not None and proc.restarts > 5:
                    raise StartupFailed(f"{proc.name} keeps exiting: {self._tail(proc.name)}")
                await asyncio.sleep(0.2)

    async def all_ready(self, timeout: float = 180.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(self.ready(p) for p in self.processes.values()))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.processes[name]
        pid = proc.pid
        if pid is None:
            raise ProcessLookupError(name)
        os.kill(pid, sig)
        return pid

    async def stop(self) -> None:
        self._stopping = True
        running = [p for p in self.processes.values() if p.pid is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid or 0, signal.SIGTERM)
        for proc in running:
            assert proc.process is not None
            try:
                await asyncio.wait_for(proc.process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.kill()
                await proc.process.wait()
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for proc in self.processes.values():
            proc.sock.close()
        self.mail.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "state.json").unlink()

    def _tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "service": p.service,
                "pid": p.pid,
                "url": p.url,
                "restarts": p.restarts,
                "exit_codes": list(p.exits),
                "log": str(self.logs / f"{p.name}.log"),
            }
            for p in self.processes.values()
        ]

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "front": self.front_url, "processes": self.describe()}
        path = self.state_dir / "state.json"
        path.write_text(json.dumps(state, indent=2))

    # --- the front ------------------------------------------------------------------------------------------------

    def front_app(self) -> FastAPI:
        app = FastAPI(title="KSeF Hub (distributed, local)", docs_url=None, redoc_url=None, openapi_url=None)
        install_problem_handlers(app)  # what it refuses (413, an unknown prefix) as problem documents, as the services
        # Idle connections dropped well before uvicorn's own 5 s keep-alive: a request sent on a connection the
        # service is closing at that moment would be answered "disconnected" (502) with nothing to retry safely.
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(120, connect=5),
            limits=httpx.Limits(keepalive_expiry=2.0),
            trust_env=False,
        )
        app.router.on_shutdown.append(client.aclose)
        dev_only = [Depends(public("the local distributed runner's development endpoints, on loopback only"))]
        app.include_router(self.mail.router())
        router = APIRouter()

        @router.get("/_up/processes", dependencies=dev_only)
        async def processes() -> list[dict[str, Any]]:
            return self.describe()

        @router.post(f"{WEBHOOKS_PATH}/{{name}}", status_code=204, dependencies=dev_only)
        async def receive(name: str, request: Request) -> None:
            body = await request.body()
            if len(body) > 256 * 1024:
                raise Problem(413, "Payload too large", "a webhook here carries at most 256 KiB")
            self.webhooks.append(
                {
                    "receiver": name,
                    "received_at": datetime.now(UTC).isoformat(),
                    "headers": {k: v for k, v in request.headers.items() if k.startswith("webhook-")},
                    "body": body.decode(),
                }
            )

        @router.get(WEBHOOKS_PATH, dependencies=dev_only)
        async def received() -> list[dict[str, Any]]:
            return list(self.webhooks)

        app.include_router(router)
        install_web_ui(app, demo=False, demo_password="")
        routes: dict[str, list[Process]] = {}
        for proc in self.processes.values():
            prefix = "ksef-sim" if proc.service == "ksef-sim" else PREFIXES[proc.service]
            routes.setdefault(prefix, []).append(proc)
        turns = {prefix: itertools.count() for prefix in routes}

        @app.api_route(
            "/{prefix}/{path:path}",
            methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            dependencies=[Depends(public("a proxy: each service authorises its own requests"))],
        )
        async def proxy(prefix: str, path: str, request: Request) -> Response:
            replicas = routes.get(prefix)
            if not replicas:
                raise Problem(404, "Not Found", f"no service under /{prefix}")
            declared = int(request.headers.get("content-length") or 0)
            if declared > MAX_PROXIED_BODY:
                raise Problem(413, "Payload too large", f"at most {MAX_PROXIED_BODY} bytes")
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_PROXIED_BODY:
                    raise Problem(413, "Payload too large", f"at most {MAX_PROXIED_BODY} bytes")
            headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
            start = next(turns[prefix])
            for i in range(len(replicas)):
                target = replicas[(start + i) % len(replicas)]
                outgoing = client.build_request(
                    request.method,
                    f"{target.url}/{path}",
                    params=request.url.query,
                    headers=headers,
                    content=bytes(body),
                )
                try:
                    answer = await client.send(outgoing, stream=True)
                except httpx.ConnectError:
                    continue  # refused: this replica is down (killed, restarting); the request never reached it
                except httpx.TransportError as exc:
                    return problem_response(502, detail=f"{target.name}: {exc}")
                out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
                return StreamingResponse(
                    answer.aiter_raw(),
                    status_code=answer.status_code,
                    headers=out_headers,
                    background=BackgroundTask(answer.aclose),
                )
            return problem_response(
                503, detail=f"no replica of /{prefix} accepts connections right now", headers={"Retry-After": "1"}
            )

        return app

    def urls(self) -> list[tuple[str, str]]:
        rows = [("web UI and APIs", f"{self.front_url}/  (/auth /gateway /buffer /approval /notify)")]
        rows += [(p.name, p.url) for p in self.processes.values()]
        rows += [
            ("mail caught", f"{self.front_url}/notify/dev/mail"),
            ("webhook receiver", f"{self.front_url}{WEBHOOKS_PATH}/<name>  (received: GET {WEBHOOKS_PATH})"),
            ("processes", f"{self.front_url}/_up/processes"),
            ("PostgreSQL", self.infra.db_url.replace(":ksefhub@", ":***@")),
            ("Kafka", self.infra.kafka_bootstrap),
            ("logs", str(self.logs)),
        ]
        return rows


# `make up`'s instance: beside the test suite's (scripts/infra.sh's default ports), never in its way.
UP_INFRA = InfraInstance(REPO / ".cache" / "infra-up", pg_port=56432, kafka_port=59192, kafka_controller_port=59193)
UP_STATE_DIR = REPO / ".data" / "distributed"


async def serve_foreground(state_dir: Path, front_port: int, infra: InfraInstance = UP_INFRA) -> None:
    """``ksef-hub up --foreground``: start everything, serve the front until SIGINT/SIGTERM, stop everything."""
    import auth_svc.demo

    name, nip = auth_svc.demo.OFFICE
    bootstrap = Bootstrap(auth_svc.demo.OPERATOR, name, nip, auth_svc.demo.OFFICE_ADMIN, auth_svc.demo.DEMO_PASSWORD)
    supervisor = Supervisor(state_dir, infra, front_port=front_port, bootstrap=bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await supervisor.start()
        server = _FrontServer(uvicorn.Config(supervisor.front_app(), log_level="warning", access_log=False))
        serving = asyncio.create_task(server.serve(sockets=[supervisor.front_sock]))
        width = max(len(name) for name, _ in supervisor.urls())
        print("KSeF Hub, distributed: every service its own process", flush=True)
        for name, url in supervisor.urls():
            print(f"  {name:<{width}}  {url}", flush=True)
        print(
            f"  sign in as {bootstrap.admin_email} (the office) or {bootstrap.operator_email} (operator), password "
            f"{bootstrap.password}",
            flush=True,
        )
        print("Stop with `make down` (or Ctrl-C here).", flush=True)
        (state_dir / "ready").write_text(supervisor.front_url)
        await stop.wait()
        server.should_exit = True
        await serving
    finally:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / "ready").unlink()
        await supervisor.stop()


class _FrontServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the supervisor's handlers stop it, then everything else in order


def up_detached(state_dir: Path, front_port: int, timeout: float = 300.0) -> int:
    """``ksef-hub up``: the foreground supervisor in the background (its output in state_dir/up.log); returns once
    it is ready, printing what it printed, or its log when it failed."""
    import subprocess
    import time

    state_dir.mkdir(parents=True, exist_ok=True)
    pid_file = state_dir / "up.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        print(f"already up (pid {pid_file.read_text().strip()}): {state_dir / 'up.log'}")
        return 0
    (state_dir / "ready").unlink(missing_ok=True)
    log_path = state_dir / "up.log"
    with log_path.open("wb") as out:
        child = subprocess.Popen(  # noqa: S603  # our own console script
            [_command("ksef-hub"), "up", "--foreground", "--port", str(front_port), "--state-dir", str(state_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(child.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state_dir / "ready").exists():
            print(log_path.read_text(errors="replace"), end="")
            return 0
        if child.poll() is not None:
            break
        time.sleep(0.3)
    print(log_path.read_text(errors="replace")[-6000:], file=sys.stderr)
    print(f"ksef-hub up: not ready (log: {log_path})", file=sys.stderr)
    if child.poll() is None:
        child.terminate()
    return 1


def down(state_dir: Path, infra: InfraInstance = UP_INFRA, timeout: float = 60.0) -> int:
    """``ksef-hub down``: stop the supervisor (it stops its processes), then the instance's broker and database."""
    import time

    pid_file = state_dir / "up.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        pid_file.unlink()
    asyncio.run(infra.run("down"))
    print("KSeF Hub (distributed) stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours (the detached parent exited long ago, so normally reaped by init) counts as gone.
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True
