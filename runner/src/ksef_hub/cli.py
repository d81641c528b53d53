"""``ksef-hub run``: the embedded platform on one port. Ctrl-C stops it cleanly (exit code 0).
``ksef-hub up`` / ``down``: the distributed platform on this machine (``ksef_hub.distributed``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from platform_common.cli import parse_trusted_proxies, run_server, uvicorn_config

FALSE_WORDS = {"0", "false", "no", "off"}
TRUE_WORDS = {"1", "true", "yes", "on"}


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    word = value.strip().lower()
    if word not in FALSE_WORDS | TRUE_WORDS:
        raise SystemExit(f"ksef-hub: {name}={value!r} is not a yes/no value (1/0, true/false, yes/no, on/off)")
    return word in TRUE_WORDS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ksef-hub", description="KSeF Hub")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every service in one process (SQLite, in-process events)")
    run.add_argument("--host", default=os.environ.get("KSEF_HUB_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("KSEF_HUB_PORT", "8000")))
    run.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KSEF_HUB_DATA_DIR", ".data/embedded")))
    run.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("KSEF_HUB_DEMO", default=True),
        help="demo accounts, demo clients' invoices and KSeF tokens (default on; env KSEF_HUB_DEMO)",
    )
    run.add_argument(
        "--trusted-proxies",
        default=os.environ.get("KSEF_HUB_TRUSTED_PROXIES", ""),
        help="comma-separated addresses/CIDRs of the proxies whose X-Forwarded-For is believed "
        "(env KSEF_HUB_TRUSTED_PROXIES; default none)",
    )
    up = sub.add_parser("up", help="start every service as its own process over PostgreSQL and Kafka (make up)")
    up.add_argument("--port", type=int, default=int(os.environ.get("KSEF_HUB_UP_PORT", "8080")))
    up.add_argument("--state-dir", type=Path, default=None)
    up.add_argument("--foreground", action="store_true", help="stay in the foreground (Ctrl-C stops everything)")
    down = sub.add_parser("down", help="stop what `ksef-hub up` started, its PostgreSQL and Kafka included")
    down.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.command in ("up", "down"):
        import asyncio

        from ksef_hub import distributed

        state_dir = (args.state_dir or distributed.UP_STATE_DIR).resolve()
        if args.command == "down":
            raise SystemExit(distributed.down(state_dir))
        if args.foreground:
            asyncio.run(distributed.serve_foreground(state_dir, args.port))
            return
        raise SystemExit(distributed.up_detached(state_dir, args.port))

    import auth_svc.demo
    from ksef_hub.embedded import DemoExposed, check_demo_exposure, create_embedded_app, local_url

    # Before anything is created: every database, its -wal/-shm and the simulator's token file are the owner's only.
    os.umask(0o077)
    # A password of the operator's own, from the environment only (a command-line argument is visible to others).
    demo_password = os.environ.get("KSEF_HUB_DEMO_PASSWORD") or auth_svc.demo.DEMO_PASSWORD
    data_dir = args.data_dir.resolve()
    try:
        check_demo_exposure(args.host, data_dir, demo=args.demo, demo_password=demo_password)
        parse_trusted_proxies(args.trusted_proxies)
    except (DemoExposed, ValueError) as exc:
        print(f"ksef-hub: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # The services call auth-svc at this URL (JWKS, tokens, introspection): it must be the port served here.
    app = create_embedded_app(
        data_dir, public_url=local_url(args.host, args.port), demo=args.demo, demo_password=demo_password
    )
    config = uvicorn_config(
        app,
        host=args.host,
        port=args.port,
        trusted_proxies=args.trusted_proxies,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    run_server(config)


if __name__ == "__main__":
    main()
