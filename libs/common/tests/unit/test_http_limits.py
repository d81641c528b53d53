"""Bounded HTTP input: bodies, query strings and headers over their limits are refused before they are read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from platform_common.limits import BODY_LIMIT_KEY, BodyTooLarge, body_limit, declare_body_limits, install_http_limits
from platform_common.problems import install_problem_handlers
from platform_common.settings import HttpLimitsSettings, ServiceSettings
from platform_common.testing.auth import serve_on_loopback

LIMITS = HttpLimitsSettings(max_body_bytes=1000, max_query_bytes=100, max_header_bytes=2000, max_headers=20)
UPLOAD_LIMIT = 5000


class Login(BaseModel):
    email: str
    password: str


class Recorder:
    def __init__(self) -> None:
        self.handled: list[str] = []


def tiny_app(recorder: Recorder) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_http_limits(app, LIMITS)
    router = APIRouter(prefix="/v1")

    @router.post("/login")
    async def login(body: Login) -> dict[str, str]:
        recorder.handled.append("login")
        return {"email": body.email}

    @router.put("/parts/{name}", openapi_extra=body_limit(UPLOAD_LIMIT))
    async def upload(name: str, request: Request) -> dict[str, int]:
        recorder.handled.append("upload")
        return {"size": len(await request.body())}

    @router.post("/stream")
    async def stream(request: Request) -> dict[str, int]:
        recorder.handled.append("stream")
        return {"size": sum([len(chunk) async for chunk in request.stream()])}

    @router.post("/tiny", openapi_extra=body_limit(10))
    async def tiny(request: Request) -> dict[str, int]:
        recorder.handled.append("tiny")
        return {"size": len(await request.body())}

    @router.post("/swallow")
    async def swallow(request: Request) -> dict[str, bool]:
        # An app that hides a failed read must not turn the refusal into a success.
        recorder.handled.append("swallow")
        try:
            await request.body()
        except Exception:
            return {"ok": True}
        return {"ok": True}

    @router.get("/items")
    async def items(q: str = "") -> dict[str, str]:
        recorder.handled.append("items")
        return {"q": q}

    app.include_router(router)

    async def duplex(scope: Scope, receive: Receive, send: Send) -> None:
        # Answers before it reads: an echo that streams the body back as it arrives.
        recorder.handled.append("duplex")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    app.mount("/duplex", duplex)
    return app


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=tiny_app(recorder))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


class Chunks:
    """A chunked request body (no Content-Length) that counts how much of it the app pulled."""

    def __init__(self, total: int, size: int = 100) -> None:
        self.total = total
        self.size = size
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            chunk = b"x" * min(self.size, self.total - self.sent)
            self.sent += len(chunk)
            yield chunk


def raw_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    """An HTTP scope as a server makes it, for driving the app with hand-made ``receive`` and ``send``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t"), *headers],
        "server": ("t", 80),
        "client": ("127.0.0.1", 1234),
    }


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["connection"] == "close"
    body: dict[str, Any] = r.json()
    assert body["type"] == f"https://ksef-hub.dev/problems/{code}"
    assert body["status"] == status
    return body


class TestBody:
    async def test_a_declared_length_over_the_default_is_refused_before_the_handler(
        self, client: httpx.AsyncClient, recorder: Recorder
    ) -> None:
        r = await client.post("/v1/login", json={"email": "a@b.pl", "password": "x" * 2000})
        body = assert_problem(r, 413, "body-too-large")
        assert body["max_bytes"] == 1000 and body["instance"] == "/v1/login"
        assert "x" * 10 not in r.text
        assert recorder.handled == []

    async def test_a_declared_length_is_refused_without_reading_any_of_the_body(self, recorder: Recorder) -> None:
        app = tiny_app(recorder)
        reads = 0
        sent: list[Message] = []

        async def receive() -> dict[str, Any]:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b"{}", "more_body": True}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = raw_scope(
            "POST", "/v1/login", [(b"content-type", b"application/json"), (b"content-length", b"20000000")]
        )
        await app(scope, receive, send)
        assert reads == 0
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
        assert json.loads(sent[1]["body"])["type"].endswith("/body-too-large")

    async def test_a_chunked_body_is_refused_once_it_passes_the_limit(
        self, client: httpx.AsyncClient, recorder: Recorder
    ) -> None:
        body = Chunks(total=1_000_000)
        r = await client.post("/v1/login", content=body, headers={"content-type": "application/json"})
        assert_problem(r, 413, "body-too-large")
        assert recorder.handled == []
        # Pulled up to the first chunk past the limit, not the megabyte.
        assert 1000 < body.sent <= 1100

    async def test_an_app_that_swallows_the_failed_read_still_answers_413(
        self, client: httpx.AsyncClient, recorder: Recorder
    ) -> None:
        r = await client.post("/v1/swallow", content=Chunks(total=5000))
        assert_problem(r, 413, "body-too-large")
        assert recorder.handled == ["swallow"]

    async def test_a_route_may_take_more_than_the_default(self, client: httpx.AsyncClient) -> None:
        ok = await client.put("/v1/parts/a", content=b"p" * UPLOAD_LIMIT)
        assert ok.status_code == 200 and ok.json() == {"size": UPLOAD_LIMIT}
        chunked = await client.put("/v1/parts/a", content=Chunks(total=UPLOAD_LIMIT))
        assert chunked.status_code == 200 and chunked.json() == {"size": UPLOAD_LIMIT}
        body = assert_problem(await client.put("/v1/parts/a", content=b"p" * (UPLOAD_LIMIT + 1)), 413, "body-too-large")
        assert body["max_bytes"] == UPLOAD_LIMIT
        assert_problem(await client.put("/v1/parts/a", content=Chunks(total=UPLOAD_LIMIT + 1)), 413, "body-too-large")

    async def test_a_route_may_take_less_than_the_default(self, client: httpx.AsyncClient) -> None:
        assert (await client.post("/v1/tiny", content=b"0123456789")).json() == {"size": 10}
        assert_problem(await client.post("/v1/tiny", content=b"0123456789a"), 413, "body-too-large")
        assert_problem(await client.post("/v1/tiny", content=Chunks(total=11, size=3)), 413, "body-too-large")

    async def test_requests_under_the_limits_are_untouched(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/login", json={"email": "a@b.pl", "password": "secret"})
        assert r.status_code == 200 and r.json() == {"email": "a@b.pl"}
        streamed = await client.post("/v1/stream", content=Chunks(total=1000, size=7))
        assert streamed.status_code == 200 and streamed.json() == {"size": 1000}
        assert (await client.get("/v1/items", params={"q": "x" * 90})).json() == {"q": "x" * 90}
        # A validation error stays a validation error.
        assert (await client.post("/v1/login", json={"email": "a@b.pl"})).status_code == 422

    async def test_a_body_passing_the_limit_after_the_response_began_aborts_the_exchange(
        self, recorder: Recorder
    ) -> None:
        # No 413 can follow a 200 already sent: the exception goes to the server, which drops the connection.
        app = tiny_app(recorder)
        sent: list[Message] = []
        chunks = [b"y" * 600, b"y" * 600]

        async def receive() -> dict[str, Any]:
            body = chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(chunks)}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = raw_scope("POST", "/duplex/", [(b"transfer-encoding", b"chunked")])
        with pytest.raises(BodyTooLarge):
            await app(scope, receive, send)
        starts = [m for m in sent if m["type"] == "http.response.start"]
        assert [m["status"] for m in starts] == [200]
        assert b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body") == b"y" * 600
        assert not any(m.get("more_body") is False for m in sent if m["type"] == "http.response.body")


class TestQueryAndHeaders:
    async def test_a_long_query_string_is_414(self, client: httpx.AsyncClient, recorder: Recorder) -> None:
        r = await client.get("/v1/items", params={"q": "x" * 200})
        body = assert_problem(r, 414, "query-too-long")
        assert body["max_bytes"] == 100
        assert "xxxx" not in r.text
        assert recorder.handled == []

    async def test_too_many_headers_are_431(self, client: httpx.AsyncClient, recorder: Recorder) -> None:
        r = await client.get("/v1/items", headers={f"x-h{i}": "1" for i in range(30)})
        assert_problem(r, 431, "headers-too-large")
        assert recorder.handled == []

    async def test_too_many_header_bytes_are_431(self, client: httpx.AsyncClient, recorder: Recorder) -> None:
        r = await client.get("/v1/items", headers={"authorization": "Bearer " + "t" * 3000})
        body = assert_problem(r, 431, "headers-too-large")
        assert body["max_bytes"] == 2000 and body["max_headers"] == 20
        assert "tttt" not in r.text
        assert recorder.handled == []


class TestDeclarations:
    def test_a_route_limit_is_published_in_the_openapi_document(self, recorder: Recorder) -> None:
        paths = tiny_app(recorder).openapi()["paths"]
        assert paths["/v1/parts/{name}"]["put"][BODY_LIMIT_KEY] == UPLOAD_LIMIT
        assert BODY_LIMIT_KEY not in paths["/v1/login"]["post"]

    async def test_limits_declared_on_routes_defined_elsewhere(self, recorder: Recorder) -> None:
        app = tiny_app(recorder)
        declare_body_limits(app, {("POST", "/v1/login"): 3000})
        assert app.openapi()["paths"]["/v1/login"]["post"][BODY_LIMIT_KEY] == 3000
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.post("/v1/login", json={"email": "a@b.pl", "password": "x" * 2000})
            assert r.status_code == 200
            assert_problem(
                await client.post("/v1/login", json={"email": "a@b.pl", "password": "x" * 3000}), 413, "body-too-large"
            )

    def test_a_declaration_for_a_missing_route_is_an_error(self, recorder: Recorder) -> None:
        with pytest.raises(LookupError, match="/v1/nope"):
            declare_body_limits(tiny_app(recorder), {("POST", "/v1/nope"): 10})

    def test_every_service_settings_carry_the_limits_with_a_small_default(self) -> None:
        assert ServiceSettings().http_limits.max_body_bytes == 1024 * 1024


async def _exchange(base_url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send a raw request head and some of a body, then read what the server answers until it closes."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        # The client never finishes its body: only a server that answers early (and closes) ends this read.
        return await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()


class TestOverRealHttp:
    async def test_a_declared_20_mb_body_is_answered_413_before_a_byte_of_it_is_sent(self, recorder: Recorder) -> None:
        async with serve_on_loopback(tiny_app(recorder)) as base_url:
            head = (
                b"POST /v1/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Content-Length: 20000000\r\n\r\n"
            )
            answer = await _exchange(base_url, head)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
        assert b"connection: close" in rest.lower()
        assert b"/body-too-large" in rest
        assert recorder.handled == []

    async def test_a_chunked_upload_is_answered_413_while_the_client_is_still_sending(self, recorder: Recorder) -> None:
        async with serve_on_loopback(tiny_app(recorder)) as base_url:
            head = (
                b"POST /v1/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            # 1001 bytes of an unterminated chunked body: one byte over the limit, and no last chunk.
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (b"{" * 500, b" " * 500, b" "))
            answer = await _exchange(base_url, head, chunks)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"/body-too-large" in answer
        assert recorder.handled == []
