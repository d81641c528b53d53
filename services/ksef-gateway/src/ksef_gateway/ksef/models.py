"""What the gateway reads from KSeF, as plain values. Dates KSeF hands back for reuse (HWM, ``last…Date``)
stay the exact strings it sent: the next window must start exactly there (REFERENCE.md §9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cryptography import x509

from ksef_gateway.ksef.crypto import SymmetricKey


def parse_instant(value: str) -> datetime:
    """KSeF's ISO-8601 instants (.NET writes 7 fractional digits, Python reads at most 6)."""
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    instant = datetime.fromisoformat(text)
    # A value without an offset is Warsaw local time in KSeF's filters; in its answers it does not occur.
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PublicKeyCertificate:
    certificate: x509.Certificate
    public_key_id: str
    usage: frozenset[str]
    valid_from: datetime
    valid_to: datetime


@dataclass(frozen=True)
class Challenge:
    challenge: str
    timestamp_ms: int
    client_ip: str


@dataclass(frozen=True)
class KsefAuthSession:
    """Tokens of one KSeF authentication (``…-AU-…``); token values are kept out of ``repr``."""

    context_nip: str
    auth_reference: str
    access_token: str = field(repr=False)
    access_valid_until: datetime
    refresh_token: str = field(repr=False)
    refresh_valid_until: datetime


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    valid_until: datetime


@dataclass(frozen=True)
class FormCode:
    system_code: str
    schema_version: str
    value: str

    def as_json(self) -> dict[str, str]:
        return {"systemCode": self.system_code, "schemaVersion": self.schema_version, "value": self.value}


FA3 = FormCode("FA (3)", "1-0E", "FA")
FA2 = FormCode("FA (2)", "1-0E", "FA")


@dataclass(frozen=True)
class OnlineSession:
    """An open online session (``…-SO-…``) and the AES key its invoices are encrypted with."""

    reference_number: str
    context_nip: str
    form_code: FormCode
    valid_until: datetime
    key: SymmetricKey = field(repr=False)


@dataclass(frozen=True)
class SessionStatus:
    """``GET /sessions/{ref}`` (REFERENCE.md §6): the status code (§4 online, §5 batch) and the invoice counts."""

    code: int
    description: str
    invoice_count: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    successful_invoice_count: int | None = None
    failed_invoice_count: int | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class BatchPart:
    """One part of a batch archive, encrypted on its own with the session key (REFERENCE.md §5 step 2):
    ``file_size``/``file_hash`` are those of the encrypted bytes, as ``fileParts[]`` declares them."""

    ordinal_number: int
    content: bytes = field(repr=False)
    file_size: int
    file_hash: str


@dataclass(frozen=True)
class BatchArchive:
    """A batch package ready to declare and upload: size and hash of the whole unencrypted archive, its encrypted
    parts, and the AES key and IV they were encrypted with (wrapped for the Ministry when the session opens)."""

    file_size: int
    file_hash: str
    parts: tuple[BatchPart, ...]
    key: SymmetricKey = field(repr=False)
    compression_type: str = "Zip"  # Zip | TarGz (2.6.0+)


@dataclass(frozen=True)
class PartUploadRequest:
    """Where and how one part goes (``partUploadRequests[]``): a pre-signed URL, PUT with exactly ``headers``."""

    ordinal_number: int
    method: str
    url: str = field(repr=False)  # pre-signed: a bearer credential for that blob until it expires
    headers: dict[str, str]


@dataclass(frozen=True)
class BatchSession:
    """An opened batch session (``…-SB-…``) with the upload requests of its parts and the key they are under."""

    reference_number: str
    part_upload_requests: tuple[PartUploadRequest, ...]
    key: SymmetricKey = field(repr=False)


@dataclass(frozen=True)
class SentInvoiceStatus:
    """One invoice of a session as KSeF reports it (``GET /sessions/{ref}/invoices/{invRef}``, REFERENCE.md §6-7):
    100/150 still processing, 200 accepted (KSeF number assigned), anything else final and refused."""

    reference_number: str
    code: int
    description: str
    details: tuple[str, ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)
    ksef_number: str | None = None
    invoice_hash: str | None = None
    acquisition_date: datetime | None = None
    invoicing_mode: str | None = None

    @property
    def processing(self) -> bool:
        return self.code in (100, 150)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SentInvoiceStatus:
        status = body.get("status") or {}
        acquired = body.get("acquisitionDate")
        return cls(
            reference_number=str(body.get("referenceNumber") or ""),
            code=int(status.get("code") or 0),
            description=str(status.get("description") or ""),
            details=tuple(str(d) for d in status.get("details") or ()),
            extensions=dict(status.get("extensions") or {}),
            ksef_number=body.get("ksefNumber"),
            invoice_hash=body.get("invoiceHash"),
            acquisition_date=parse_instant(acquired) if acquired else None,
            invoicing_mode=body.get("invoicingMode"),
        )


@dataclass(frozen=True)
class MetadataPage:
    invoices: list[dict[str, Any]]
    has_more: bool
    is_truncated: bool
    permanent_storage_hwm_date: str | None


@dataclass(frozen=True)
class ExportHandle:
    """A started export; the AES key and IV stay here (and in memory only) until the package is decrypted."""

    reference_number: str
    context_nip: str | None
    key: SymmetricKey = field(repr=False)


@dataclass(frozen=True)
class ExportPart:
    ordinal_number: int
    part_name: str
    url: str = field(repr=False)  # pre-signed: a bearer credential for that blob until it expires
    part_size: int
    part_hash: str
    encrypted_part_size: int
    encrypted_part_hash: str


@dataclass(frozen=True)
class ExportPackage:
    invoice_count: int
    size: int
    parts: list[ExportPart]
    is_truncated: bool
    compression_type: str
    permanent_storage_hwm_date: str | None
    last_permanent_storage_date: str | None
    last_issue_date: str | None
    last_invoicing_date: str | None


@dataclass(frozen=True)
class ExportStatus:
    reference_number: str
    code: int
    description: str
    details: list[str]
    package: ExportPackage | None
    completed_date: str | None = None
    package_expiration_date: str | None = None
    # The status answer's ``Retry-After`` (seconds), when KSeF says how long to wait before asking again.
    retry_after_s: float | None = None

    @property
    def running(self) -> bool:
        return self.code == 100

    @property
    def done(self) -> bool:
        return self.code == 200


class ExportedPackage(NamedTuple):
    """The decrypted package: ``(ksefNumber, exact XML bytes)`` per invoice, and ``_metadata.json``'s list.

    ``mismatched`` names the invoices whose bytes do not hash to their ``invoiceHash``: they are still listed in
    ``invoices`` (as received) so the caller rejects just those and keeps the rest of the window."""

    invoices: list[tuple[str, bytes]]
    metadata: list[dict[str, Any]]
    mismatched: tuple[str, ...] = ()


def export_package(body: dict[str, Any]) -> ExportPackage:
    return ExportPackage(
        invoice_count=int(body.get("invoiceCount") or 0),
        size=int(body.get("size") or 0),
        parts=[
            ExportPart(
                ordinal_number=int(p["ordinalNumber"]),
                part_name=str(p.get("partName") or ""),
                url=str(p["url"]),
                part_size=int(p.get("partSize") or 0),
                part_hash=str(p.get("partHash") or ""),
                encrypted_part_size=int(p.get("encryptedPartSize") or 0),
                encrypted_part_hash=str(p.get("encryptedPartHash") or ""),
            )
            for p in sorted(body.get("parts") or [], key=lambda p: int(p["ordinalNumber"]))
        ],
        is_truncated=bool(body.get("isTruncated")),
        compression_type=str(body.get("compressionType") or "Zip"),
        permanent_storage_hwm_date=body.get("permanentStorageHwmDate"),
        last_permanent_storage_date=body.get("lastPermanentStorageDate"),
        last_issue_date=body.get("lastIssueDate"),
        last_invoicing_date=body.get("lastInvoicingDate"),
    )
