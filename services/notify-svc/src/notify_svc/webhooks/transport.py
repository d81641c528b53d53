"""One webhook POST, to the address ``targets.pin`` checked, with nothing the receiver says taken on trust.

The hostname is resolved once, by ``pin``; the request then goes to that IP (the URL carries the address, ``Host``
the name, and for https the SNI and certificate check use the name), so the HTTP client never asks DNS again and a
second, different answer cannot smuggle a private address in (DNS rebinding). Redirects are not followed (a 3xx
could point anywhere, including inside), the response body is read only up to a limit, cookies are never kept, and
no proxy comes from the environment.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from notify_svc.webhooks.targets import PinnedTarget, Resolver, SystemResolver, TargetPolicy, TargetRefused, pin

EXCERPT_CHARS = 500
# Enough bytes for EXCERPT_CHARS characters of any UTF-8 text.
_EXCERPT_BYTES = EXCERPT_CHARS * 4
_REASON_CHARS = 200
# Set by the transport: the caller must not be able to change how the request is framed or where it goes.
_CONTROLLED_HEADERS = ("host", "content-length", "transfer-encoding", "connection", "user-agent", "accept-encoding")


@dataclass(frozen=True)
class HttpResponse:
    """What came of one POST. ``status`` is None when there was no HTTP answer (refused target, connect error,
    timeout); ``error`` says why the POST did not succeed and is None for a 2xx, even one whose body was longer
    than the transport reads: the receiver accepted the delivery, and the unread rest of its answer changes nothing.
    """

    status: int | None
    latency_ms: int
    excerpt: str | None
    error: str | None
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoCookies(CookieJar):
    """A jar that keeps nothing: a receiver's cookie must never travel with another tenant's delivery."""

    def __init__(self) -> None:
        super().__init__(policy=DefaultCookiePolicy(allowed_domains=[]))


class WebhookTransport:
    def __init__(
        self,
        policy: TargetPolicy,
        resolver: Resolver | None = None,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        max_response_bytes: int = 64 * 1024,
        user_agent: str = "KSeF-Hub-Webhooks/1.0",
        max_connections: int = 128,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` replaces the default trust store (certifi), for tests with their own CA."""
        self._policy = policy
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self._connect_timeout_s = connect_timeout_s
        self._max_response_bytes = max_response_bytes
        self._user_agent = user_agent
        # httpx's timeouts bound each read, not the whole answer: a receiver that drips one byte just inside the
        # read timeout would otherwise hold a delivery slot for as long as it likes.
        self._deadline_s = connect_timeout_s + 2 * read_timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=connect_timeout_s
            ),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max(1, max_connections // 4),
                keepalive_expiry=30.0,
            ),
            verify=ssl_context if ssl_context is not None else True,
            follow_redirects=False,
            trust_env=False,
            cookies=_NoCookies(),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpResponse:
        """POST ``body`` to ``url``; network problems and refusals come back as an ``HttpResponse``, never raised."""
        started = time.monotonic()
        try:
            # Resolution is part of getting connected, so it shares the connect timeout.
            async with asyncio.timeout(self._connect_timeout_s):
                target = await pin(url, self._policy, self._resolver)
        except TargetRefused as exc:
            return HttpResponse(
                status=None, latency_ms=_ms(started), excerpt=None, error=f"target refused: {exc.reason}", refused=True
            )
        except TimeoutError:
            return HttpResponse(status=None, latency_ms=_ms(started), excerpt=None, error="connect timeout")
        return await self._send(target, body, headers, started)

    async def _send(
        self, target: PinnedTarget, body: bytes, headers: Mapping[str, str], started: float
    ) -> HttpResponse:
        request_headers = httpx.Headers(headers)
        for name in _CONTROLLED_HEADERS:
            request_headers.pop(name, None)
        request_headers["Host"] = _authority(target.host, target.port, target.scheme)
        request_headers["User-Agent"] = self._user_agent
        # Compressed answers could inflate far past max_response_bytes inside a single decoded chunk.
        request_headers["Accept-Encoding"] = "identity"
        extensions: dict[str, str] = {}
        if target.scheme == "https":
            extensions["sni_hostname"] = target.host
            # httpx pools connections by scheme, address and port, not by SNI: a kept-alive TLS connection whose
            # certificate was checked for one name would be reused for another name on the same address (shared
            # hosting, CDNs), and the second receiver's identity never checked. One connection per https delivery.
            request_headers["Connection"] = "close"
        request_url = f"{target.scheme}://{_authority(target.address, target.port, None)}{target.path_and_query}"

        status: int | None = None
        location: str | None = None
        charset: str | None = None
        received = bytearray()
        too_large = False
        failure: str | None = None
        try:
            async with asyncio.timeout(self._deadline_s):
                async with self._client.stream(
                    "POST", request_url, content=body, headers=request_headers, extensions=extensions
                ) as response:
                    status = response.status_code
                    location = response.headers.get("location")
                    charset = response.charset_encoding
                    async for chunk in response.aiter_raw():
                        room = self._max_response_bytes - len(received)
                        if len(chunk) > room:
                            received += chunk[:room]
                            too_large = True
                            break
                        received += chunk
        except TimeoutError:
            failure = "read timeout"
        except httpx.ConnectTimeout:
            failure = "connect timeout"
        except httpx.ReadTimeout:
            failure = "read timeout"
        except httpx.WriteTimeout:
            failure = "write timeout"
        except httpx.PoolTimeout:
            failure = "pool timeout (too many deliveries in flight)"
        except httpx.TransportError as exc:
            failure = f"connection failed: {_describe(exc)}"

        latency_ms = _ms(started)
        if status is None:
            return HttpResponse(status=None, latency_ms=latency_ms, excerpt=None, error=failure)
        # A status arrived: that is the answer, and a body that broke off afterwards only shortens the excerpt.
        excerpt = _excerpt(bytes(received[:_EXCERPT_BYTES]), charset)
        if 200 <= status < 300:
            error = None
        elif 300 <= status < 400:
            where = f" to {location[:_REASON_CHARS]}" if location else ""
            error = f"redirect not followed (HTTP {status}{where})"
        elif too_large:
            error = f"response too large (HTTP {status})"
        else:
            error = f"HTTP {status}"
        return HttpResponse(status=status, latency_ms=latency_ms, excerpt=excerpt, error=error)


def _authority(host: str, port: int, scheme: str | None) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    default = {"https": 443, "http": 80}.get(scheme or "")
    return bracketed if port == default else f"{bracketed}:{port}"


def _excerpt(data: bytes, charset: str | None) -> str | None:
    if not data:
        return None
    try:
        text = data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset name Python does not know
        text = data.decode("utf-8", errors="replace")
    return text[:EXCERPT_CHARS]


def _describe(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:_REASON_CHARS]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
