"""The public events: which contracts leave the platform (webhooks to ERP systems, the AsyncAPI catalogue) and in
what shape. The one source of truth for both: notify-svc builds every webhook body with ``public_data`` and the
catalogue from ``PUBLIC_EVENTS``, so a field that is published is documented and the other way round.

A public event is its contract minus the fields that must never leave: sealed links and activation codes (opened
only by notify-svc into one e-mail), people's e-mail addresses (whom the platform mails is its business), and
bulky lists (a month's documents can run to megabytes: the receiver reads them from the API behind ``links``).
Events that exist only to mail one person (an invitation, a password reset) are not public at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from platform_common.contracts.integrations import (
    CredentialAccessLost,
    CredentialAccessVerified,
    IntegrationActivated,
    IntegrationConsented,
    IntegrationConsentRequested,
    IntegrationExpired,
    IntegrationRefused,
    IntegrationResumed,
    IntegrationRevoked,
    IntegrationSuspended,
)
from platform_common.contracts.invoices import InvoiceFetched, InvoiceSent, Party, SendingMode
from platform_common.contracts.months import MonthApproved, MonthLateArrival, MonthUnlocked
from platform_common.contracts.outages import (
    DeadlineAlert,
    KsefOutageEnded,
    KsefOutageStarted,
    OutageKind,
    OutageSource,
    SalesDeadlineAlerted,
)
from platform_common.contracts.status import DocumentKind, StatusChanged
from platform_common.contracts.webhooks import WebhookSubscriptionDisabled
from platform_common.messaging.envelope import EventContract

# Never published, whatever the event: secrets (sealed, but still not the receiver's) and e-mail addresses.
_PRIVATE = frozenset(
    {"sealed_link", "sealed_code", "client_email", "return_email", "recipients", "client_language", "return_language"}
)


@dataclass(frozen=True)
class PublicEvent:
    contract: type[EventContract]
    summary_en: str
    summary_pl: str
    example: EventContract
    # Besides the private fields: left out because the API serves them (``link``), or internal references.
    omit: frozenset[str] = frozenset()
    # Where the receiver reads the whole resource: an API path (below the platform's public URL), formatted with
    # the event's payload and the envelope's client NIP as ``client_nip``.
    link: str | None = None
    # Who receives it: ``client`` (the client company and the offices reading it now), ``office`` (the office
    # named by the event, even when it may no longer read the client: it must learn of a revoke), ``platform``
    # (every subscriber: KSeF availability), ``organisation`` (only the organisation named by the event).
    audience: str = "client"
    omitted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "omitted", (_PRIVATE | self.omit) & set(self.contract.model_fields))

    @property
    def event_type(self) -> str:
        return self.contract.event_type

    @property
    def event_version(self) -> int:
        return self.contract.event_version

    def json_schema(self) -> dict[str, Any]:
        """The contract's JSON schema without the fields that are not published."""
        schema = self.contract.model_json_schema(mode="serialization")
        properties = schema.get("properties", {})
        for name in self.omitted:
            properties.pop(name, None)
        if "required" in schema:
            schema["required"] = [r for r in schema["required"] if r not in self.omitted]
        if "$defs" in schema:
            # An omitted field's models (a month's recipients with their e-mail addresses) must not be described
            # either: keep only the definitions still reachable from what is published.
            schema["$defs"] = _reachable_defs(schema)
            if not schema["$defs"]:
                del schema["$defs"]
        return schema


def _reachable_defs(schema: dict[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = schema["$defs"]
    reachable: dict[str, Any] = {}
    pending = [{k: v for k, v in schema.items() if k != "$defs"}]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                name = ref.removeprefix("#/$defs/")
                if name in defs and name not in reachable:
                    reachable[name] = defs[name]
                    pending.append(defs[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return {name: defs[name] for name in defs if name in reachable}


_NIP = "5260250274"
_OFFICE_NIP = "7010002137"
_OFFICE = uuid.UUID("0b8f3c2e-6d1a-4c55-9e0f-3a2b1c4d5e6f")
_INTEGRATION = uuid.UUID("3e9d7a10-2b4c-4f8e-9a1d-5c6b7e8f9a0b")
_KSEF_NUMBER = "5260250274-20261204-0A1B2C3D4E5F-7A"
_AT = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


def _integration_fields(state: str, side: str = "client") -> dict[str, Any]:
    return {
        "integration_id": _INTEGRATION,
        "revision": 3,
        "state": state,
        "office_id": _OFFICE,
        "office_nip": _OFFICE_NIP,
        "office_name": "Biuro Rachunkowe Kowalski",
        "client_nip": _NIP,
        "send_sales": True,
        "access_mode": "grant",
        "changed_at": _AT,
        "changed_by_side": side,
    }


_MONTHS = "/approval/clients/{client_nip}/months/{period}"
_INTEGRATION_LINK = "/approval/integrations/{integration_id}"

_EVENTS: tuple[PublicEvent, ...] = (
    PublicEvent(
        InvoiceFetched,
        "A purchase invoice was downloaded from KSeF.",
        "Faktura zakupowa została pobrana z KSeF.",
        InvoiceFetched(
            ksef_number=_KSEF_NUMBER,
            client_nip=_NIP,
            seller=Party(nip="7010002137", name="Hurtownia Papiernicza Sp. z o.o."),
            buyer=Party(nip=_NIP, name="Piekarnia Nowak"),
            p_1=date(2026, 12, 3),
            p_2="FV/2026/12/0042",
            net_amount=Decimal("1000.00"),
            vat_amount=Decimal("230.00"),
            gross_amount=Decimal("1230.00"),
            currency="PLN",
            invoice_type="VAT",
            acquisition_date=_AT,
            invoice_hash="n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
            xml_ref=f"gateway:{_NIP}/{_KSEF_NUMBER}",
        ),
        omit=frozenset({"xml_ref"}),
        link="/gateway/clients/{client_nip}/invoices/{ksef_number}/xml",
    ),
    PublicEvent(
        InvoiceSent,
        "A sales invoice was accepted by KSeF: its KSeF number and verification link.",
        "Faktura sprzedażowa została przyjęta przez KSeF: numer KSeF i link weryfikacyjny.",
        InvoiceSent(
            invoice_id="0f0e0d0c-0b0a-4909-8807-060504030201",
            ksef_number=_KSEF_NUMBER,
            client_nip=_NIP,
            p_2="FV/2026/12/0007",
            mode=SendingMode.ONLINE,
            upo_reference="20261204-SO-1A2B3C4D5E-6F7A8B9C0D-E1",
            accepted_at=_AT,
        ),
        link="/gateway/clients/{client_nip}/sales/{invoice_id}",
    ),
    PublicEvent(
        StatusChanged,
        "A document's status moved (a sales invoice in KSeF, a purchase invoice's decision in the buffer).",
        "Zmienił się status dokumentu (faktury sprzedażowej w KSeF, decyzja o fakturze zakupowej w buforze).",
        StatusChanged(
            document_kind=DocumentKind.PURCHASE,
            document_id="7d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            ksef_number=_KSEF_NUMBER,
            previous_status="unverified",
            status="book",
            changed_at=_AT,
            period="2026-12",
            revision=2,
            decision="book",
            changed_by_side="client",
        ),
    ),
    PublicEvent(
        MonthApproved,
        "A client approved a month: its documents are ready to book.",
        "Klient zatwierdził miesiąc: dokumenty są gotowe do zaksięgowania.",
        MonthApproved(
            client_nip=_NIP,
            period="2026-11",
            approved_by="4f2c9a7e-1b3d-4e5f-8a6b-7c8d9e0f1a2b",
            approved_at=_AT,
            book_count=41,
            dont_book_count=2,
            revision=4,
            client_name="Piekarnia Nowak",
        ),
        omit=frozenset({"documents"}),
        link=_MONTHS,
    ),
    PublicEvent(
        MonthUnlocked,
        "A client reopened an approved month.",
        "Klient odblokował zatwierdzony miesiąc.",
        MonthUnlocked(
            client_nip=_NIP,
            period="2026-11",
            revision=5,
            unlocked_by="4f2c9a7e-1b3d-4e5f-8a6b-7c8d9e0f1a2b",
            unlocked_at=_AT,
            client_name="Piekarnia Nowak",
        ),
        link=_MONTHS,
    ),
    PublicEvent(
        MonthLateArrival,
        "A purchase invoice dated in an approved month arrived after the approval.",
        "Do zatwierdzonego miesiąca wpłynęła faktura po zatwierdzeniu.",
        MonthLateArrival(
            client_nip=_NIP,
            period="2026-11",
            ksef_number=_KSEF_NUMBER,
            late_arrivals=1,
            arrived_at=_AT,
            client_name="Piekarnia Nowak",
        ),
        link=_MONTHS,
    ),
    PublicEvent(
        IntegrationConsentRequested,
        "An office asked a client for consent to integrate.",
        "Biuro poprosiło klienta o zgodę na integrację.",
        IntegrationConsentRequested(
            **_integration_fields("requested", "office"),
            client_email="anna.nowak@example.com",
            return_email="biuro@example.com",
            client_name="Piekarnia Nowak",
            sealed_link="hpke1.example",
            expires_at=datetime(2026, 12, 18, 9, 30, tzinfo=UTC),
        ),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationConsented,
        "The client consented; the office receives the activation code by e-mail.",
        "Klient wyraził zgodę; biuro otrzymuje kod aktywacyjny e-mailem.",
        IntegrationConsented(
            **_integration_fields("consented"),
            return_email="biuro@example.com",
            sealed_code="hpke1.example",
            code_expires_at=datetime(2026, 12, 5, 9, 30, tzinfo=UTC),
            sealed_link="hpke1.example",
            expires_at=datetime(2026, 12, 5, 9, 30, tzinfo=UTC),
        ),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationRefused,
        "The client refused the office's request.",
        "Klient odmówił zgody biuru.",
        IntegrationRefused(**_integration_fields("refused"), return_email="biuro@example.com"),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationActivated,
        "The office entered the activation code: it reads the client's invoices from now on.",
        "Biuro wpisało kod aktywacyjny: od teraz odczytuje faktury klienta.",
        IntegrationActivated(**_integration_fields("active", "office")),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationSuspended,
        "The integration was suspended: the office reads nothing until it is resumed.",
        "Integracja została wstrzymana: biuro nic nie odczytuje do wznowienia.",
        IntegrationSuspended(**_integration_fields("suspended")),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationResumed,
        "A suspended integration was resumed.",
        "Wstrzymana integracja została wznowiona.",
        IntegrationResumed(**_integration_fields("active")),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationRevoked,
        "The integration was revoked: the office has lost access to the client.",
        "Integracja została odwołana: biuro utraciło dostęp do klienta.",
        IntegrationRevoked(**_integration_fields("revoked")),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        IntegrationExpired,
        "A request or activation code expired unused.",
        "Prośba lub kod aktywacyjny wygasły bez użycia.",
        IntegrationExpired(**_integration_fields("expired", "platform")),
        link=_INTEGRATION_LINK,
        audience="office",
    ),
    PublicEvent(
        CredentialAccessVerified,
        "The gateway's check found its way into the client's KSeF context working.",
        "Kontrola bramki potwierdziła dostęp do kontekstu KSeF klienta.",
        CredentialAccessVerified(client_nip=_NIP, access_mode="grant", office_nip=_OFFICE_NIP, checked_at=_AT),
    ),
    PublicEvent(
        CredentialAccessLost,
        "The gateway lost access to the client's KSeF context (a permission withdrawn, a token revoked or expired).",
        "Bramka utraciła dostęp do kontekstu KSeF klienta (cofnięte uprawnienie, odwołany lub wygasły token).",
        CredentialAccessLost(
            client_nip=_NIP,
            access_mode="grant",
            office_nip=_OFFICE_NIP,
            checked_at=_AT,
            reason="InvoiceRead permission no longer granted",
            ksef_code=21301,
        ),
    ),
    PublicEvent(
        KsefOutageStarted,
        "KSeF became unavailable (announced by Latarnia, or found unreachable by the gateway).",
        "KSeF stał się niedostępny (ogłoszone przez Latarnię lub wykryte przez bramkę).",
        KsefOutageStarted(
            outage_id="latarnia-1042",
            kind=OutageKind.FAILURE,
            source=OutageSource.LATARNIA,
            started_at=_AT,
            latarnia_event_id=1042,
            message="Awaria KSeF",
        ),
        audience="platform",
    ),
    PublicEvent(
        KsefOutageEnded,
        "A KSeF outage ended.",
        "Niedostępność KSeF się zakończyła.",
        KsefOutageEnded(
            outage_id="latarnia-1042",
            kind=OutageKind.FAILURE,
            source=OutageSource.LATARNIA,
            started_at=_AT,
            ended_at=datetime(2026, 12, 4, 11, 0, tzinfo=UTC),
            latarnia_event_id=1042,
        ),
        audience="platform",
    ),
    PublicEvent(
        SalesDeadlineAlerted,
        "A sales invoice issued offline is close to, or past, its legal deadline for reaching KSeF.",
        "Faktura wystawiona offline zbliża się do ustawowego terminu przesłania do KSeF lub go przekroczyła.",
        SalesDeadlineAlerted(
            invoice_id="0f0e0d0c-0b0a-4909-8807-060504030201",
            invoice_number="FV/2026/12/0008",
            offline_mode="offline24",
            deadline=date(2026, 12, 5),
            alert=DeadlineAlert.APPROACHING,
            status="queued",
        ),
        link="/gateway/clients/{client_nip}/sales/{invoice_id}",
    ),
    PublicEvent(
        WebhookSubscriptionDisabled,
        "A webhook subscription of the organisation kept failing and was disabled.",
        "Subskrypcja webhooka organizacji stale zawodziła i została wyłączona.",
        WebhookSubscriptionDisabled(
            subscription_id=uuid.UUID("5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"),
            organisation_id=_OFFICE,
            url="https://erp.example.com/ksef-hub/webhooks",
            disabled_at=_AT,
            failed_delivery_id=uuid.UUID("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"),
            failed_event_type="invoice.fetched",
            attempts=17,
            last_error="HTTP 503",
        ),
        link="/notify/webhooks/subscriptions/{subscription_id}",
        audience="organisation",
    ),
)

PUBLIC_EVENTS: Mapping[str, PublicEvent] = {e.event_type: e for e in _EVENTS}


def public_data(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event's payload as published (the private and omitted fields removed), or ``None`` for an event that
    is not public."""
    event = PUBLIC_EVENTS.get(event_type)
    if event is None:
        return None
    return {k: v for k, v in payload.items() if k not in event.omitted}


def public_link(event_type: str, payload: Mapping[str, Any], client_nip: str | None) -> str | None:
    """The API path of the event's resource, or ``None`` (no link, or a field it needs is missing)."""
    event = PUBLIC_EVENTS.get(event_type)
    if event is None or event.link is None:
        return None
    values = {**payload, "client_nip": client_nip or payload.get("client_nip")}
    try:
        # A missing value must fail (KeyError), not be formatted as "None" into the path.
        return event.link.format_map({k: v for k, v in values.items() if v is not None})
    except (KeyError, ValueError):
        return None


__all__ = ["PUBLIC_EVENTS", "PublicEvent", "public_data", "public_link"]
