"""Sending sessions (online and batch) and the invoices sent in them: records and the status machine
(REFERENCE.md §4, §5, §6, §7).

Every transition is computed on read from the clock and stored instants, never by a background task:
- an invoice is verified when it arrives (its outcome is decided then) but shows 100 → 150 until
  ``final_at`` = receipt + ``invoice_processing_delay_s``, and only then its final status;
- an online session is open (100) until closed or ``valid_until`` (12 h) passes, then closed (170) until its last
  invoice is final, then 200 | 440 (nothing sent) | 445 (nothing accepted); 415 when the key failed to decrypt;
- a batch session is open (100) until closed, then processing (150) until ``processed_at`` = close +
  ``batch_processing_delay_s``, then 200 | 4xx; never closed before ``valid_until`` → 440. Its invoices are
  decided at close and become final at ``processed_at`` too.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from ksef_sim.errors import KsefError
from ksef_sim.records import FormCode
from ksef_sim.store import Record, Store

ONLINE = "Online"
BATCH = "Batch"

ONLINE_DESCRIPTIONS = {
    100: "Sesja interaktywna otwarta",
    170: "Sesja interaktywna zamknięta",
    200: "Sesja interaktywna przetworzona pomyślnie",
    415: "Błąd odszyfrowania dostarczonego klucza",
    440: "Sesja anulowana",
    445: "Błąd weryfikacji, brak poprawnych faktur",
}
BATCH_DESCRIPTIONS = {
    100: "Sesja wsadowa rozpoczęta",
    150: "Trwa przetwarzanie",
    200: "Sesja wsadowa przetworzona pomyślnie",
    405: "Błąd weryfikacji poprawności dostarczonych elementów paczki",
    415: "Błąd odszyfrowania dostarczonego klucza",
    420: "Przekroczony limit faktur w sesji",
    430: "Błąd dekompresji pierwotnego archiwum",
    435: "Błąd odszyfrowania zaszyfrowanych części archiwum",
    440: "Sesja anulowana",
    445: "Błąd weryfikacji, brak poprawnych faktur",
    500: "Nieznany błąd (500)",
}
INVOICE_DESCRIPTIONS = {
    100: "Faktura przyjęta do dalszego przetwarzania",
    150: "Trwa przetwarzanie",
    200: "Sukces",
    405: "Przetwarzanie anulowane z powodu błędu sesji",
    410: "Nieprawidłowy zakres uprawnień",
    415: "Brak możliwości wysyłania faktury z załącznikiem",
    430: "Błąd weryfikacji pliku faktury",
    435: "Błąd odszyfrowania pliku",
    440: "Duplikat faktury",
    450: "Błąd weryfikacji semantyki dokumentu faktury",
    500: "Nieznany błąd (500)",
    550: "Operacja została anulowana przez system",
}


@dataclass(frozen=True)
class Status:
    code: int
    description: str
    details: list[str] | None = None
    extensions: dict[str, str | None] | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "description": self.description}
        if self.details:
            body["details"] = self.details
        if self.extensions:
            body["extensions"] = self.extensions
        return body


class BatchPart(BaseModel):
    ordinal_number: int
    file_size: int
    file_hash: str


class UpoPage(BaseModel):
    reference_number: str  # …-EU-…
    page: int
    blob_name: str
    # False only for pages stored by a simulator that did not sign UPOs yet; they are signed on next use.
    signed: bool = False


class Session(Record):
    """An online or batch session. Outcome fields are filled when the session is processed."""

    KIND = "sending_session"

    reference_number: str
    session_type: str  # Online | Batch
    context_type: str
    context_value: str
    subject_type: str
    subject_value: str
    auth_reference_number: str
    ksef_token_reference: str | None = None
    form_code: FormCode
    created_at: datetime
    updated_at: datetime
    valid_until: datetime
    closed_at: datetime | None = None
    # AES key unwrapped at open; ``None`` with ``key_error`` when RSA-OAEP failed (status 415, §4).
    aes_key_b64: str | None = None
    iv_b64: str = ""
    key_error: bool = False
    invoice_refs: list[str] = []
    # Batch only.
    offline_mode: bool = False
    file_size: int = 0
    file_hash: str = ""
    compression_type: str | None = None
    parts: list[BatchPart] = []
    processed_at: datetime | None = None
    failure_code: int | None = None  # 405/415/420/430/435/500 from archive verification
    failure_details: list[str] | None = None
    upo_pages: list[UpoPage] = []

    def key(self) -> str:
        return self.reference_number

    def part_blob(self, ordinal: int) -> str:
        return f"batch/{self.reference_number}/{ordinal}"


class SessionInvoice(Record):
    """One invoice sent in a session, with the outcome decided on receipt (shown once ``final_at`` passes)."""

    KIND = "session_invoice"

    reference_number: str  # …-EE-…
    session_reference_number: str
    ordinal_number: int
    invoice_hash: str
    invoice_size: int
    invoice_file_name: str | None = None
    invoicing_date: datetime  # accepted for processing
    final_at: datetime
    code: int
    description: str
    details: list[str] | None = None
    extensions: dict[str, str | None] | None = None
    invoice_number: str | None = None
    ksef_number: str | None = None
    acquisition_date: datetime | None = None
    permanent_storage_date: datetime | None = None
    invoicing_mode: str | None = None
    offline_mode: bool = False
    hash_of_corrected_invoice: str | None = None
    corrected_by: str | None = None  # reference of the accepted technical correction (§8: only one)
    upo_ready: bool = False  # blob ``upo_blob`` written (lazily, on first need)
    upo_signed: bool = False  # False with ``upo_ready``: written unsigned by an older simulator, so made again
    context_type: str
    context_value: str

    def key(self) -> str:
        return self.reference_number

    @property
    def upo_blob(self) -> str:
        return f"upo/{self.session_reference_number}/invoices/{self.reference_number}.xml"

    def is_final(self, now: datetime) -> bool:
        return now >= self.final_at

    def status(self, now: datetime) -> Status:
        if not self.is_final(now):
            # First half of the processing window "received", second half "processing".
            half = self.invoicing_date + (self.final_at - self.invoicing_date) / 2
            code = 100 if now < half else 150
            return Status(code, INVOICE_DESCRIPTIONS[code])
        return Status(self.code, self.description, self.details, self.extensions)

    def succeeded(self, now: datetime) -> bool:
        return self.is_final(now) and self.code == 200

    def failed(self, now: datetime) -> bool:
        return self.is_final(now) and self.code != 200


def session_invoices(store: Store, session: Session) -> list[SessionInvoice]:
    """The session's invoices in ordinal order."""
    found = (store.get(SessionInvoice, ref) for ref in session.invoice_refs)
    return [invoice for invoice in found if invoice is not None]


def close_time(session: Session) -> datetime:
    return session.closed_at or session.valid_until


def is_open(session: Session, now: datetime) -> bool:
    return (
        session.closed_at is None
        and now < session.valid_until
        and not (session.session_type == ONLINE and session.key_error)
    )


def require_open(session: Session, now: datetime) -> None:
    """Sending into or closing a session that is closed, expired or unusable (bad key) is 21180."""
    if not is_open(session, now):
        raise KsefError(21180, f"Sesja {session.reference_number} nie jest otwarta.")


@dataclass(frozen=True)
class Counts:
    total: int
    successful: int
    failed: int


def counts(invoices: list[SessionInvoice], now: datetime) -> Counts:
    ok = sum(1 for invoice in invoices if invoice.succeeded(now))
    bad = sum(1 for invoice in invoices if invoice.failed(now))
    return Counts(len(invoices), ok, bad)


def session_status(session: Session, invoices: list[SessionInvoice], now: datetime) -> Status:
    if session.session_type == ONLINE:
        return _online_status(session, invoices, now)
    return _batch_status(session, invoices, now)


def _online_status(session: Session, invoices: list[SessionInvoice], now: datetime) -> Status:
    d = ONLINE_DESCRIPTIONS
    if session.key_error:
        return Status(415, d[415])
    if is_open(session, now):
        return Status(100, d[100])
    if any(not invoice.is_final(now) for invoice in invoices):
        return Status(170, d[170])
    if not invoices:
        return Status(440, d[440], ["Nie przesłano faktur"])
    if not any(invoice.code == 200 for invoice in invoices):
        return Status(445, d[445])
    return Status(200, d[200])


def _batch_status(session: Session, invoices: list[SessionInvoice], now: datetime) -> Status:
    d = BATCH_DESCRIPTIONS
    if session.closed_at is None:
        if now < session.valid_until:
            return Status(100, d[100])
        # §5: the 12 h window ran out before close (with or without uploaded parts).
        return Status(440, d[440], ["Przekroczono czas wysyłki"])
    if session.processed_at is None or now < session.processed_at:
        return Status(150, d[150])
    if session.failure_code is not None:
        return Status(session.failure_code, d[session.failure_code], session.failure_details)
    if not any(invoice.code == 200 for invoice in invoices):
        return Status(445, d[445])
    return Status(200, d[200])


# ``GET /sessions`` ``statuses`` filter (spec CommonSessionStatus).
def common_status(code: int) -> str:
    if code in (100, 150, 170):
        return "InProgress"
    if code == 200:
        return "Succeeded"
    if code == 440:
        return "Cancelled"
    return "Failed"


def date_closed(session: Session, now: datetime) -> datetime | None:
    if session.closed_at is not None:
        return session.closed_at
    return session.valid_until if now >= session.valid_until else None


def encode_continuation(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode("ascii")


def decode_continuation(token: str | None) -> int:
    """Offset from an ``x-continuation-token`` we issued; 400 21418 for anything else."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.b64decode(token, validate=True))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KsefError(21418) from exc
    if not isinstance(offset, int) or offset < 0:
        raise KsefError(21418)
    return offset
