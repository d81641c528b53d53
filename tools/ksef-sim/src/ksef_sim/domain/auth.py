"""Authentication records and rules (REFERENCE.md §3, §16): challenges, authentication operations, KSeF tokens.

Every transition is computed on read from stored instants and the simulator clock: a challenge expires
``challenge_ttl_s`` after it was issued, a KSeF token becomes ``Active`` ``TOKEN_ACTIVATION_DELAY`` after creation
and ``Revoked`` ``TOKEN_REVOCATION_DELAY`` after the revoke request, an operation shows 100 until its
``decided_at`` (submit + ``auth_processing_delay_s``) and its outcome after that (``settle``), and its status is
gone (410) after ``async_status_retention_s``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel

from ksef_sim.domain.permissions import context_blocked, effective_permissions, person_deceased
from ksef_sim.errors import KsefError
from ksef_sim.refs import REFERENCE_NUMBER_RE
from ksef_sim.security import Identifier
from ksef_sim.store import Record, Store

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The spec says a token "starts being active when its status changes to Active"; TEST activates it within a second
# or so. Zero keeps tests simple while the code still goes through Pending → Active on read.
TOKEN_ACTIVATION_DELAY = timedelta(0)
TOKEN_REVOCATION_DELAY = timedelta(0)

TOKEN_PERMISSIONS = (
    "InvoiceRead",
    "InvoiceWrite",
    "CredentialsRead",
    "CredentialsManage",
    "SubunitManage",
    "EnforcementOperations",
    "Introspection",
)
TOKEN_CONTEXT_TYPES = ("Nip", "InternalId")


def ms_since_epoch(instant: datetime) -> int:
    """Exact Unix milliseconds (integer arithmetic, so it always agrees with the truncated ISO timestamp)."""
    return (instant.astimezone(UTC) - EPOCH) // timedelta(milliseconds=1)


def truncate_to_ms(instant: datetime) -> datetime:
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


class Ident(BaseModel):
    """Stored form of :class:`Identifier`."""

    type: str
    value: str

    @classmethod
    def of(cls, identifier: Identifier) -> Ident:
        return cls(type=identifier.type, value=identifier.value)

    def identifier(self) -> Identifier:
        return Identifier(self.type, self.value)


# --- challenges ------------------------------------------------------------------------------------------------


class Challenge(Record):
    KIND = "auth_challenge"

    challenge: str
    timestamp: datetime
    client_ip: str
    used: bool = False

    def key(self) -> str:
        return self.challenge

    def expired(self, now: datetime, ttl: timedelta) -> bool:
        return now >= self.timestamp + ttl


def prune_challenges(store: Store, now: datetime, ttl: timedelta) -> None:
    """Forget challenges past their life; a forgotten challenge answers 21111 like an expired one."""
    for record in store.all(Challenge):
        if record.expired(now, ttl):
            store.delete(Challenge, record.key())


def consume_challenge(store: Store, challenge: str, now: datetime, ttl: timedelta) -> Challenge:
    """The challenge, marked used; 400 21111 when unknown, expired or already used (single use, §3.1)."""
    record = store.get(Challenge, challenge)
    if record is None:
        raise KsefError(21111, f"Wyzwanie {challenge} nie istnieje.")
    if record.expired(now, ttl):
        raise KsefError(21111, f"Wyzwanie {challenge} wygasło.")
    if record.used:
        raise KsefError(21111, f"Wyzwanie {challenge} zostało już wykorzystane.")
    record.used = True
    store.put(record)
    return record


# --- authentication operations ---------------------------------------------------------------------------------


class MethodInfo(BaseModel):
    method: str  # deprecated AuthenticationMethod enum
    category: str  # XadesSignature | NationalNode | Token | Other (also what access tokens carry as ``aum``)
    code: str
    display_name: str


TOKEN_METHOD = MethodInfo(method="Token", category="Token", code="token.ksef", display_name="Token KSeF")
QUALIFIED_SIGNATURE = MethodInfo(
    method="QualifiedSignature",
    category="XadesSignature",
    code="xades.qualified-signature",
    display_name="Podpis kwalifikowany",
)
QUALIFIED_SEAL = MethodInfo(
    method="QualifiedSeal", category="XadesSignature", code="xades.qualified-seal", display_name="Pieczęć kwalifikowana"
)
INTERNAL_CERTIFICATE = MethodInfo(
    method="InternalCertificate",
    category="XadesSignature",
    code="xades.internal-certificate",
    display_name="Certyfikat KSeF",
)

STATUS_DESCRIPTIONS = {
    100: "Uwierzytelnianie w toku",
    200: "Uwierzytelnianie zakończone sukcesem",
    415: "Uwierzytelnianie zakończone niepowodzeniem",
    425: "Uwierzytelnienie unieważnione",
    450: "Uwierzytelnianie zakończone niepowodzeniem z powodu błędnego tokenu",
    460: "Uwierzytelnianie zakończone niepowodzeniem z powodu błędu certyfikatu",
    470: "Uwierzytelnianie zakończone niepowodzeniem",
    480: "Uwierzytelnienie zablokowane",
    500: "Nieznany błąd",
    550: "Operacja została anulowana przez system",
}
NO_PERMISSIONS = "Brak przypisanych uprawnień"
REVOKED_DETAIL = "Uwierzytelnienie i powiązane refresh tokeny zostały unieważnione przez użytkownika"
DECEASED_DETAIL = "Próba wykorzystania metod autoryzacyjnych osoby zmarłej"
BLOCKED_DETAIL = (
    "Podejrzenie incydentu bezpieczeństwa. Skontaktuj się z Ministerstwem Finansów przez formularz zgłoszeniowy."
)
BAD_CHALLENGE = "Nieprawidłowe wyzwanie autoryzacyjne"
BAD_TOKEN = "Nieprawidłowy token"
BAD_TOKEN_TIME = "Nieprawidłowy czas tokena"
TOKEN_REVOKED = "Token unieważniony"
TOKEN_INACTIVE = "Token nieaktywny"
BAD_ENCODING = "Invalid token encoding"
CERT_INVALID = "Nieważny certyfikat"
CERT_UNTRUSTED = "Niezaufany łańcuch certyfikatów"
CERT_REVOKED = "Certyfikat odwołany"


@dataclass(frozen=True)
class Outcome:
    code: int
    details: tuple[str, ...] = ()


class AuthOperation(Record):
    """One authentication (``…-AU-…``): its result, and later the auth session its refresh token belongs to."""

    KIND = "auth_operation"

    reference_number: str
    start_date: datetime
    method: MethodInfo
    context: Ident
    subject: Ident | None = None
    # KSeF authenticates asynchronously (REFERENCE.md §3.5): nothing but 100 is shown before ``decided_at``, and a
    # client that redeems before it polled 200 gets 21301. A credential that fails is judged at submit; one that
    # checks out leaves ``awaiting_permissions`` set, and what its subject holds in the context is judged when the
    # processing ends (``settle``), as KSeF does: a grant revoked meanwhile ends the authentication in 415.
    # ``decided_at`` ``None``: shown at once (operations stored before the delay existed).
    status_code: int = 100
    status_details: list[str] = []
    decided_at: datetime | None = None
    awaiting_permissions: bool = False
    permission_limit: list[str] | None = None  # a KSeF token's permissions: at most these are granted
    ksef_token_reference: str | None = None
    allowed_ips: list[str] = []
    client_ip: str = ""
    # Not in the spec's status: lets tests tell which client (e.g. which gateway replica) authenticated.
    user_agent: str = ""
    redeemed_at: datetime | None = None
    last_token_refresh_date: datetime | None = None
    refresh_token_valid_until: datetime | None = None
    revoked_at: datetime | None = None

    def key(self) -> str:
        return self.reference_number

    def status(self, now: datetime) -> Outcome:
        """What ``GET /auth/{ref}`` shows; call ``settle`` first, or an operation due for its decision shows 100."""
        if self.revoked_at is not None:
            return Outcome(425, (REVOKED_DETAIL,))
        if self.awaiting_permissions or (self.decided_at is not None and now < self.decided_at):
            return Outcome(100)
        return Outcome(self.status_code, tuple(self.status_details))

    def gone(self, now: datetime, retention: timedelta) -> bool:
        return now >= self.start_date + retention

    def session_active(self, now: datetime, auth_token_ttl: timedelta) -> bool:
        """Listed by ``GET /auth/sessions``: successful, not revoked, and its tokens still obtainable or usable."""
        if self.status(now).code != 200:
            return False
        if self.redeemed_at is None:
            return now < self.start_date + auth_token_ttl
        return self.refresh_token_valid_until is not None and now < self.refresh_token_valid_until


def decide(
    store: Store, subject: Identifier, context: Identifier, now: datetime, limit: frozenset[str] | None
) -> tuple[Outcome, frozenset[str]]:
    """The final status once the credential itself checked out: 470, 480, 415 or 200 with the permissions held.

    ``limit`` narrows the subject's permissions (a KSeF token grants at most what it was created with).
    """
    if person_deceased(store, subject):
        return Outcome(470, (DECEASED_DETAIL,)), frozenset()
    if context_blocked(store, context):
        return Outcome(480, (BLOCKED_DETAIL,)), frozenset()
    permissions = effective_permissions(store, subject, context, now)
    if limit is not None:
        permissions = permissions & limit
    if not permissions:
        return Outcome(415, (NO_PERMISSIONS,)), frozenset()
    return Outcome(200), permissions


def settle(store: Store, operation: AuthOperation, now: datetime) -> None:
    """Give an operation whose processing time is over its final status (470, 480, 415 or 200), once."""
    if not operation.awaiting_permissions or operation.subject is None:
        return
    if operation.decided_at is not None and now < operation.decided_at:
        return
    limit = frozenset(operation.permission_limit) if operation.permission_limit is not None else None
    outcome, _ = decide(store, operation.subject.identifier(), operation.context.identifier(), now, limit)
    operation.status_code = outcome.code
    operation.status_details = list(outcome.details)
    operation.awaiting_permissions = False
    store.put(operation)


# --- KSeF tokens -----------------------------------------------------------------------------------------------


class TokenStatus(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    REVOKING = "Revoking"
    REVOKED = "Revoked"
    FAILED = "Failed"


class KsefToken(Record):
    """A KSeF token (``…-EC-…``). Only the SHA-256 of its secret part is kept: the token is shown once."""

    KIND = "ksef_token"

    reference_number: str
    secret_sha256: str
    author: Ident
    context: Ident
    description: str
    permissions: list[str]
    date_created: datetime
    last_use_date: datetime | None = None
    revoke_requested_at: datetime | None = None
    failed: bool = False

    def key(self) -> str:
        return self.reference_number

    def status(self, now: datetime) -> TokenStatus:
        if self.revoke_requested_at is not None:
            if now >= self.revoke_requested_at + TOKEN_REVOCATION_DELAY:
                return TokenStatus.REVOKED
            return TokenStatus.REVOKING
        if self.failed:
            return TokenStatus.FAILED
        if now >= self.date_created + TOKEN_ACTIVATION_DELAY:
            return TokenStatus.ACTIVE
        return TokenStatus.PENDING


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _context_part(context: Identifier) -> str:
    prefix = "nip" if context.type == "Nip" else "internalId"
    return f"{prefix}-{context.value}"


def new_token(
    reference_number: str,
    author: Identifier,
    context: Identifier,
    description: str,
    permissions: list[str],
    now: datetime,
) -> tuple[KsefToken, str]:
    """A new token record and its one-time plaintext ``{ref}|nip-{NIP}|{64 hex}`` (REFERENCE.md §16)."""
    secret = secrets.token_hex(32)
    record = KsefToken(
        reference_number=reference_number,
        secret_sha256=_secret_hash(secret),
        author=Ident.of(author),
        context=Ident.of(context),
        description=description,
        permissions=[p for p in TOKEN_PERMISSIONS if p in permissions],
        date_created=now,
    )
    return record, f"{reference_number}|{_context_part(context)}|{secret}"


def find_token(store: Store, plaintext: str) -> KsefToken | None:
    """The token whose plaintext this is (reference, context part and secret must all match)."""
    parts = plaintext.split("|")
    if len(parts) != 3 or not REFERENCE_NUMBER_RE.match(parts[0]):
        return None
    record = store.get(KsefToken, parts[0])
    if record is None or parts[1] != _context_part(record.context.identifier()):
        return None
    if not hmac.compare_digest(_secret_hash(parts[2]), record.secret_sha256):
        return None
    return record


def check_token_credential(
    store: Store, plaintext: bytes, challenge: Challenge, context: Identifier, now: datetime
) -> tuple[KsefToken | None, Outcome | None]:
    """Check the decrypted ``{ksefToken}|{timestampMs}``; a failure Outcome (450) or the Active token."""
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        return None, Outcome(450, (BAD_ENCODING,))
    token_text, sep, timestamp = text.rpartition("|")
    if not sep or not token_text:
        return None, Outcome(450, (BAD_ENCODING,))
    if timestamp.strip() != str(ms_since_epoch(challenge.timestamp)):
        return None, Outcome(450, (BAD_TOKEN_TIME,))
    record = find_token(store, token_text)
    if record is None:
        return None, Outcome(450, (BAD_TOKEN,))
    # The token has its context built in; authenticating it into another context is a bad token, not 415.
    if record.context.identifier() != context:
        return None, Outcome(450, (BAD_TOKEN,))
    status = record.status(now)
    if status in (TokenStatus.REVOKED, TokenStatus.REVOKING):
        return None, Outcome(450, (TOKEN_REVOKED,))
    if status is not TokenStatus.ACTIVE:
        return None, Outcome(450, (TOKEN_INACTIVE,))
    return record, None


def token_is_revoked(store: Store, reference_number: str | None, now: datetime) -> bool:
    if reference_number is None:
        return False
    record = store.get(KsefToken, reference_number)
    return record is None or record.status(now) in (TokenStatus.REVOKING, TokenStatus.REVOKED)


def current_permissions(store: Store, operation: AuthOperation, now: datetime) -> tuple[Outcome, frozenset[str]]:
    """Permissions for a new access token (redeem or refresh): the subject's current ones, ∩ the token's."""
    assert operation.subject is not None
    limit: frozenset[str] | None = None
    if operation.ksef_token_reference is not None:
        record = store.get(KsefToken, operation.ksef_token_reference)
        limit = frozenset(record.permissions) if record is not None else frozenset()
    return decide(store, operation.subject.identifier(), operation.context.identifier(), now, limit)


# --- shared helpers --------------------------------------------------------------------------------------------


def encode_continuation(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode("ascii")


def decode_continuation(token: str | None) -> int:
    """Offset from an ``x-continuation-token`` we issued; 400 21418 for anything else."""
    if not token:
        return 0
    try:
        data = json.loads(base64.b64decode(token, validate=True))
        offset = data["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KsefError(21418) from exc
    if not isinstance(offset, int) or offset < 0:
        raise KsefError(21418)
    return offset


def ip_rules(addresses: list[str] | None, ranges: list[str] | None, masks: list[str] | None) -> tuple[str, ...]:
    """``allowedIps`` as the rules ``deps.access`` enforces (addresses, ``a-b`` ranges, CIDR masks)."""
    return tuple([*(addresses or []), *(ranges or []), *(masks or [])])
