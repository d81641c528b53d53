"""``ksef-hub run`` as the command line builds it: it refuses the demo's published password beyond loopback before
creating anything, sets a private umask, and believes X-Forwarded-For only from KSEF_HUB_TRUSTED_PROXIES (observed
on a real uvicorn server on a loopback port with the proxy options the command chose)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

import ksef_hub.cli
from auth_svc.demo import DEMO_PASSWORD
from platform_common.testing.auth import serve_config_on_loopback

RUNNER_ENV = ("KSEF_HUB_HOST", "KSEF_HUB_DEMO", "KSEF_HUB_DEMO_PASSWORD", "KSEF_HUB_TRUSTED_PROXIES")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in RUNNER_ENV:
        monkeypatch.delenv(name, raising=False)
    # ``main`` sets the process umask; the test process keeps its own.
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def run(monkeypatch: pytest.MonkeyPatch, *argv: str) -> uvicorn.Config:
    """What ``ksef-hub run ...`` would serve (captured instead of blocking in ``run_server``)."""
    captured: list[uvicorn.Config] = []
    monkeypatch.setattr(ksef_hub.cli, "run_server", captured.append)
    ksef_hub.cli.main(["run", *argv])
    assert len(captured) == 1
    return captured[0]


class TestDemoPasswordBeyondLoopback:
    def test_refused_with_a_clear_message_before_anything_is_created(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("KSEF_HUB_HOST", "0.0.0.0")  # noqa: S104
        with pytest.raises(SystemExit) as stopped:
            run(monkeypatch, "--data-dir", str(tmp_path / "data"))
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert "refusing to listen on 0.0.0.0" in err and "KSEF_HUB_DEMO_PASSWORD" in err
        assert not (tmp_path / "data").exists()

    def test_the_published_password_set_explicitly_is_refused_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("KSEF_HUB_DEMO_PASSWORD", DEMO_PASSWORD)
        with pytest.raises(SystemExit):
            run(monkeypatch, "--host", "0.0.0.0", "--data-dir", str(tmp_path / "data"))  # noqa: S104

    @pytest.mark.parametrize(
        ("env", "argv"),
        [({"KSEF_HUB_DEMO": "false"}, []), ({}, ["--no-demo"]), ({"KSEF_HUB_DEMO_PASSWORD": "own-passphrase-29"}, [])],
        ids=["KSEF_HUB_DEMO=false", "--no-demo", "own password"],
    )
    def test_without_demo_or_with_an_own_password_it_starts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str]
    ) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        config = run(monkeypatch, "--host", "0.0.0.0", "--port", "8123", "--data-dir", str(tmp_path / "d"), *argv)  # noqa: S104
        assert (config.host, config.port) == ("0.0.0.0", 8123)  # noqa: S104

    def test_a_bad_demo_flag_is_an_error(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KSEF_HUB_DEMO", "nein")
        with pytest.raises(SystemExit, match="KSEF_HUB_DEMO"):
            run(monkeypatch, "--data-dir", str(tmp_path / "data"))


def test_the_process_umask_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(monkeypatch, "--data-dir", str(tmp_path / "data"))
    current = os.umask(0o077)
    assert current == 0o077
    made = tmp_path / "made-after-start"
    made.write_text("x")
    assert made.stat().st_mode & 0o077 == 0


def _reporter() -> FastAPI:
    app = FastAPI()

    @app.get("/client")
    async def client(request: Request) -> dict[str, str | None]:
        return {"host": request.client.host if request.client else None}

    return app


@asynccontextmanager
async def _served_like(config: uvicorn.Config) -> AsyncIterator[httpx.AsyncClient]:
    """A reporter of the client address, served with the forwarded-header options of ``config``."""
    like = uvicorn.Config(
        _reporter(),
        proxy_headers=config.proxy_headers,
        forwarded_allow_ips=config.forwarded_allow_ips,
        log_config=None,
        lifespan="off",
    )
    async with serve_config_on_loopback(like) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


class TestForwardedHeaders:
    async def test_not_believed_by_default(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's own knob must not reopen it
        config = run(monkeypatch, "--data-dir", str(tmp_path / "data"))
        async with _served_like(config) as client:
            seen = await client.get("/client", headers={"X-Forwarded-For": "203.0.113.9"})
        assert seen.json() == {"host": "127.0.0.1"}

    async def test_believed_from_a_trusted_proxy(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KSEF_HUB_TRUSTED_PROXIES", "127.0.0.1")
        config = run(monkeypatch, "--data-dir", str(tmp_path / "data"))
        async with _served_like(config) as client:
            seen = await client.get("/client", headers={"X-Forwarded-For": "203.0.113.9"})
        assert seen.json() == {"host": "203.0.113.9"}

    def test_a_bad_entry_stops_the_command(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        with pytest.raises(SystemExit) as stopped:
            run(monkeypatch, "--trusted-proxies", "*", "--data-dir", str(tmp_path / "data"))
        assert stopped.value.code == 2
