"""Invoice exports (REFERENCE.md §9): the export record, its status computed on read from the clock, and building
the package: ``{ksefNumber}.xml`` files plus ``_metadata.json``, zipped (or tar.gz), split into parts and each part
encrypted with the client's AES-256-CBC key and IV.

The package is built when the export is created, so it is a snapshot of what the context could see at that instant;
the status only reveals it once ``export_processing_delay_s`` has passed on the simulator clock.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from ksef_sim.clock import iso
from ksef_sim.crypto import aes_cbc_encrypt, sha256_b64
from ksef_sim.domain.query import MAX_RECORDS, DateType, SubjectType, invoice_metadata
from ksef_sim.records import StoredInvoice
from ksef_sim.store import Record

MAX_PACKAGE_INVOICES = MAX_RECORDS
# "Limit rozmiaru danych (skompresowanych): 1GB"; _metadata.json does not count (spec, POST /invoices/exports).
MAX_PACKAGE_BYTES = 1024**3
# At most 10 exports with status 100 per context (21182).
MAX_RUNNING_EXPORTS = 10
# Observed on PROD: packageExpirationDate = completedDate + 7 days (CIRFMF/ksef-api#817).
PACKAGE_LIFETIME = timedelta(days=7)
METADATA_FILE = "_metadata.json"

RUNNING, DONE, EXPIRED, KEY_ERROR, BEYOND_HWM = 100, 200, 210, 415, 420
STATUS_DESCRIPTIONS = {
    RUNNING: "Eksport faktur w toku",
    DONE: "Eksport faktur zakończony sukcesem",
    EXPIRED: "Eksport faktur wygasł i nie jest już dostępny do pobrania",
    KEY_ERROR: "Błąd odszyfrowania dostarczonego klucza",
    BEYOND_HWM: "Zakres filtrowania wykracza poza dostępny zakres danych",
}

_LAST_DATE_FIELD = {
    DateType.ISSUE: "lastIssueDate",
    DateType.INVOICING: "lastInvoicingDate",
    DateType.PERMANENT_STORAGE: "lastPermanentStorageDate",
}


class ExportPart(BaseModel):
    ordinal_number: int
    part_name: str
    blob: str
    part_size: int
    part_hash: str
    encrypted_part_size: int
    encrypted_part_hash: str


class ExportPackage(BaseModel):
    invoice_count: int
    size: int
    parts: list[ExportPart]
    is_truncated: bool
    last_date_field: str | None = None  # lastIssueDate | lastInvoicingDate | lastPermanentStorageDate
    last_date: str | None = None  # already rendered: a date for Issue, a datetime otherwise
    permanent_storage_hwm_date: datetime | None = None
    # Not in the 2.6.0 InvoicePackage schema (extra properties are allowed there), but clients generated from the
    # newer contract require it to pick the unpacker (ksef-client 0.20.0: InvoicePackage.compressionType).
    compression_type: str = "Zip"


class InvoiceExport(Record):
    KIND = "invoice_export"

    reference_number: str
    context_type: str
    context_value: str
    created_at: datetime
    ready_at: datetime  # created_at + export_processing_delay_s; moved to "now" when a stuck export is released
    stuck: bool = False  # created while the operator's stuck_exports fault was on
    failure_code: int | None = None  # 415 (key) or 420 (range beyond HWM), final from creation
    failure_details: list[str] | None = None
    package: ExportPackage | None = None
    blobs_deleted: bool = False

    def key(self) -> str:
        return self.reference_number


@dataclass(frozen=True)
class ExportState:
    code: int
    completed_at: datetime | None = None
    package_expiration: datetime | None = None
    gone_at: datetime | None = None


def release_if_unstuck(export: InvoiceExport, stuck_fault: bool, now: datetime) -> bool:
    """A stuck export starts processing once the operator clears the fault; True when the record changed."""
    if export.stuck and not stuck_fault:
        export.stuck = False
        export.ready_at = max(export.ready_at, now)
        return True
    return False


def export_state(export: InvoiceExport, now: datetime, stuck_fault: bool, retention: timedelta) -> ExportState:
    """Status on read. The status is kept ``retention`` after its last change (REFERENCE.md §2: 7 days), then 410:
    from creation for failed or stuck exports, from the package's expiry for completed ones, which is why a
    completed export first turns 210 and only later disappears."""
    if export.failure_code is not None:
        return ExportState(export.failure_code, gone_at=export.created_at + retention)
    if (export.stuck and stuck_fault) or now < export.ready_at:
        return ExportState(RUNNING, gone_at=export.created_at + retention)
    expiration = export.ready_at + PACKAGE_LIFETIME
    code = EXPIRED if now >= expiration else DONE
    return ExportState(code, export.ready_at, expiration, expiration + retention)


def export_allowed(context_type: str, subject_type: SubjectType) -> bool:
    """21181 otherwise. A Nip context may export any role; an InternalId context (a subunit) appears on invoices only
    as Podmiot3, so only Subject3 makes sense there; other context types hold no invoices of their own."""
    if context_type == "Nip":
        return True
    return context_type == "InternalId" and subject_type is SubjectType.SUBJECT3


def is_running(export: InvoiceExport, now: datetime, stuck_fault: bool, retention: timedelta) -> bool:
    return export_state(export, now, stuck_fault, retention).code == RUNNING


# --- building the package --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltArchive:
    data: bytes
    invoices: list[StoredInvoice]
    is_truncated: bool


def build_archive(
    invoices: Sequence[StoredInvoice],
    load_xml: Callable[[StoredInvoice], bytes],
    *,
    only_metadata: bool,
    compression: str = "Zip",
    max_invoices: int = MAX_PACKAGE_INVOICES,
    max_bytes: int = MAX_PACKAGE_BYTES,
) -> BuiltArchive:
    """Adds ``invoices`` (already sorted ascending by the filter's date) until ``max_invoices`` or the compressed size
    of the invoice files would pass ``max_bytes``; ``_metadata.json`` lists exactly the invoices included."""
    included: list[StoredInvoice] = []
    files: list[tuple[str, bytes]] = []
    compressed_total = 0
    for invoice in invoices:
        if len(included) >= max_invoices:
            break
        if not only_metadata:
            xml = load_xml(invoice)
            compressed = len(zlib.compress(xml))
            if included and compressed_total + compressed > max_bytes:
                break
            compressed_total += compressed
            files.append((f"{invoice.ksef_number}.xml", xml))
        included.append(invoice)
    metadata = json.dumps({"invoices": [invoice_metadata(i) for i in included]}, ensure_ascii=False).encode()
    files.append((METADATA_FILE, metadata))
    data = _tar_gz(files) if compression == "TarGz" else _zip(files)
    return BuiltArchive(data, included, len(included) < len(invoices))


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar_gz(files: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def split(data: bytes, part_size: int) -> list[bytes]:
    """Consecutive slices of at most ``part_size`` bytes; the client decrypts each and concatenates them."""
    return [data[offset : offset + part_size] for offset in range(0, len(data), part_size)] or [data]


def part_name(reference_number: str, ordinal: int, compression: str) -> str:
    extension = "tar.gz" if compression == "TarGz" else "zip"
    return f"{reference_number}-{ordinal:03d}.{extension}.aes"


def encrypt_parts(
    reference_number: str, data: bytes, part_size: int, key: bytes, iv: bytes, compression: str
) -> list[tuple[ExportPart, bytes]]:
    """Each part is encrypted on its own (AES-256-CBC, PKCS#7) with the client's key and IV (spec, export status)."""
    result = []
    for ordinal, plain in enumerate(split(data, part_size), start=1):
        encrypted = aes_cbc_encrypt(key, iv, plain)
        name = part_name(reference_number, ordinal, compression)
        part = ExportPart(
            ordinal_number=ordinal,
            part_name=name,
            blob=f"export/{reference_number}/{name}",
            part_size=len(plain),
            part_hash=sha256_b64(plain),
            encrypted_part_size=len(encrypted),
            encrypted_part_hash=sha256_b64(encrypted),
        )
        result.append((part, encrypted))
    return result


def last_date(invoice: StoredInvoice, date_type: DateType) -> tuple[str, str]:
    """The ``last…Date`` field a truncated package reports, to start the next export from."""
    field = _LAST_DATE_FIELD[date_type]
    if date_type is DateType.ISSUE:
        return field, invoice.issue_date.isoformat()
    if date_type is DateType.INVOICING:
        return field, iso(invoice.invoicing_date)
    return field, iso(invoice.permanent_storage_date)


def package_json(package: ExportPackage, part_urls: list[tuple[str, datetime]]) -> dict[str, Any]:
    """``InvoicePackage``; ``part_urls`` are the pre-signed links issued for this read, one per part."""
    body: dict[str, Any] = {
        "invoiceCount": package.invoice_count,
        "size": package.size,
        "parts": [
            {
                "ordinalNumber": part.ordinal_number,
                "partName": part.part_name,
                "method": "GET",
                "url": url,
                "partSize": part.part_size,
                "partHash": part.part_hash,
                "encryptedPartSize": part.encrypted_part_size,
                "encryptedPartHash": part.encrypted_part_hash,
                "expirationDate": iso(expires_at),
            }
            for part, (url, expires_at) in zip(package.parts, part_urls, strict=True)
        ],
        "isTruncated": package.is_truncated,
        "compressionType": package.compression_type,
    }
    # last…Date only when truncated, and only the one matching the filter's dateType (spec, InvoicePackage).
    if package.is_truncated and package.last_date_field and package.last_date:
        body[package.last_date_field] = package.last_date
    if package.permanent_storage_hwm_date is not None:
        body["permanentStorageHwmDate"] = iso(package.permanent_storage_hwm_date)
    return body
