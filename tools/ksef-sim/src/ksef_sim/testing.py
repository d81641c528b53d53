"""Test helpers: the simulator as a REAL HTTP server on loopback, for clients that cannot take an ASGI transport
(independent SDKs, ``requests``-based tools, benchmarks).

``serve(settings)`` runs uvicorn in a background thread on a socket bound before the settings are built, so
``public_base_url`` can name the port without a race. ``resolve_to_loopback(host)`` makes one host name resolve to
127.0.0.1 inside this process only: pre-signed URLs then carry a name that strict clients accept (they refuse
``localhost`` and loopback literals as a server-side request forgery guard) while the traffic stays on loopback.

The operator API (``/_sim``) wants the simulator's operator token: ``operator_headers(app)`` (or
``RunningSim.operator_headers``) gives the header. A server from ``serve`` stands in for an operator on its own
loopback port: by default it adds the token to ``/_sim`` requests that come without an ``Authorization`` header
(``operator_auto_auth=False`` serves the API exactly as a stranger sees it).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from ksef_sim.main import create_app
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim

SIM_HOST_NAME = "ksef-sim.test"  # RFC 2606 reserves .test: it never resolves on a real network
OPERATOR_PREFIX = "/_sim"


def operator_token(app: FastAPI) -> str:
    """The operator token of a simulator app whose lifespan runs (it is resolved at startup)."""
    token: SecretStr = app.state.operator_token
    return token.get_secret_value()


def operator_headers(app: FastAPI) -> dict[str, str]:
    return {"Authorization": f"Bearer {operator_token(app)}"}


def with_operator_token(app: FastAPI) -> ASGIApp:
    """``app`` as seen by an operator: ``/_sim`` requests without an ``Authorization`` header get the token."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and str(scope["path"]).startswith(OPERATOR_PREFIX + "/")
            and not any(name == b"authorization" for name, _ in scope["headers"])
        ):
            header = (b"authorization", f"Bearer {operator_token(app)}".encode())
            scope = {**scope, "headers": [*scope["headers"], header]}
        await app(scope, receive, send)

    return asgi


@dataclass(frozen=True)
class RunningSim:
    """A simulator serving HTTP on ``127.0.0.1:port``; ``sim`` is its live state (same process, another thread)."""

    app: FastAPI
    port: int

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.root_url}/v2"

    @property
    def sim(self) -> Sim:
        state: Sim = self.app.state.sim
        return state

    @property
    def operator_token(self) -> str:
        return operator_token(self.app)

    @property
    def operator_headers(self) -> dict[str, str]:
        return operator_headers(self.app)


def bind_loopback() -> socket.socket:
    """A listening-ready TCP socket on 127.0.0.1 with a free port chosen by the kernel."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(
    settings_for_port: Callable[[int], SimSettings],
    *,
    startup_timeout_s: float = 15.0,
    operator_auto_auth: bool = True,
) -> Iterator[RunningSim]:
    """Serve a fresh simulator over HTTP until the block exits (lifespan included: the store opens and closes).

    ``settings_for_port(port)`` builds the settings once the port is known (e.g. for ``public_base_url``).
    ``operator_auto_auth``: ``/_sim`` requests without credentials are the test's own (see the module docstring).
    """
    sock = bind_loopback()
    port = int(sock.getsockname()[1])
    app = create_app(settings_for_port(port))
    served: ASGIApp = with_operator_token(app) if operator_auto_auth else app
    config = uvicorn.Config(served, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only on the main thread; in a worker thread it leaves them alone.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"ksef-sim:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the simulator's server thread exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator did not start within {startup_timeout_s} s")
            time.sleep(0.01)
        yield RunningSim(app=app, port=port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def resolve_to_loopback(host_name: str = SIM_HOST_NAME) -> Iterator[None]:
    """Within the block, ``socket.getaddrinfo(host_name, ...)`` answers 127.0.0.1; every other name is untouched.

    Process-wide while active (the resolver is global), so use it around one test at a time.
    """
    original = socket.getaddrinfo
    wanted = host_name.lower().rstrip(".")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if isinstance(host, str) and host.lower().rstrip(".") == wanted:
            host = "127.0.0.1"
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original
