"""The command every service installs: ``<service> serve`` and ``<service> migrate``; and the uvicorn options every
server of the platform shares (``uvicorn_config``)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from platform_common.migrations import downgrade, upgrade
from platform_common.runtime import ServiceDefinition
from platform_common.settings import ServiceSettings

if TYPE_CHECKING:
    import uvicorn


def parse_trusted_proxies(value: str) -> list[str]:
    """The comma-separated addresses and CIDRs of the proxies whose ``X-Forwarded-For``/``-Proto`` are believed.

    Refuses ``*`` and anything that is not an address or network: a wrong entry would let a caller choose the client
    address that the login throttle and the audit log record.
    """
    entries = [item.strip() for item in value.split(",") if item.strip()]
    for entry in entries:
        if entry == "*":
            raise ValueError("'*' would trust every caller's X-Forwarded-For: name the proxies' addresses or CIDRs")
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR") from None
    return entries


def uvicorn_config(app: Any, *, host: str, port: int, trusted_proxies: str = "", **options: Any) -> uvicorn.Config:
    """A ``uvicorn.Config`` that reads forwarded headers only from the listed proxies.

    uvicorn's own default believes ``X-Forwarded-For`` from 127.0.0.1 (or ``FORWARDED_ALLOW_IPS``): behind no proxy,
    any local process, and behind a same-host proxy anybody, would pick the address seen by the services.
    """
    import uvicorn

    proxies = parse_trusted_proxies(trusted_proxies)
    forwarded: dict[str, Any] = (
        {"proxy_headers": True, "forwarded_allow_ips": proxies} if proxies else {"proxy_headers": False}
    )
    return uvicorn.Config(app, host=host, port=port, **forwarded, **options)


STARTUP_FAILURE = 3  # uvicorn's own exit code when the server never started


def run_server(config: uvicorn.Config) -> None:
    """Serve until stopped, as ``uvicorn.run`` does: Ctrl-C is a clean stop, a failed startup exits 3."""
    import uvicorn

    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal after its graceful shutdown
        server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


def service_cli(
    definition: ServiceDefinition,
    load_settings: Callable[[], ServiceSettings],
    create_app: Callable[[], FastAPI],
    *,
    default_port: int,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=definition.name, description=definition.description)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API, consumers and outbox relay")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=default_port)
    serve.add_argument(
        "--fd",
        type=int,
        help="serve on this inherited listening socket instead of --host/--port (a supervisor binds it, so a restarted "
        "process takes over the same address and nothing else can take it meanwhile)",
    )
    serve.add_argument(
        "--trusted-proxies",
        help="comma-separated addresses/CIDRs of the proxies whose X-Forwarded-For is believed "
        "(default: the <PREFIX>TRUSTED_PROXIES setting; empty: none)",
    )
    migrate = sub.add_parser("migrate", help="upgrade the service's schema (a separate deploy step)")
    migrate.add_argument("--revision", default="head")
    down = sub.add_parser("downgrade", help="downgrade the service's schema")
    down.add_argument("--revision", required=True)
    args = parser.parse_args(argv)

    if args.command == "serve":
        trusted = args.trusted_proxies if args.trusted_proxies is not None else load_settings().trusted_proxies
        try:
            config = uvicorn_config(
                create_app,
                factory=True,
                host=args.host,
                port=args.port,
                fd=args.fd,
                trusted_proxies=trusted,
                log_config=None,
            )
        except ValueError as exc:
            parser.error(f"trusted proxies: {exc}")
        run_server(config)
        return
    url = load_settings().db.url.get_secret_value()
    if args.command == "migrate":
        upgrade(definition.migrations, url, definition.schema, args.revision)
    else:
        downgrade(definition.migrations, url, definition.schema, args.revision)
