"""Bounded HTTP input: request bodies, query strings and headers are refused before they are read in full.

A pure ASGI middleware, installed on every service app by ``create_service_app`` (and on the KSeF simulator):

- a query string over ``max_query_bytes`` is answered 414, a head over ``max_header_bytes`` or ``max_headers``
  431, before the app sees the request;
- a declared ``Content-Length`` over the route's body limit is answered 413 at once, without reading the body;
- a body without a length (chunked) is counted as the app reads it, and answered 413 as soon as the count
  passes the limit: the app gets an error from ``receive`` instead of the rest of the body.

The default body limit is ``max_body_bytes``; a route that takes more (or less) declares it with
``openapi_extra=body_limit(n)``, which also publishes it in the OpenAPI document as ``x-body-limit``.
The route is looked up only when a body gets past the smallest limit in use, so a request under every
limit never pays for it.

Every refusal carries ``Connection: close``: the rest of the body is never read, so the connection cannot
carry another request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import RouteContext, iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from platform_common.problems import problem_response
from platform_common.settings import HttpLimitsSettings

BODY_LIMIT_KEY = "x-body-limit"


def body_limit(max_bytes: int) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body may be larger (or must be smaller) than the service default."""
    if max_bytes < 0:
        raise ValueError("a body limit is a number of bytes, not negative")
    return {BODY_LIMIT_KEY: max_bytes}


def declare_body_limits(app: FastAPI, limits: Mapping[tuple[str, str], int]) -> None:
    """Body limits ``{(METHOD, path template): max_bytes}`` for routes defined elsewhere (the simulator's, whose
    routers mirror KSeF's API and stay free of platform concerns); also published as ``x-body-limit``.

    A pair that names no route is an error: a renamed route must not silently fall back to the default.
    """
    wanted = {(method.upper(), path): body_limit(n)[BODY_LIMIT_KEY] for (method, path), n in limits.items()}
    known = {(m, c.path) for c in iter_route_contexts(app.routes) for m in c.methods or ()}
    if missing := sorted(set(wanted) - known):
        raise LookupError(f"no such routes: {missing}")
    declared: dict[tuple[str, str], int] = getattr(app.state, _DECLARED_STATE, {})
    declared.update(wanted)
    setattr(app.state, _DECLARED_STATE, declared)
    if getattr(app.openapi, _PATCHED, False):
        app.openapi_schema = None
        return
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for (method, path), n in declared.items():
                operation = schema.get("paths", {}).get(path, {}).get(method.lower())
                if operation is not None:
                    operation[BODY_LIMIT_KEY] = n
        return app.openapi_schema or generate()

    setattr(openapi, _PATCHED, True)
    app.openapi_schema = None
    app.openapi = openapi  # type: ignore[method-assign]


_DECLARED_STATE = "http_body_limits"
_PATCHED = "_with_body_limits"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit.

    An ``HTTPException`` so that FastAPI's body parsing passes it on instead of turning it into a 400; the
    middleware answers with its own problem document whatever the app makes of it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes.")
        self.limit = limit


@dataclass
class _Exchange:
    """One request's state, shared by the wrapped ``receive`` and ``send``."""

    limit: int | None = None
    received: int = 0
    exceeded: bool = False
    # The app's response began before the body passed the limit: no 413 can be sent any more.
    started: bool = False
    # The 413 went out in place of what the app answered; the app's further messages are dropped.
    answered: bool = False


class HttpLimitsMiddleware:
    def __init__(self, app: ASGIApp, settings: HttpLimitsSettings) -> None:
        self.app = app
        self.settings = settings
        # (route, its declared limit or None), in routing order; built on the first request that needs it,
        # when every route is registered.
        self._routes: list[tuple[RouteContext, int | None]] | None = None
        self._min_limit: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.settings
        if len(scope.get("query_string", b"")) > s.max_query_bytes:
            detail = f"The query string exceeds {s.max_query_bytes} bytes."
            await _refuse(scope, send, 414, "query-too-long", detail, max_bytes=s.max_query_bytes)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > s.max_headers or sum(len(k) + len(v) for k, v in headers) > s.max_header_bytes:
            detail = f"The request carries more than {s.max_headers} headers or {s.max_header_bytes} bytes of them."
            await _refuse(
                scope,
                send,
                431,
                "headers-too-large",
                detail,
                max_bytes=s.max_header_bytes,
                max_headers=s.max_headers,
            )
            return

        exchange = _Exchange()
        declared = _content_length(headers)
        if declared is not None and declared > self._smallest_limit(scope) and declared > self._limit(scope, exchange):
            await self._refuse_body(scope, send, exchange)
            return

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.received += len(message.get("body", b""))
                if exchange.received > self._smallest_limit(scope) and exchange.received > self._limit(scope, exchange):
                    exchange.exceeded = True
                    raise BodyTooLarge(self._limit(scope, exchange))
            return message

        async def send_guarded(message: Message) -> None:
            if exchange.answered:
                return
            if message["type"] == "http.response.start":
                if exchange.exceeded:
                    # The app caught the error (FastAPI answers an unreadable body with 400): the client
                    # learns the real reason.
                    await self._refuse_body(scope, send, exchange)
                    return
                exchange.started = True
            await send(message)

        try:
            await self.app(scope, receive_counted, send_guarded)
        except Exception as exc:
            if not exchange.exceeded:
                raise
            if exchange.started:
                # Once the response has begun, only an aborted connection tells the client that the request
                # failed: the exception reaches the server, which closes it (whatever the app wrapped it in).
                raise BodyTooLarge(self._limit(scope, exchange)) from exc
            if not exchange.answered:
                await self._refuse_body(scope, send, exchange)
            return
        if exchange.exceeded and not exchange.started and not exchange.answered:
            await self._refuse_body(scope, send, exchange)

    async def _refuse_body(self, scope: Scope, send: Send, exchange: _Exchange) -> None:
        exchange.answered = True
        limit = self._limit(scope, exchange)
        await _refuse(scope, send, 413, "body-too-large", f"The request body exceeds {limit} bytes.", max_bytes=limit)

    def _declared_routes(self, scope: Scope) -> list[tuple[RouteContext, int | None]]:
        if self._routes is None:
            routes: list[tuple[RouteContext, int | None]] = []
            app = scope.get("app")
            declared: dict[tuple[str, str], int] = getattr(getattr(app, "state", None), _DECLARED_STATE, {})
            for context in iter_route_contexts(getattr(app, "routes", ())):
                extra = getattr(context.original_route, "openapi_extra", None) or {}
                limit = extra.get(BODY_LIMIT_KEY)
                for method in context.methods or ():
                    limit = declared.get((method, context.path or ""), limit)
                routes.append((context, limit))
            # Without any declaration every request has the default: no route ever needs to be matched.
            self._routes = routes if any(limit is not None for _, limit in routes) else []
        return self._routes

    def _smallest_limit(self, scope: Scope) -> int:
        if self._min_limit is None:
            declared = [limit for _, limit in self._declared_routes(scope) if limit is not None]
            self._min_limit = min([self.settings.max_body_bytes, *declared])
        return self._min_limit

    def _limit(self, scope: Scope, exchange: _Exchange) -> int:
        if exchange.limit is None:
            exchange.limit = self.settings.max_body_bytes
            for route, limit in self._declared_routes(scope):
                # The router's own rule: the first full match (path and method) handles the request.
                if route.matches(scope)[0] is Match.FULL:
                    if limit is not None:
                        exchange.limit = limit
                    break
        return exchange.limit


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                # The server refuses a malformed length itself; the count of received bytes still applies.
                return None
    return None


# RFC 9110 / RFC 6585 names (Python's http.HTTPStatus still has the RFC 2616 ones for 413 and 414).
_TITLES = {413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


async def _refuse(scope: Scope, send: Send, status: int, code: str, detail: str, **extensions: Any) -> None:
    response = problem_response(
        status,
        title=_TITLES[status],
        detail=detail,
        code=code,
        instance=scope.get("path"),
        headers={"Connection": "close"},
        **extensions,
    )

    async def no_body() -> Message:
        # The refusal never reads the request.
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)


def install_http_limits(app: FastAPI, settings: HttpLimitsSettings) -> None:
    """Outermost of the app's own middleware, so nothing reads a body before it is counted."""
    app.add_middleware(HttpLimitsMiddleware, settings=settings)
