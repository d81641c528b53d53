"""``<service> serve`` believes X-Forwarded-For only from the proxies its settings name (default: none), observed on
a real uvicorn server on a loopback port serving the configuration ``service_cli`` built."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import cast

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

import platform_common.cli
from platform_common.cli import parse_trusted_proxies, service_cli
from platform_common.runtime import ServiceDefinition
from platform_common.settings import ServiceSettings
from platform_common.testing.auth import serve_config_on_loopback

FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def reporter() -> FastAPI:
    app = FastAPI()

    @app.get("/client")
    async def client(request: Request) -> dict[str, str | None]:
        return {"host": request.client.host if request.client else None, "scheme": request.url.scheme}

    return app


def built_config(monkeypatch: pytest.MonkeyPatch, settings: ServiceSettings, *argv: str) -> uvicorn.Config:
    """The uvicorn configuration ``service_cli ... serve`` runs (captured instead of blocking in ``run``)."""
    captured: list[uvicorn.Config] = []
    monkeypatch.setattr(platform_common.cli, "run_server", captured.append)
    # serve reads only the name and description of the definition.
    definition = cast(ServiceDefinition, SimpleNamespace(name="demo-svc", description="test"))
    service_cli(definition, lambda: settings, reporter, default_port=0, argv=["serve", *argv])
    assert len(captured) == 1
    return captured[0]


@asynccontextmanager
async def served(config: uvicorn.Config) -> AsyncIterator[httpx.AsyncClient]:
    config.log_config = None
    async with serve_config_on_loopback(config) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        yield client


async def seen(config: uvicorn.Config) -> dict[str, str]:
    async with served(config) as client:
        response = await client.get("/client", headers=FORWARDED)
        assert response.status_code == 200
        body: dict[str, str] = response.json()
        return body


class TestServiceServe:
    async def test_by_default_a_forwarded_address_is_not_believed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # uvicorn's own default trusts 127.0.0.1, and its FORWARDED_ALLOW_IPS variable would widen that.
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
        config = built_config(monkeypatch, ServiceSettings())
        assert await seen(config) == {"host": "127.0.0.1", "scheme": "http"}

    async def test_a_listed_proxy_is_believed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        config = built_config(monkeypatch, ServiceSettings(trusted_proxies="10.0.0.0/8, 127.0.0.1"))
        assert await seen(config) == {"host": "203.0.113.9", "scheme": "https"}

    async def test_a_cidr_covering_the_peer_is_believed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        config = built_config(monkeypatch, ServiceSettings(), "--trusted-proxies", "127.0.0.0/8")
        assert (await seen(config))["host"] == "203.0.113.9"

    async def test_a_proxy_elsewhere_does_not_make_the_peer_trusted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        config = built_config(monkeypatch, ServiceSettings(trusted_proxies="10.1.2.3"))
        assert (await seen(config))["host"] == "127.0.0.1"

    def test_the_setting_comes_from_the_service_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DEMO_TRUSTED_PROXIES", "10.42.0.0/16")

        class DemoSettings(ServiceSettings):
            model_config = {**ServiceSettings.model_config, "env_prefix": "DEMO_"}

        config = built_config(monkeypatch, DemoSettings())
        assert config.proxy_headers is True
        assert config.forwarded_allow_ips == ["10.42.0.0/16"]

    def test_a_bad_entry_stops_the_command(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with pytest.raises(SystemExit) as stopped:
            built_config(monkeypatch, ServiceSettings(trusted_proxies="ingress.local"))
        assert stopped.value.code == 2


class TestParse:
    def test_addresses_and_networks(self) -> None:
        assert parse_trusted_proxies(" 10.0.0.1, 10.42.0.0/16 ,::1,") == ["10.0.0.1", "10.42.0.0/16", "::1"]
        assert parse_trusted_proxies("") == []

    @pytest.mark.parametrize("value", ["*", "10.0.0.1,*", "proxy.internal", "10.0.0.0/33"])
    def test_refused(self, value: str) -> None:
        with pytest.raises(ValueError, match=r"trust every caller|not an IP address"):
            parse_trusted_proxies(value)
