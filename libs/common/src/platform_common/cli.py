"""The command every service installs: ``<service> serve`` and ``<service> migrate``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from fastapi import FastAPI

from platform_common.migrations import downgrade, upgrade
from platform_common.runtime import ServiceDefinition
from platform_common.settings import ServiceSettings


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
    migrate = sub.add_parser("migrate", help="upgrade the service's schema (a separate deploy step)")
    migrate.add_argument("--revision", default="head")
    down = sub.add_parser("downgrade", help="downgrade the service's schema")
    down.add_argument("--revision", required=True)
    args = parser.parse_args(argv)

    if args.command == "serve":
        import uvicorn

        uvicorn.run(create_app, factory=True, host=args.host, port=args.port, log_config=None)
        return
    url = load_settings().db.url.get_secret_value()
    if args.command == "migrate":
        upgrade(definition.migrations, url, definition.schema, args.revision)
    else:
        downgrade(definition.migrations, url, definition.schema, args.revision)
