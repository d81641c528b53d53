"""A real HTTP/1.1 receiver on loopback for webhook tests and benchmarks: records every request, answers as told."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Received:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    # Declared length, when it should differ from the body's: with ``hold_open`` the receiver then sends ``body``
    # and keeps the connection open without finishing the answer.
    content_length: int | None = None
    hold_open: bool = False


@dataclass
class Receiver:
    """A small HTTP/1.1 server on 127.0.0.1 (keep-alive unless the client asks to close) that records what it gets.

    ``reply`` None means accept the connection and never answer.
    """

    reply: Callable[[Received], Reply] | None = lambda _: Reply(200, b"ok")
    tls: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> Receiver:
        if self.tls is not None:
            self.tls.sni_callback = self._remember_sni
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        return self

    def _remember_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    async def close(self) -> None:
        self._closing.set()
        assert self._server is not None
        self._server.close()
        # A keep-alive connection's handler waits for the client's next request: closing its connection ends
        # that wait as an end of stream (cancelling the handler instead makes asyncio log the cancellation).
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.reply is None:
                await self._closing.wait()
                return
            while not self._closing.is_set():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _version = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(method, target, headers, body)
                self.requests.append(received)
                reply = self.reply(received)
                length = len(reply.body) if reply.content_length is None else reply.content_length
                lines = [
                    f"HTTP/1.1 {reply.status} X",
                    f"Content-Length: {length}",
                    *(f"{n}: {v}" for n, v in reply.headers),
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)
                await writer.drain()
                if reply.hold_open:
                    await self._closing.wait()
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except ConnectionError:
            return
        finally:
            writer.close()
            self._handlers.discard(task)
            self._writers.discard(writer)
