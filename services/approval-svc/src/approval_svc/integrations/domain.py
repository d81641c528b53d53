"""Rules of the office-client integration without I/O: the lifecycle, consent links and activation codes.

The handshake follows the Streamsoft + Firmino model (../shared/context/): the office asks, a person at the
client consents on a page reached by a one-time link, an activation code goes to the office's return address,
and the office enters it. Both secrets are random, stored only as hashes, expire, and die when used; the code
also locks after ``max_attempts`` wrong entries, after which only a renewed request helps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "ACTIVATION_ALPHABET",
    "ActivationCode",
    "ConsentLink",
    "IntegrationError",
    "IntegrationState",
    "Side",
    "Transition",
    "check_transition",
]


class IntegrationState(StrEnum):
    REQUESTED = "requested"
    CONSENTED = "consented"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    REFUSED = "refused"
    EXPIRED = "expired"


class Side(StrEnum):
    OFFICE = "office"
    CLIENT = "client"
    PLATFORM = "platform"


class Transition(StrEnum):
    CONSENT = "consent"
    REFUSE = "refuse"
    ACTIVATE = "activate"
    SUSPEND = "suspend"
    RESUME = "resume"
    REVOKE = "revoke"
    EXPIRE = "expire"
    RENEW = "renew"


S = IntegrationState
_ALLOWED: dict[Transition, tuple[frozenset[IntegrationState], IntegrationState]] = {
    Transition.CONSENT: (frozenset({S.REQUESTED}), S.CONSENTED),
    Transition.REFUSE: (frozenset({S.REQUESTED}), S.REFUSED),
    Transition.ACTIVATE: (frozenset({S.CONSENTED}), S.ACTIVE),
    Transition.SUSPEND: (frozenset({S.ACTIVE}), S.SUSPENDED),
    Transition.RESUME: (frozenset({S.SUSPENDED}), S.ACTIVE),
    Transition.REVOKE: (frozenset({S.REQUESTED, S.CONSENTED, S.ACTIVE, S.SUSPENDED}), S.REVOKED),
    Transition.EXPIRE: (frozenset({S.REQUESTED, S.CONSENTED}), S.EXPIRED),
    # A new link (and later a new code) for a request that went nowhere, or a new start after an end.
    Transition.RENEW: (frozenset({S.REQUESTED, S.CONSENTED, S.REFUSED, S.EXPIRED, S.REVOKED}), S.REQUESTED),
}


class IntegrationError(Exception):
    """A refused step: ``code`` names it for problem documents and pages, the message says what to do."""

    def __init__(self, code: str, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def check_transition(
    state: IntegrationState, transition: Transition, *, side: Side, suspended_by: Side | None = None
) -> IntegrationState:
    """The state after ``transition``; ``IntegrationError`` when the lifecycle does not allow it."""
    sources, target = _ALLOWED[transition]
    if state not in sources:
        raise IntegrationError(
            "invalid-transition",
            f"An integration that is {state} cannot {transition} (allowed from: " + ", ".join(sorted(sources)) + ").",
        )
    if transition in (Transition.ACTIVATE, Transition.RENEW) and side is not Side.OFFICE:
        raise IntegrationError("office-only", f"Only the office can {transition} the integration.", status=403)
    if transition in (Transition.CONSENT, Transition.REFUSE) and side is not Side.CLIENT:
        raise IntegrationError("client-only", f"Only the client can {transition}.", status=403)
    # A suspension is lifted by the side that imposed it: a client that paused access is not overruled.
    if transition is Transition.RESUME and suspended_by is not None and side is not suspended_by:
        raise IntegrationError(
            "suspended-by-other-side",
            f"The {suspended_by} suspended this integration; only it can resume it.",
            status=403,
        )
    return target


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class ConsentLink:
    """A 256-bit random token in the consent page's URL; only its SHA-256 is stored (a guess is hopeless, so a
    fast hash suffices, and lookups by hash stay one indexed query)."""

    token: str
    digest: str

    @classmethod
    def new(cls) -> ConsentLink:
        token = secrets.token_urlsafe(32)
        return cls(token, _digest(token))

    @staticmethod
    def digest_of(token: str) -> str:
        return _digest(token.strip())


# 31 symbols without 0/O and 1/I/L, so a code read aloud over the phone or copied by hand is not mistyped:
# 10 symbols are 49.5 bits (the issue asks for at least 40).
ACTIVATION_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
ACTIVATION_LENGTH = 10
ACTIVATION_GROUP = 5
# scrypt, because the code space (2^49.5) is small enough for an offline search of a leaked plain hash; a
# verification is one of at most ``max_attempts`` per code, so ~50 ms each costs nothing.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True)
class ActivationCode:
    code: str

    @classmethod
    def new(cls) -> ActivationCode:
        return cls("".join(secrets.choice(ACTIVATION_ALPHABET) for _ in range(ACTIVATION_LENGTH)))

    @property
    def display(self) -> str:
        """Grouped for reading aloud: ``ABCDE-FGH23``."""
        return "-".join(self.code[i : i + ACTIVATION_GROUP] for i in range(0, len(self.code), ACTIVATION_GROUP))

    @staticmethod
    def normalise(entered: str) -> str:
        """What a person typed, without spaces or dashes, in capitals."""
        return "".join(ch for ch in entered.upper() if ch not in " -\t")

    def hash(self) -> tuple[str, str]:
        """(salt, hash) to store; the code itself is never stored."""
        salt = secrets.token_hex(16)
        return salt, _scrypt(self.code, salt)

    @classmethod
    def matches(cls, entered: str, salt: str, stored: str) -> bool:
        candidate = cls.normalise(entered)
        if len(candidate) != ACTIVATION_LENGTH or any(ch not in ACTIVATION_ALPHABET for ch in candidate):
            # Still hashed: a malformed entry takes as long as a wrong one.
            candidate = "?" * ACTIVATION_LENGTH
        return hmac.compare_digest(_scrypt(candidate, salt), stored)


def _scrypt(code: str, salt: str) -> str:
    return hashlib.scrypt(code.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


@dataclass(frozen=True)
class CodeCheck:
    """The state of an activation code at the moment somebody enters one."""

    expires_at: datetime | None
    attempts: int
    max_attempts: int

    def refusal(self, now: datetime) -> IntegrationError | None:
        if self.expires_at is None:
            return IntegrationError("no-code", "This integration has no activation code: the client has not consented.")
        if self.attempts >= self.max_attempts:
            return IntegrationError(
                "code-locked",
                f"The activation code is locked after {self.max_attempts} wrong attempts; renew the request.",
                status=423,
            )
        if now >= self.expires_at:
            return IntegrationError("code-expired", "The activation code has expired; renew the request.", status=410)
        return None


def expires(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
