from __future__ import annotations

import json
import logging

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel

from platform_common.logging import configure_logging
from platform_common.problems import Problem, install_problem_handlers


class Body(BaseModel):
    nip: str
    token: str


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/credentials")
    async def create(body: Body) -> dict[str, str]:
        if body.nip == "0000000000":
            raise Problem(
                409,
                "Credential exists",
                "NIP 0000000000 already has a credential",
                code="duplicate",
                nip=body.nip,
            )
        raise RuntimeError("database exploded with secret s3cr3t")

    return app


async def _post(json_body: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post("/credentials", json=json_body)


class TestProblemDetails:
    async def test_validation_errors_name_fields_but_never_echo_values(self) -> None:
        r = await _post({"nip": 5260250274})
        body = r.json()
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        assert body["type"].endswith("/validation-error")
        assert {tuple(e["location"]) for e in body["errors"]} == {("body", "nip"), ("body", "token")}
        assert "5260250274" not in r.text

    async def test_domain_problem_carries_status_title_detail_and_extensions(self) -> None:
        r = await _post({"nip": "0000000000", "token": "x"})
        assert r.status_code == 409
        assert r.json() == {
            "type": "https://ksef-hub.dev/problems/duplicate",
            "title": "Credential exists",
            "status": 409,
            "detail": "NIP 0000000000 already has a credential",
            "instance": "/credentials",
            "nip": "0000000000",
        }

    async def test_unexpected_errors_are_a_bare_500_without_internals(self) -> None:
        r = await _post({"nip": "5260250274", "token": "x"})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert "s3cr3t" not in r.text and "exploded" not in r.text


def test_json_logs_carry_the_current_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True, force=True)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("ksef_hub.test").info("fetched %d invoices", 3)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "fetched 3 invoices"
    assert record["level"] == "info"
    assert record["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert record["span_id"] == format(span.get_span_context().span_id, "016x")
