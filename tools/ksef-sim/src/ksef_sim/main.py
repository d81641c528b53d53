from __future__ import annotations

import argparse

from fastapi import FastAPI

from platform_common.problems import install_problem_handlers


def create_app() -> FastAPI:
    app = FastAPI(title="KSeF 2.0 simulator")
    install_problem_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run() -> None:
    parser = argparse.ArgumentParser(prog="ksef-sim")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(create_app, factory=True, host=args.host, port=args.port)
