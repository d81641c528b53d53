"""Records shared between parts of the simulator: the accepted invoice is written by the sending side (online
and batch sessions, seeding) and read by the receiving side (metadata query, download, export)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import BaseModel

from ksef_sim.store import Record


class PartyIdentifier(BaseModel):
    type: str  # Nip | VatUe | Other | None (buyer); + InternalId for third subjects
    value: str | None = None


class ThirdSubject(BaseModel):
    identifier: PartyIdentifier
    name: str | None = None
    role: int  # 0 = RolaInna, 1–11 per FA(3) Podmiot3/Rola


class AuthorizedSubject(BaseModel):
    nip: str
    name: str | None = None
    role: int  # 1–3


class FormCode(BaseModel):
    systemCode: str
    schemaVersion: str
    value: str


class StoredInvoice(Record):
    """An invoice KSeF accepted (status 200, KSeF number assigned). The raw XML is blob ``invoice/{ksef_number}``.

    Time-driven visibility (REFERENCE.md §9): ``permanent_storage_date`` is when it was written to permanent storage
    (``acquisition_date`` + the configured lag); ``indexed_at`` ≥ ``permanent_storage_date`` is when it becomes
    visible to PermanentStorage queries and exports. ``permanentStorageHwmDate`` is the instant before which every
    record is already indexed, so a client that trusts only the HWM never misses a late-indexed invoice.
    Before ``acquisition_date`` the invoice does not exist for anybody but its session.
    """

    KIND = "invoice"

    ksef_number: str
    invoice_number: str  # P_2
    issue_date: date  # P_1
    invoicing_date: datetime  # accepted for processing (send time online, session open time in batch)
    acquisition_date: datetime  # KSeF number assigned; the legal receipt date
    permanent_storage_date: datetime
    indexed_at: datetime
    seller_nip: str
    seller_name: str | None = None
    buyer_identifier: PartyIdentifier
    buyer_name: str | None = None
    net_amount: Decimal
    vat_amount: Decimal
    gross_amount: Decimal
    currency: str
    invoicing_mode: str  # Online | Offline
    invoice_type: str  # Vat | Kor | Zal | Roz | Upr | KorZal | KorRoz | ...
    form_code: FormCode
    is_self_invoicing: bool = False
    has_attachment: bool = False
    invoice_hash: str  # b64 SHA-256 of the exact bytes received
    invoice_size: int
    hash_of_corrected_invoice: str | None = None
    corrected_invoice_ksef_number: str | None = None  # from DaneFaKorygowanej, when a correction names one
    third_subjects: list[ThirdSubject] = []
    authorized_subject: AuthorizedSubject | None = None
    # Where it came from (for the sender's session views and duplicate reporting).
    session_reference_number: str
    invoice_reference_number: str
    context_type: str
    context_value: str

    def key(self) -> str:
        return self.ksef_number

    @property
    def blob_name(self) -> str:
        return f"invoice/{self.ksef_number}"


def storage_times(
    acquisition_date: datetime, delay_s: float, jitter_s: float, rng_value: float
) -> tuple[datetime, datetime]:
    """``(permanent_storage_date, indexed_at)`` for an invoice acquired at ``acquisition_date``.

    ``rng_value`` in [0, 1) spreads the indexing lag over ``jitter_s``, so records become visible out of
    ``permanentStorageDate`` order, which is what makes the HWM necessary (REFERENCE.md §9). Every writer of
    ``StoredInvoice`` (sessions, seeding) uses this, and the query side computes the HWM as ``now - jitter_s``.
    """
    from datetime import timedelta

    permanent = acquisition_date + timedelta(seconds=delay_s)
    return permanent, permanent + timedelta(seconds=jitter_s * rng_value)
