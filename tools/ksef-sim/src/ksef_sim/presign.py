"""Pre-signed storage URLs (UPO downloads, export parts, batch part uploads) that need no bearer token.

Shaped like the real Azure-blob links (``…/storage/{path}?sv=…&se=…&sig=…``); the signature is an HMAC over the
method, blob name and expiry, so a link cannot be widened to another blob or extended.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from urllib.parse import quote, urlencode

from ksef_sim.store import Store

SV = "2025-01-05"


class Presigner:
    def __init__(self, store: Store) -> None:
        secret = store.get_meta("presign_secret")
        if not secret:
            secret = secrets.token_hex(32)
            store.set_meta("presign_secret", secret)
        self._key = bytes.fromhex(secret)

    def _sig(self, method: str, blob: str, expires: int) -> str:
        message = f"{method.upper()}\n{blob}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def url(self, base_url: str, method: str, blob: str, expires_at: datetime) -> str:
        """``base_url`` is the host root (no ``/v2``); the storage routes live beside the API, not under it."""
        expires = int(expires_at.timestamp())
        query = urlencode({"sv": SV, "se": str(expires), "sig": self._sig(method, blob, expires)})
        return f"{base_url.rstrip('/')}/storage/{quote(blob)}?{query}"

    def verify(self, method: str, blob: str, expires: str, sig: str, now: datetime) -> bool:
        """False when the signature does not match or the link has expired (the caller answers 403)."""
        try:
            expires_at = int(expires)
        except ValueError:
            return False
        if not hmac.compare_digest(self._sig(method, blob, expires_at), sig):
            return False
        return now.timestamp() < expires_at
