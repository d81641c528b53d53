"""``ksef-hub run``: the embedded platform on one port. Ctrl-C stops it cleanly (exit code 0)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ksef-hub", description="KSeF Hub")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every service in one process (SQLite, in-process events)")
    run.add_argument("--host", default=os.environ.get("KSEF_HUB_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("KSEF_HUB_PORT", "8000")))
    run.add_argument("--data-dir", type=Path, default=Path(os.environ.get("KSEF_HUB_DATA_DIR", ".data/embedded")))
    args = parser.parse_args(argv)

    import uvicorn

    from ksef_hub.embedded import create_embedded_app, local_url

    # The services call auth-svc at this URL (JWKS, tokens, introspection): it must be the port served here.
    app = create_embedded_app(args.data_dir, public_url=local_url(args.host, args.port))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
