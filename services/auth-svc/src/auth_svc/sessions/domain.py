"""Rules of signing in without I/O: TOTP codes."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Any

import pyotp
from sqlalchemy import Row

from auth_svc.crypto import SecretBox


def totp_aad(user_id: uuid.UUID) -> str:
    """Binds an encrypted TOTP seed to its user: a seed copied to another row does not decrypt."""
    return f"totp:{user_id}"


def totp_step(box: SecretBox, user: Row[Any], code: str | None, now: datetime) -> int | None:
    """The time step the code belongs to (one step of drift either way), if valid and not used before."""
    if not code or not user.totp_secret_enc:
        return None
    code = code.strip()
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(box.decrypt(user.totp_secret_enc, aad=totp_aad(user.id)).decode())
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if user.totp_last_counter is not None and step <= user.totp_last_counter:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
