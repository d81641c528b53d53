"""Batch sessions: open with the package description, upload parts to pre-signed URLs, close to process
(REFERENCE.md §5)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from ksef_sim.api.sessions import load_session, record_invoice
from ksef_sim.api.sessions_online import MB, EncryptionInfo, FormCodeBody, new_session, resolve_form
from ksef_sim.crypto import DecryptionError, aes_cbc_decrypt, b64decode, sha256_b64
from ksef_sim.deps import access
from ksef_sim.domain.acceptance import Submission, accept_invoice
from ksef_sim.domain.fa import find_form
from ksef_sim.domain.limits import context_limits
from ksef_sim.domain.permissions import attachment_allowed
from ksef_sim.domain.sessions import BATCH, BatchPart, Session, require_open
from ksef_sim.errors import KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Caller
from ksef_sim.state import Sim, get_sim

router = APIRouter()

BATCH_PERMISSIONS = ("InvoiceWrite", "EnforcementOperations")
MAX_PARTS = 50
# §5: each part ≤ 100 MB before encryption; PKCS#7 adds at most one block.
MAX_ENCRYPTED_PART = 100 * 1024 * 1024 + 16
UPLOAD_WINDOW_PER_PART = timedelta(minutes=20)


class BatchFilePartInfo(BaseModel):
    ordinalNumber: int = Field(ge=1)
    fileSize: int = Field(ge=1)
    fileHash: str = Field(min_length=44, max_length=44)


class BatchFileInfo(BaseModel):
    fileSize: int = Field(ge=1, le=5_000_000_000)
    fileHash: str = Field(min_length=44, max_length=44)
    compressionType: str | None = Field(default=None, pattern="^(Zip|TarGz)$")
    fileParts: list[BatchFilePartInfo] = Field(min_length=1)


class OpenBatchSessionRequest(BaseModel):
    formCode: FormCodeBody
    batchFile: BatchFileInfo
    encryption: EncryptionInfo
    offlineMode: bool = False


class PartUploadRequest(BaseModel):
    ordinalNumber: int
    method: str
    url: str
    headers: dict[str, str | None]


class OpenBatchSessionResponse(BaseModel):
    referenceNumber: str
    partUploadRequests: list[PartUploadRequest]


def _upload_deadline(session: Session) -> datetime:
    return session.created_at + UPLOAD_WINDOW_PER_PART * len(session.parts)


@router.post("/sessions/batch", status_code=201)
async def open_batch_session(
    body: OpenBatchSessionRequest,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.BATCH_SESSION))],
) -> OpenBatchSessionResponse:
    caller.require_any(*BATCH_PERMISSIONS)
    sim = get_sim(request)
    form = resolve_form(body.formCode)
    parts = body.batchFile.fileParts
    if len(parts) > MAX_PARTS:
        raise KsefError(21161, f"Maksymalna liczba części: {MAX_PARTS}.")
    too_big = [part.ordinalNumber for part in parts if part.fileSize > MAX_ENCRYPTED_PART]
    if too_big:
        raise KsefError(21157, f"Części przekraczające 100 MB: {too_big}.")
    ordinals = sorted(part.ordinalNumber for part in parts)
    if ordinals != list(range(1, len(parts) + 1)):
        raise KsefError(21405, "fileParts.ordinalNumber: wymagana numeracja 1..n bez powtórzeń.")
    session = new_session(sim, caller, BATCH, form, body.encryption, RefType.BATCH_SESSION)
    session.offline_mode = body.offlineMode
    session.file_size = body.batchFile.fileSize
    session.file_hash = body.batchFile.fileHash
    session.compression_type = body.batchFile.compressionType
    session.parts = [
        BatchPart(ordinal_number=p.ordinalNumber, file_size=p.fileSize, file_hash=p.fileHash)
        for p in sorted(parts, key=lambda p: p.ordinalNumber)
    ]
    sim.store.put(session)
    base = sim.public_base_url(request)
    deadline = _upload_deadline(session)
    return OpenBatchSessionResponse(
        referenceNumber=session.reference_number,
        partUploadRequests=[
            PartUploadRequest(
                ordinalNumber=part.ordinal_number,
                method="PUT",
                url=sim.presigner.url(base, "PUT", session.part_blob(part.ordinal_number), deadline),
                headers={"x-ms-blob-type": "BlockBlob"},
            )
            for part in session.parts
        ],
    )


class _PackageError(Exception):
    def __init__(self, code: int, *details: str) -> None:
        super().__init__(code, *details)
        self.code = code
        self.details = list(details)


def _unpack(archive: bytes, compression: str | None) -> list[tuple[str, bytes]]:
    """``[(file name, bytes)]`` of the regular files in the archive, in archive order; 430 when unreadable."""
    try:
        if compression == "TarGz":
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
                files = []
                for member in tar.getmembers():
                    if member.isfile():
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            files.append((member.name, extracted.read()))
                return files
        with zipfile.ZipFile(io.BytesIO(archive)) as package:
            return [(info.filename, package.read(info)) for info in package.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise _PackageError(430, f"Nie można zdekompresować paczki: {exc}") from exc


def _assemble(sim: Sim, session: Session) -> list[tuple[str, bytes]]:
    """Verify, decrypt and concatenate the parts, then unpack (§5 steps, each with its session status)."""
    if session.aes_key_b64 is None:
        raise _PackageError(415)
    key, iv = b64decode(session.aes_key_b64), b64decode(session.iv_b64)
    plain = bytearray()
    for part in session.parts:
        data = sim.store.get_blob(session.part_blob(part.ordinal_number)) or b""
        if len(data) != part.file_size or sha256_b64(data) != part.file_hash:
            raise _PackageError(405, f"Część {part.ordinal_number}: rozmiar lub skrót niezgodny z deklaracją.")
        try:
            plain += aes_cbc_decrypt(key, iv, data)
        except DecryptionError as exc:
            raise _PackageError(435, f"Część {part.ordinal_number}: {exc}") from exc
    archive = bytes(plain)
    if len(archive) != session.file_size or sha256_b64(archive) != session.file_hash:
        raise _PackageError(405, "Rozmiar lub skrót paczki niezgodny z batchFile.fileSize/fileHash.")
    return _unpack(archive, session.compression_type)


@router.post("/sessions/batch/{referenceNumber}/close", status_code=204)
async def close_batch_session(
    referenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.BATCH_SESSION))],
) -> Response:
    caller.require_any(*BATCH_PERMISSIONS)
    sim = get_sim(request)
    now = sim.clock.now()
    session = load_session(sim, caller, referenceNumber, BATCH)
    require_open(session, now)
    missing = [
        p.ordinal_number for p in session.parts if sim.store.get_blob(session.part_blob(p.ordinal_number)) is None
    ]
    if missing:
        if now > _upload_deadline(session):
            raise KsefError(21208, f"Nie przesłano części: {missing}.")
        raise KsefError(21205, f"Nie przesłano części: {missing}.")

    session.closed_at = now
    session.updated_at = now
    # The package is verified and its invoices decided now, but all of it shows only from ``processed_at`` on: the
    # session reports 150 until then (§5), its invoices 100/150 and no KSeF numbers or UPO.
    processed_at = now + timedelta(seconds=sim.settings.batch_processing_delay_s)
    session.processed_at = processed_at
    limits = context_limits(sim.store, caller.context)["batchSession"]
    with sim.store.batch():
        try:
            files = _assemble(sim, session)
            if len(files) > limits["maxInvoices"]:
                raise _PackageError(420, f"Liczba faktur {len(files)} > {limits['maxInvoices']}.")
            if not files:
                raise _PackageError(405, "Paczka nie zawiera faktur.")
        except _PackageError as failure:
            session.failure_code = failure.code
            session.failure_details = failure.details or None
            files = []
        form = find_form(session.form_code.systemCode, session.form_code.schemaVersion, session.form_code.value)
        assert form is not None
        nip = caller.context.value.split("-", 1)[0]
        attachments = attachment_allowed(sim.store, nip, now)
        for name, content in files:
            reference = reference_number(RefType.SESSION_INVOICE, now)
            verdict = accept_invoice(
                sim,
                Submission(
                    content=content,
                    form=form,
                    context=caller.context,
                    session_reference_number=session.reference_number,
                    invoice_reference_number=reference,
                    invoicing_date=session.created_at,  # §5: batch invoicingDate = session open time
                    acquisition_date=processed_at,
                    offline_mode=session.offline_mode,
                    attachments_allowed=attachments,
                    max_size=limits["maxInvoiceSizeInMB"] * MB,
                    max_size_with_attachment=limits["maxInvoiceWithAttachmentSizeInMB"] * MB,
                ),
            )
            record_invoice(
                sim,
                session,
                reference=reference,
                invoice_hash=sha256_b64(content),
                invoice_size=len(content),
                invoicing_date=session.created_at,
                final_at=processed_at,
                verdict=verdict,
                offline_mode=session.offline_mode,
                file_name=name[-128:],
            )
        for part in session.parts:
            sim.store.delete_blob(session.part_blob(part.ordinal_number))
        sim.store.put(session)
    return Response(status_code=204)
