"""The event envelope: one JSON document per event, on every transport.

The envelope is the unit of idempotency (``id``), ordering (``key``, the client NIP where there is one) and
tracing (``trace`` holds the W3C ``traceparent``/``tracestate`` of the operation that produced the event, so
one trace spans HTTP request -> outbox -> broker -> consumer).
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

ENVELOPE_SCHEMA = "ksef-hub.envelope/1"


class EventContract(BaseModel):
    """Base of every versioned event payload. Subclasses set the three class variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    event_version: ClassVar[int]
    topic: ClassVar[str]


ContractT = TypeVar("ContractT", bound=EventContract)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = Field(ge=1)
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    producer: str
    # The accounting office the event belongs to, where there is one; the client NIP is the ordering key.
    tenant: str | None = None
    client_nip: str | None = None
    trace: dict[str, str] = Field(default_factory=dict)
    payload: dict[str, Any]

    @property
    def key(self) -> str:
        # One client's events stay ordered; events with no client are ordered per tenant, else unordered.
        return self.client_nip or self.tenant or str(self.id)

    @classmethod
    def wrap(
        cls,
        contract: EventContract,
        *,
        producer: str,
        client_nip: str | None = None,
        tenant: str | None = None,
        trace: dict[str, str] | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        return cls(
            id=event_id or uuid.uuid4(),
            type=contract.event_type,
            version=contract.event_version,
            producer=producer,
            tenant=tenant,
            client_nip=client_nip,
            trace=trace or {},
            payload=contract.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)

    def parse(self, contract: builtins.type[ContractT]) -> ContractT:
        if (self.type, self.version) != (contract.event_type, contract.event_version):
            raise UnsupportedEvent(
                f"expected {contract.event_type} v{contract.event_version}, got {self.type} v{self.version}"
            )
        return contract.model_validate(self.payload)


class UnsupportedEvent(ValueError):
    """The event is not one the consumer understands; retrying cannot help."""
