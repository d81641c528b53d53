"""Receiving invoices (REFERENCE.md §9): metadata query, download by KSeF number, and exports with their status.

Everything is scoped to the caller's context: a context sees only invoices it is a party to, and only its own
exports (another context's reference number answers 21175 as if it did not exist).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field

from ksef_sim.clock import iso
from ksef_sim.crypto import SYMMETRIC_KEY_ENCRYPTION, DecryptionError, b64decode
from ksef_sim.deps import access
from ksef_sim.domain import exports as ex
from ksef_sim.domain.query import (
    HWM_DETAIL,
    KSEF_NUMBER_PATTERN,
    CamelModel,
    DateType,
    InvoiceQueryFilters,
    Window,
    invoice_metadata,
    is_party,
    normalize_ksef_number,
    paginate,
    permanent_storage_hwm,
    resolve_window,
    select,
)
from ksef_sim.errors import Gone, KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.records import StoredInvoice
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Caller, Identifier
from ksef_sim.state import Sim, get_sim

router = APIRouter()

INVOICE_READ = "InvoiceRead"


class EncryptionInfo(CamelModel):
    encrypted_symmetric_key: str
    initialization_vector: str
    public_key_id: str | None = Field(default=None, min_length=44, max_length=44)


class InvoiceExportRequest(CamelModel):
    encryption: EncryptionInfo
    only_metadata: bool = False
    filters: InvoiceQueryFilters
    compression_type: Literal["Zip", "TarGz"] | None = None


# --- metadata query ------------------------------------------------------------------------------------------------


@router.post("/invoices/query/metadata")
async def query_metadata(
    filters: InvoiceQueryFilters,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.INVOICE_METADATA))],
    sort_order: Annotated[Literal["Asc", "Desc"], Query(alias="sortOrder")] = "Asc",
    page_offset: Annotated[int, Query(alias="pageOffset", ge=0, le=2**31 - 1)] = 0,
    page_size: Annotated[int, Query(alias="pageSize", ge=10, le=250)] = 10,
) -> dict[str, Any]:
    caller.require_any(INVOICE_READ)
    sim = get_sim(request)
    now = sim.clock.now()
    window = resolve_window(
        filters.date_range, now, permanent_storage_hwm(now, sim.settings.permanent_storage_jitter_s)
    )
    found = select(sim.store.all(StoredInvoice), filters, caller.context, window, now, descending=sort_order == "Desc")
    page = paginate(found, page_offset, page_size)
    return {
        "hasMore": page.has_more,
        "isTruncated": page.is_truncated,
        # Null for Issue/Invoicing (spec, QueryInvoicesMetadataResponse).
        "permanentStorageHwmDate": iso(window.hwm) if window.hwm is not None else None,
        "invoices": [invoice_metadata(invoice) for invoice in page.invoices],
    }


# --- download ------------------------------------------------------------------------------------------------------


@router.get("/invoices/ksef/{ksefNumber}")
async def download_invoice(
    ksefNumber: Annotated[str, Path(pattern=KSEF_NUMBER_PATTERN)],
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.INVOICE_DOWNLOAD))],
) -> Response:
    caller.require_any(INVOICE_READ)
    sim = get_sim(request)
    now = sim.clock.now()
    number = normalize_ksef_number(ksefNumber)
    invoice = sim.store.get(StoredInvoice, number)
    # Not a party is indistinguishable from not existing: a KSeF number must not reveal another company's invoice.
    if invoice is None or invoice.acquisition_date > now or not is_party(invoice, caller.context):
        raise KsefError(21164, f"Faktura o numerze KSeF {ksefNumber} nie została znaleziona.")
    content = sim.store.get_blob(invoice.blob_name)
    if now < invoice.permanent_storage_date or content is None:
        raise KsefError(
            21165,
            f"Faktura o numerze KSeF {ksefNumber} została przetworzona, ale nie jest jeszcze dostępna do pobrania. "
            "Spróbuj ponownie później.",
        )
    # The exact bytes received, not encrypted; x-ms-meta-hash = invoiceHash (REFERENCE.md §9).
    return Response(content=content, media_type="application/xml", headers={"x-ms-meta-hash": invoice.invoice_hash})


# --- exports -------------------------------------------------------------------------------------------------------


def _own_exports(sim: Sim, context: Identifier) -> list[ex.InvoiceExport]:
    return [
        export
        for export in sim.store.all(ex.InvoiceExport)
        if export.context_type == context.type and export.context_value == context.value
    ]


def _unwrap_key(sim: Sim, body: InvoiceExportRequest) -> tuple[bytes, bytes] | None:
    """``(key, iv)`` or ``None`` when the key cannot be unwrapped (the export then ends with status 415)."""
    try:
        wrapped = b64decode(body.encryption.encrypted_symmetric_key)
        iv = b64decode(body.encryption.initialization_vector)
    except ValueError as exc:
        raise KsefError(21405, "encryption: wartość nie jest poprawnym ciągiem Base64.") from exc
    ministry_key = sim.keys.resolve(SYMMETRIC_KEY_ENCRYPTION, body.encryption.public_key_id)
    if ministry_key is None:
        raise KsefError(21470, f"Klucz o identyfikatorze {body.encryption.public_key_id} nie jest wspierany.")
    try:
        key = ministry_key.decrypt(wrapped)
    except DecryptionError:
        return None
    return (key, iv) if len(key) == 32 and len(iv) == 16 else None


@router.post("/invoices/exports", status_code=201)
async def create_export(
    body: InvoiceExportRequest,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.INVOICE_EXPORT))],
) -> dict[str, Any]:
    caller.require_any(INVOICE_READ)
    sim = get_sim(request)
    now = sim.clock.now()
    retention = timedelta(seconds=sim.settings.async_status_retention_s)
    unwrapped = _unwrap_key(sim, body)
    filters = body.filters
    if not ex.export_allowed(caller.context.type, filters.subject_type):
        raise KsefError(
            21181,
            f"Nie można wyeksportować paczki faktur dla wybranego podmiotu ({filters.subject_type}) "
            f"i zalogowanego identyfikatora kontekstu ({caller.context.type}).",
        )
    hwm = permanent_storage_hwm(now, sim.settings.permanent_storage_jitter_s)
    window: Window | None
    try:
        window = resolve_window(filters.date_range, now, hwm)
    except KsefError as error:
        # For exports a range beyond the HWM is not a 400: the export is accepted and ends with status 420
        # (spec: 21183 is not among POST /invoices/exports errors; 420 is an export status).
        if error.errors[0][0] != 21183:
            raise
        window = None
    running = sum(ex.is_running(e, now, sim.faults.stuck_exports, retention) for e in _own_exports(sim, caller.context))
    if running >= ex.MAX_RUNNING_EXPORTS:
        raise KsefError(
            21182,
            f"Dla uwierzytelnionego podmiotu w bieżącym kontekście osiągnięto maksymalny limit "
            f"{ex.MAX_RUNNING_EXPORTS} równoczesnych eksportów faktur. Spróbuj ponownie później.",
        )

    reference = reference_number(RefType.EXPORT, now)
    export = ex.InvoiceExport(
        reference_number=reference,
        context_type=caller.context.type,
        context_value=caller.context.value,
        created_at=now,
        ready_at=now + timedelta(seconds=sim.settings.export_processing_delay_s),
        stuck=sim.faults.stuck_exports,
    )
    if unwrapped is None:
        export.failure_code = ex.KEY_ERROR
    elif window is None:
        export.failure_code = ex.BEYOND_HWM
        export.failure_details = [HWM_DETAIL]
    else:
        key, iv = unwrapped
        compression = body.compression_type or "Zip"
        # A snapshot of what the context sees now, ascending by the filter's date (spec: exports sort Asc only).
        found = select(sim.store.all(StoredInvoice), filters, caller.context, window, now)
        built = ex.build_archive(
            found,
            lambda invoice: sim.store.get_blob(invoice.blob_name) or b"",
            only_metadata=body.only_metadata,
            compression=compression,
        )
        parts = ex.encrypt_parts(reference, built.data, sim.settings.export_part_size, key, iv, compression)
        last_field, last_value = (None, None)
        if built.is_truncated and built.invoices:
            last_field, last_value = ex.last_date(built.invoices[-1], window.date_type)
        export.package = ex.ExportPackage(
            invoice_count=len(built.invoices),
            size=len(built.data),
            parts=[part for part, _ in parts],
            is_truncated=built.is_truncated,
            last_date_field=last_field,
            last_date=last_value,
            permanent_storage_hwm_date=window.hwm if window.date_type is DateType.PERMANENT_STORAGE else None,
            compression_type=compression,
        )
        with sim.store.batch():
            for part, encrypted in parts:
                sim.store.put_blob(part.blob, encrypted)
    sim.store.put(export)
    return {"referenceNumber": reference}


def _delete_package(sim: Sim, export: ex.InvoiceExport) -> None:
    if export.package is not None and not export.blobs_deleted:
        for part in export.package.parts:
            sim.store.delete_blob(part.blob)
        export.blobs_deleted = True
        sim.store.put(export)


@router.get("/invoices/exports/{referenceNumber}")
async def export_status(
    referenceNumber: Annotated[str, Path(min_length=36, max_length=36)],
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.INVOICE_EXPORT_STATUS))],
) -> dict[str, Any]:
    caller.require_any(INVOICE_READ)
    sim = get_sim(request)
    now = sim.clock.now()
    export = sim.store.get(ex.InvoiceExport, referenceNumber)
    if export is None or (export.context_type, export.context_value) != (caller.context.type, caller.context.value):
        raise KsefError(21175)
    if ex.release_if_unstuck(export, sim.faults.stuck_exports, now):
        sim.store.put(export)
    state = ex.export_state(
        export, now, sim.faults.stuck_exports, timedelta(seconds=sim.settings.async_status_retention_s)
    )
    if state.gone_at is not None and now >= state.gone_at:
        _delete_package(sim, export)
        raise Gone("Operacja wygasła i nie jest już dostępna.")
    status: dict[str, Any] = {"code": state.code, "description": ex.STATUS_DESCRIPTIONS[state.code]}
    if state.code in (ex.KEY_ERROR, ex.BEYOND_HWM) and export.failure_details:
        status["details"] = export.failure_details
    body: dict[str, Any] = {"status": status}
    if state.completed_at is not None and state.package_expiration is not None:
        body["completedDate"] = iso(state.completed_at)
        body["packageExpirationDate"] = iso(state.package_expiration)
    if state.code == ex.EXPIRED:
        _delete_package(sim, export)
    elif state.code == ex.DONE and export.package is not None and state.package_expiration is not None:
        # Links are issued per read, valid for the presigned TTL but never past the package's expiry (as on PROD).
        expires_at = min(now + timedelta(seconds=sim.settings.presigned_url_ttl_s), state.package_expiration)
        base = sim.public_base_url(request)
        urls: list[tuple[str, datetime]] = [
            (sim.presigner.url(base, "GET", part.blob, expires_at), expires_at) for part in export.package.parts
        ]
        body["package"] = ex.package_json(export.package, urls)
    return body
