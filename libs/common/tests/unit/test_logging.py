"""The platform log handler: secrets in URLs and headers are redacted, and the handler survives stream swaps."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from fastapi import FastAPI

from platform_common.logging import configure_logging, redact
from platform_common.testing.auth import serve_config_on_loopback


@contextlib.asynccontextmanager
async def serve_with_access_log(app: FastAPI) -> AsyncIterator[str]:
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=True)
    # After uvicorn's Config, which sets its loggers up: the platform's configuration is the one that runs.
    configure_logging("INFO", json=True, force=True)
    async with serve_config_on_loopback(config) as base_url:
        yield base_url


def _lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


async def test_presigned_and_oauth_query_values_are_redacted_in_the_access_log_and_httpx_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = FastAPI()

    @app.get("/storage/{blob:path}")
    async def blob(blob: str) -> dict[str, str]:
        return {"blob": blob}

    async with serve_with_access_log(app) as base_url, httpx.AsyncClient() as client:
        url = f"{base_url}/storage/batch/p1?se=2026-01-01&sig=S3CRETSIG&Code=0AUTHC0DE&token=T0KEN"
        assert (await client.get(url)).status_code == 200
    err = capsys.readouterr().err
    for secret in ("S3CRETSIG", "0AUTHC0DE", "T0KEN"):
        assert secret not in err
    records = _lines(err)
    access = [r["event"] for r in records if r.get("logger") == "uvicorn.access"]
    client_log = [r["event"] for r in records if r.get("logger") == "httpx"]
    assert any("/storage/batch/p1?se=2026-01-01&sig=***&Code=***&token=***" in line for line in access), access
    assert any("/storage/batch/p1?se=2026-01-01&sig=***&Code=***&token=***" in line for line in client_log), client_log


def test_bound_values_tracebacks_and_headers_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True, force=True)
    structlog.get_logger("ksef_hub.test").info("fetched", url="https://ksef/part?sig=B0UNDSIG")
    request = httpx.Request("GET", "https://ksef/part?sig=TRACESIG")
    try:
        httpx.Response(404, request=request).raise_for_status()
    except httpx.HTTPStatusError:
        logging.getLogger("ksef_hub.test").exception("download failed")
    logging.getLogger("ksef_hub.test").warning("sent %s", {"Authorization": "Bearer HEADERT0KEN"})
    err = capsys.readouterr().err
    for secret in ("B0UNDSIG", "TRACESIG", "HEADERT0KEN"):
        assert secret not in err
    assert "sig=***" in err and "Bearer ***" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /x?se=1&sig=a%2Bb%3D HTTP/1.1", "GET /x?se=1&sig=*** HTTP/1.1"),
        (
            "?access_token=a&refresh_token=b&api_key=c&password=d",
            "?access_token=***&refresh_token=***&api_key=***&password=***",
        ),
        ("?client_secret=s&signature=t&SECRET=u&key=v", "?client_secret=***&signature=***&SECRET=***&key=***"),
        # Names that merely end like a secret one stay, and so does everything that is not a value.
        ("?postcode=00-950&monkey=1&token_type=bearer", "?postcode=00-950&monkey=1&token_type=bearer"),
        ('{"event": "got http://h/?code=abc\\" done"}', '{"event": "got http://h/?code=***\\" done"}'),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        (
            "[(b'authorization', b'Bearer eyJ.x.y'), (b'x-api-key', b'kh_1')]",
            "[(b'authorization', b'Bearer ***'), (b'x-api-key', b'***')]",
        ),
    ],
)
def test_redaction(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_record_from_a_thread_after_the_configured_stream_closed_is_written_not_a_logging_error(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Logging configured while a test had swapped sys.stderr (as pytest does per test), the stream closed since.
    swapped = io.StringIO()
    with contextlib.redirect_stderr(swapped):
        configure_logging("INFO", json=True, force=True)
    swapped.close()

    def worker() -> None:
        logging.getLogger("aiosqlite").warning("worker thread still logging")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    err = capfd.readouterr().err
    assert "Logging error" not in err
    assert "worker thread still logging" in err


def test_url_loggers_redact_at_the_source_for_every_handler() -> None:
    """A handler attached before the platform's (a test's capture, an APM agent) sees the redacted record too."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    early = Collect()
    logging.getLogger().addHandler(early)
    try:
        configure_logging("INFO", json=True, force=True)
        logging.getLogger("httpx").info("HTTP Request: %s %s", "GET", "https://hub.example/consent?token=s3cr3t-value")
        logging.getLogger("uvicorn.access").info('%s - "%s %s"', "127.0.0.1", "GET", "/consent?token=s3cr3t-value")
    finally:
        logging.getLogger().removeHandler(early)
    assert len(seen) == 2 and not any("s3cr3t-value" in line for line in seen), seen
