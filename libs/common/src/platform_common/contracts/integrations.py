"""The office-client integration's lifecycle, published by approval-svc (the one owner of that state).

    requested -> consented -> active <-> suspended
        |            |          |           |
        +-> refused  +-> expired+-----------+-> revoked

Every change is one event on the single topic ``integration.changed`` with the client NIP as key, so one
client's changes stay in order for every consumer. Each also carries the integration's ``revision`` (1, 2, ...
per integration): a projection applies an event only when it is newer than what it holds, which keeps it
right under redelivery and replays. ``state`` is the state *after* the change, so a consumer that needs only
"may this office read this client now" looks at ``state`` and ignores the type.

Two events carry a secret, sealed to notify-svc's public key (``platform_common.sealing``, ``info`` = the event
type), because the outbox and the topic keep them for their whole retention:
- ``integration.consent_requested``: the one-time link to the consent page (mailed to the client);
- ``integration.consented``: the activation code (mailed to the office's return address) in ``sealed_code``;
  its ``sealed_link`` is the office's activation form and is not a secret by itself.
approval-svc keeps only hashes of both.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from platform_common.contracts.invoices import NIP_PATTERN
from platform_common.contracts.users import SealedLinkEvent
from platform_common.messaging.envelope import EventContract
from platform_common.sealing import SealingError, seal, unseal

IntegrationState = Literal["requested", "consented", "active", "suspended", "revoked", "refused", "expired"]
# How the office's platform gets into KSeF in the client's context (REFERENCE.md §15): the client granted the
# office's NIP InvoiceRead/InvoiceWrite (the office's own certificate then works in the client's context), or
# the client handed over a KSeF token of its own context.
AccessMode = Literal["grant", "token"]
# Who made a change: somebody of the office, somebody of the client, or the platform (an expiry).
Side = Literal["office", "client", "platform"]

INTEGRATION_TOPIC = "integration.changed"
# The states in which the office may read the client's data.
READABLE_STATES: frozenset[str] = frozenset({"active"})


class IntegrationChange(EventContract):
    topic: ClassVar[str] = INTEGRATION_TOPIC

    integration_id: uuid.UUID
    revision: int = Field(ge=1)
    state: IntegrationState
    office_id: uuid.UUID
    office_nip: str = Field(pattern=NIP_PATTERN)
    office_name: str
    client_nip: str = Field(pattern=NIP_PATTERN)
    # Reading purchase invoices, decisions and descriptions is always asked; sending sales invoices is optional.
    send_sales: bool = False
    access_mode: AccessMode | None = None
    changed_at: datetime
    changed_by_side: Side
    # The acting user's id, or the e-mail address that followed a consent link; never a secret.
    changed_by: str | None = None


class IntegrationConsentRequested(IntegrationChange, SealedLinkEvent):
    event_type: ClassVar[str] = "integration.consent_requested"
    event_version: ClassVar[int] = 1

    client_email: str
    return_email: str
    # The name the office knows the client by (auth-svc names a company it has not met yet with it).
    client_name: str | None = None


class IntegrationConsented(IntegrationChange, SealedLinkEvent):
    event_type: ClassVar[str] = "integration.consented"
    event_version: ClassVar[int] = 1

    return_email: str
    # The address the consent link went to: auth-svc invites that person as the owner of a company nobody of
    # which is on the platform yet (``None`` when a signed-in user of the company consented).
    client_email: str | None = None
    client_language: Literal["pl", "en"] | None = None
    sealed_code: str = Field(pattern=r"^hpke1\.[A-Za-z0-9_-]+$")
    code_expires_at: datetime
    # The return address's language (the office chose it with the request).
    return_language: Literal["pl", "en"] | None = None

    @classmethod
    def seal_code(cls, public_key: str, code: str) -> str:
        return seal(public_key, code.encode(), info=f"{cls.event_type}#code".encode())

    def open_code(self, private_key: str) -> str:
        return self.open_sealed_code(private_key, self.sealed_code)

    @classmethod
    def open_sealed_code(cls, private_key: str, sealed_code: str) -> str:
        """The code in the clear; raises ``SealingError`` unless sealed to this key as this event's code."""
        opened = unseal(private_key, sealed_code, info=f"{cls.event_type}#code".encode())
        try:
            return opened.decode()
        except UnicodeDecodeError as exc:
            raise SealingError("the sealed text is not an activation code") from exc


class IntegrationRefused(IntegrationChange):
    event_type: ClassVar[str] = "integration.refused"
    event_version: ClassVar[int] = 1

    # notify-svc tells the office at the return address, in its language.
    return_email: str
    return_language: Literal["pl", "en"] | None = None
    # The name the office gave the client with the request (additive within the version).
    client_name: str | None = None


class IntegrationActivated(IntegrationChange):
    event_type: ClassVar[str] = "integration.activated"
    event_version: ClassVar[int] = 1


class IntegrationSuspended(IntegrationChange):
    event_type: ClassVar[str] = "integration.suspended"
    event_version: ClassVar[int] = 1


class IntegrationResumed(IntegrationChange):
    event_type: ClassVar[str] = "integration.resumed"
    event_version: ClassVar[int] = 1


class IntegrationRevoked(IntegrationChange):
    event_type: ClassVar[str] = "integration.revoked"
    event_version: ClassVar[int] = 1


class IntegrationExpired(IntegrationChange):
    """A request nobody answered in time, or a code nobody entered in time (or locked by wrong attempts)."""

    event_type: ClassVar[str] = "integration.expired"
    event_version: ClassVar[int] = 1


INTEGRATION_EVENTS: tuple[type[IntegrationChange], ...] = (
    IntegrationConsentRequested,
    IntegrationConsented,
    IntegrationRefused,
    IntegrationActivated,
    IntegrationSuspended,
    IntegrationResumed,
    IntegrationRevoked,
    IntegrationExpired,
)


def parse_integration_change(event_type: str, version: int, payload: dict[str, object]) -> IntegrationChange | None:
    """The event as its contract, or ``None`` for a type this topic does not carry (a newer producer's)."""
    for contract in INTEGRATION_EVENTS:
        if contract.event_type == event_type and contract.event_version == version:
            return contract.model_validate(payload)
    return None


# ---- delegated KSeF access, published by ksef-gateway -------------------------------------------------------

CREDENTIAL_ACCESS_TOPIC = "credential.access"


class CredentialAccessChange(EventContract):
    """The gateway's live check of how it gets into a client's context changed its answer."""

    topic: ClassVar[str] = CREDENTIAL_ACCESS_TOPIC

    client_nip: str = Field(pattern=NIP_PATTERN)
    access_mode: AccessMode
    # The office whose certificate works in the client's context (``grant``); ``None`` for a token.
    office_nip: str | None = Field(default=None, pattern=NIP_PATTERN)
    checked_at: datetime
    # KSeF's refusal (e.g. 21301/21302, REFERENCE.md) or the permission found missing, for a person to read.
    reason: str | None = None
    ksef_code: int | None = None


class CredentialAccessVerified(CredentialAccessChange):
    event_type: ClassVar[str] = "credential.access_verified"
    event_version: ClassVar[int] = 1


class CredentialAccessLost(CredentialAccessChange):
    event_type: ClassVar[str] = "credential.access_lost"
    event_version: ClassVar[int] = 1


__all__ = [
    "CREDENTIAL_ACCESS_TOPIC",
    "INTEGRATION_EVENTS",
    "INTEGRATION_TOPIC",
    "READABLE_STATES",
    "AccessMode",
    "CredentialAccessChange",
    "CredentialAccessLost",
    "CredentialAccessVerified",
    "IntegrationActivated",
    "IntegrationChange",
    "IntegrationConsentRequested",
    "IntegrationConsented",
    "IntegrationExpired",
    "IntegrationRefused",
    "IntegrationResumed",
    "IntegrationRevoked",
    "IntegrationState",
    "IntegrationSuspended",
    "Side",
    "parse_integration_change",
]
