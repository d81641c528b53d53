"""The embedded mode's mail catcher: notify-svc sends real SMTP to a listener on loopback, which keeps the mails
for ``GET /notify/dev/mail`` (newest first) instead of delivering them anywhere.

Only when the platform is served on loopback and no SMTP server is configured (``NOTIFY_SMTP__*``): a caught
invitation or reset mail holds a link that takes over an account, so it is never listed to another machine.
"""

from __future__ import annotations

import socket
from typing import Any

from fastapi import APIRouter, Depends

from notify_svc.settings import NotifySettings, SmtpSettings
from platform_common.auth import public
from platform_common.testing.smtp import SmtpCatcher

MAIL_PATH = "/notify/dev/mail"


class EmbeddedMailCatcher:
    def __init__(self) -> None:
        # Bound now, so notify-svc's settings can name the port; it listens from ``start`` on.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._catcher = SmtpCatcher(sock=self._sock, keep=200)

    def start(self) -> None:
        self._catcher.start()

    def stop(self) -> None:
        self._catcher.stop()
        self._sock.close()

    def notify_settings(self, settings: NotifySettings) -> NotifySettings:
        if "smtp" in settings.model_fields_set:
            return settings  # an SMTP server was configured: mail goes there
        return settings.model_copy(update={"smtp": SmtpSettings(host="127.0.0.1", port=self.port)})

    def router(self) -> APIRouter:
        router = APIRouter(tags=["development"])

        @router.get(
            MAIL_PATH,
            summary="Mail caught by the embedded SMTP listener (newest first)",
            dependencies=[Depends(public("embedded development mail catcher, served on loopback only"))],
        )
        async def caught_mail() -> list[dict[str, Any]]:
            listed = []
            for mail in reversed(self._catcher.mails):
                message = mail.message
                listed.append(
                    {
                        "receivedAt": mail.received_at.isoformat(),
                        "from": message["From"],
                        "to": list(mail.recipients),
                        "subject": message["Subject"],
                        "messageId": message["Message-ID"],
                        "language": message["Content-Language"],
                        "text": mail.body("plain"),
                        "html": mail.body("html"),
                    }
                )
            return listed

        return router
