"""A real SMTP listener on loopback that keeps what it receives: for tests, and the embedded mode's mail catcher.

aiosmtpd's ``Controller`` serves SMTP from its own thread and event loop. Its socket is bound here first, on
port 0, and handed over, so parallel runs never race for a port. ``fail_next`` makes the next DATA commands
answer with a given reply ("451 4.3.0 Try again later", "550 5.1.1 No such user") to test temporary and
permanent failures. Needs ``aiosmtpd`` (a dev dependency, and the runner's).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class CaughtMail:
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    received_at: datetime

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        content: str = part.get_content()
        return content


class _Handler:
    def __init__(self, catcher: SmtpCatcher) -> None:
        self._catcher = catcher

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        return self._catcher._received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content))


class _BoundController(Controller):
    def __init__(self, handler: Any, sock: socket.socket) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(handler, hostname=host, port=port)
        self._sock = sock

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpCatcher:
    def __init__(self, host: str = "127.0.0.1", *, keep: int = 1000, sock: socket.socket | None = None) -> None:
        """``sock``: a socket bound (not listening) beforehand, e.g. to have a port refuse connections first."""
        self._host = host
        self._sock = sock
        self._mails: deque[CaughtMail] = deque(maxlen=keep)
        self._received_total = 0
        self._refused = 0
        self._replies: deque[str] = deque()
        self._changed = threading.Condition()
        self._controller: _BoundController | None = None
        self.port = 0

    def start(self) -> SmtpCatcher:
        # aiosmtpd logs every DATA line at DEBUG ("mail.log"): the mails' links would end up in the logs.
        protocol_log = logging.getLogger("mail.log")
        protocol_log.setLevel(max(protocol_log.getEffectiveLevel(), logging.INFO))
        sock = self._sock
        if sock is None:
            sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((self._host, 0))
        self.port = sock.getsockname()[1]
        self._controller = _BoundController(_Handler(self), sock)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpCatcher:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def fail_next(self, *replies: str) -> None:
        """The next ``len(replies)`` messages are answered with these replies instead of being accepted."""
        with self._changed:
            self._replies.extend(replies)

    @property
    def mails(self) -> list[CaughtMail]:
        with self._changed:
            return list(self._mails)

    @property
    def refused(self) -> int:
        """How many messages were answered by a ``fail_next`` reply."""
        with self._changed:
            return self._refused

    def _received(self, mail_from: str, recipients: tuple[str, ...], raw: bytes) -> str:
        with self._changed:
            if self._replies:
                self._refused += 1
                reply = self._replies.popleft()
                self._changed.notify_all()
                return reply
            self._mails.append(CaughtMail(mail_from, recipients, raw, datetime.now(UTC)))
            self._received_total += 1
            self._changed.notify_all()
        return "250 OK"

    def _wait(self, predicate: Any, timeout: float) -> bool:
        with self._changed:
            return bool(self._changed.wait_for(predicate, timeout))

    async def wait_for_mails(self, count: int, timeout: float = 30.0) -> list[CaughtMail]:
        """Until at least ``count`` messages were accepted (in total); ``TimeoutError`` after ``timeout``."""
        if not await asyncio.to_thread(self._wait, lambda: self._received_total >= count, timeout):
            raise TimeoutError(f"{self._received_total} of {count} mails arrived within {timeout} s")
        return self.mails

    async def wait_for_refusals(self, count: int, timeout: float = 30.0) -> None:
        if not await asyncio.to_thread(self._wait, lambda: self._refused >= count, timeout):
            raise TimeoutError(f"{self._refused} of {count} refusals within {timeout} s")
