"""Latarnia, the Ministry's public status service (REFERENCE.md §1): ``GET /status``.

Hosts per environment: TEST ``api-latarnia-test``, PROD ``api-latarnia``; DEMO is pre-production and watched
through the production service (the reference names no DEMO host). The simulator serves it at its root.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ksef_gateway.ksef.environments import Environment
from ksef_gateway.outages.domain import LatarniaReading

LATARNIA_URLS: dict[Environment, str] = {
    Environment.TEST: "https://api-latarnia-test.ksef.mf.gov.pl",
    Environment.DEMO: "https://api-latarnia.ksef.mf.gov.pl",
    Environment.PROD: "https://api-latarnia.ksef.mf.gov.pl",
}
MAX_STATUS_BYTES = 256 * 1024  # a status page is small: anything bigger is not Latarnia


def latarnia_url(environment: Environment, sim_base_url: str) -> str:
    if environment is Environment.SIM:
        root = sim_base_url.rstrip("/")
        return root.removesuffix("/v2")
    return LATARNIA_URLS[environment]


class LatarniaUnavailable(Exception):
    """Latarnia did not answer, or not with a status: nothing can be concluded about KSeF from it."""


class _Message(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    event_id: int | None = Field(default=None, alias="eventId")
    category: str | None = None
    title: str | None = None
    text: str | None = None
    start: datetime | None = None


class _Status(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = Field(max_length=40)
    messages: list[_Message] = Field(default_factory=list, max_length=100)


class Latarnia(Protocol):
    async def status(self) -> LatarniaReading: ...


class HttpLatarnia:
    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self._url = f"{base_url.rstrip('/')}/status"
        self._http = http

    async def status(self) -> LatarniaReading:
        try:
            response = await self._http.get(self._url, timeout=10.0)
        except httpx.HTTPError as exc:
            raise LatarniaUnavailable(f"no answer: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise LatarniaUnavailable(f"HTTP {response.status_code}")
        if len(response.content) > MAX_STATUS_BYTES:
            raise LatarniaUnavailable(f"an answer of {len(response.content)} bytes")
        try:
            parsed = _Status.model_validate_json(response.content)
        except ValidationError as exc:
            raise LatarniaUnavailable(f"not a status: {exc.error_count()} error(s)") from None
        running = next((m for m in parsed.messages if m.event_id is not None), None)
        if running is None:
            return LatarniaReading(parsed.status)
        text = " ".join(part for part in (running.title, running.text) if part) or None
        return LatarniaReading(parsed.status, running.event_id, running.start, text[:2000] if text else None)
