from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from platform_common.messaging.envelope import EventContract

NIP_PATTERN = r"^[1-9]((\d[1-9])|([1-9]\d))\d{7}$"
KSEF_NUMBER_PATTERN = r"^\d{10}-\d{8}-[0-9A-F]{12}-[0-9A-F]{2}$"


class Party(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Foreign buyers/sellers may have no NIP (FA(3) BrakID / NrVatUE), hence optional.
    nip: str | None = None
    name: str | None = None


class InvoiceFetched(EventContract):
    """A purchase invoice was stored by the gateway (the client is Podmiot2, a Podmiot3 or PodmiotUpowazniony)."""

    event_type: ClassVar[str] = "invoice.fetched"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "invoice.fetched"

    ksef_number: str = Field(pattern=KSEF_NUMBER_PATTERN)
    client_nip: str = Field(pattern=NIP_PATTERN)
    subject_role: Literal["Subject2", "Subject3", "SubjectAuthorized"] = "Subject2"
    seller: Party
    buyer: Party
    p_1: date = Field(description="FA(3) P_1: issue date")
    p_2: str = Field(min_length=1, max_length=256, description="FA(3) P_2: the seller's invoice number")
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    invoice_type: str = Field(description="FA(3) RodzajFaktury: VAT, KOR, ZAL, ROZ, UPR, KOR_ZAL, KOR_ROZ")
    # Corrections (KOR*) name the invoice they correct (DaneFaKorygowanej): its KSeF number when it had one,
    # and the seller's number P_2 of it. Optional and additive within version 1: older producers leave them out.
    corrected_ksef_number: str | None = Field(default=None, max_length=64)  # may be a 36-char KSeF 1.0 number
    corrected_invoice_number: str | None = Field(default=None, max_length=256)
    acquisition_date: datetime
    permanent_storage_date: datetime | None = None
    # The VAT converted to PLN for a foreign-currency invoice (the sum of FA(3) P_14_xW, or KSeF's metadata); for a
    # PLN invoice the VAT itself. Optional and additive within version 1.
    vat_amount_pln: Decimal | None = None
    invoice_hash: str = Field(description="Base64 SHA-256 of the invoice XML as KSeF stores it")
    xml_ref: str = Field(description="The gateway's reference for fetching the raw XML")


class SendingMode(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class InvoiceSent(EventContract):
    """A sales invoice was accepted by KSeF."""

    event_type: ClassVar[str] = "invoice.sent"
    event_version: ClassVar[int] = 1
    topic: ClassVar[str] = "invoice.sent"

    invoice_id: str
    ksef_number: str = Field(pattern=KSEF_NUMBER_PATTERN)
    client_nip: str = Field(pattern=NIP_PATTERN)
    p_2: str
    mode: SendingMode
    upo_reference: str | None = None
    kod_i_url: str | None = Field(default=None, description="KOD I verification link (QR) of the invoice")
    accepted_at: datetime
