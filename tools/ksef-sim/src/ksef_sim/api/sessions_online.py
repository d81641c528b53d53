"""Online (interactive) sessions: open, send invoices, close (REFERENCE.md §4, §7, §8)."""

from __future__ import annotations

import binascii
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from ksef_sim.api.sessions import failed_verdict, load_session, record_invoice
from ksef_sim.clock import iso
from ksef_sim.crypto import (
    SYMMETRIC_KEY_ENCRYPTION,
    DecryptionError,
    aes_cbc_decrypt,
    b64,
    b64decode,
    sha256_b64,
)
from ksef_sim.deps import access
from ksef_sim.domain.acceptance import Submission, accept_invoice, check_technical_correction
from ksef_sim.domain.fa import InvoiceForm, find_form
from ksef_sim.domain.limits import context_limits
from ksef_sim.domain.sessions import ONLINE, Session, require_open
from ksef_sim.errors import KsefError
from ksef_sim.ratelimit import Group
from ksef_sim.records import FormCode
from ksef_sim.refs import RefType, reference_number
from ksef_sim.security import Caller
from ksef_sim.state import Sim, get_sim

router = APIRouter()

SEND_PERMISSIONS = ("InvoiceWrite", "PefInvoiceWrite", "EnforcementOperations")
MB = 1_000_000  # §8: limits are stated in decimal megabytes (1 MB = 1 000 000 B)


class FormCodeBody(BaseModel):
    systemCode: str
    schemaVersion: str
    value: str


class EncryptionInfo(BaseModel):
    encryptedSymmetricKey: str
    initializationVector: str
    publicKeyId: str | None = None


class OpenOnlineSessionRequest(BaseModel):
    formCode: FormCodeBody
    encryption: EncryptionInfo


class OpenOnlineSessionResponse(BaseModel):
    referenceNumber: str
    validUntil: str


class SendInvoiceRequest(BaseModel):
    invoiceHash: str = Field(min_length=44, max_length=44)
    invoiceSize: int = Field(ge=1)
    encryptedInvoiceHash: str = Field(min_length=44, max_length=44)
    encryptedInvoiceSize: int = Field(ge=1)
    encryptedInvoiceContent: str
    offlineMode: bool = False
    hashOfCorrectedInvoice: str | None = Field(default=None, min_length=44, max_length=44)


class SendInvoiceResponse(BaseModel):
    referenceNumber: str


def resolve_form(body: FormCodeBody) -> InvoiceForm:
    form = find_form(body.systemCode, body.schemaVersion, body.value)
    if form is None:
        raise KsefError(
            21405,
            f"Kod formularza nie jest wspierany: {body.systemCode} {body.schemaVersion} {body.value}.",
        )
    return form


def unwrap_key(sim: Sim, encryption: EncryptionInfo) -> tuple[str | None, str]:
    """``(aes_key_b64 | None, iv_b64)``. A key that fails RSA-OAEP is not a 400: the session answers 201 and then
    shows status 415 (REFERENCE.md §4, obs #225, #454). An unknown ``publicKeyId`` is 21470; malformed Base64
    or an IV that is not 16 bytes is 21405."""
    key = sim.keys.resolve(SYMMETRIC_KEY_ENCRYPTION, encryption.publicKeyId)
    if key is None:
        raise KsefError(21470)
    try:
        wrapped = b64decode(encryption.encryptedSymmetricKey)
        iv = b64decode(encryption.initializationVector)
    except (ValueError, binascii.Error) as exc:
        raise KsefError(21405, "encryption: nieprawidłowe kodowanie Base64.") from exc
    if len(iv) != 16:
        raise KsefError(21405, "encryption.initializationVector: wymagane 16 bajtów.")
    try:
        aes_key = key.decrypt(wrapped)
    except DecryptionError:
        return None, b64(iv)
    return (b64(aes_key) if len(aes_key) == 32 else None), b64(iv)


def new_session(
    sim: Sim, caller: Caller, session_type: str, form: InvoiceForm, encryption: EncryptionInfo, ref_type: RefType
) -> Session:
    now = sim.clock.now()
    aes_key, iv = unwrap_key(sim, encryption)
    if sim.faults.refuse_session_keys:
        # Same path as a key that fails RSA-OAEP, so the session behaves exactly like one KSeF could not decrypt.
        aes_key = None
    return Session(
        reference_number=reference_number(ref_type, now),
        session_type=session_type,
        context_type=caller.context.type,
        context_value=caller.context.value,
        subject_type=caller.subject.type,
        subject_value=caller.subject.value,
        auth_reference_number=caller.auth_reference_number,
        ksef_token_reference=caller.ksef_token_reference,
        form_code=FormCode(systemCode=form.system_code, schemaVersion=form.schema_version, value=form.value),
        created_at=now,
        updated_at=now,
        valid_until=now + timedelta(seconds=sim.settings.online_session_ttl_s),
        aes_key_b64=aes_key,
        iv_b64=iv,
        key_error=aes_key is None,
    )


@router.post("/sessions/online", status_code=201)
async def open_online_session(
    body: OpenOnlineSessionRequest,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.ONLINE_SESSION))],
) -> OpenOnlineSessionResponse:
    caller.require_any(*SEND_PERMISSIONS)
    sim = get_sim(request)
    form = resolve_form(body.formCode)
    session = new_session(sim, caller, ONLINE, form, body.encryption, RefType.ONLINE_SESSION)
    sim.store.put(session)
    return OpenOnlineSessionResponse(referenceNumber=session.reference_number, validUntil=iso(session.valid_until))


@router.post("/sessions/online/{referenceNumber}/invoices", status_code=202)
async def send_invoice(
    referenceNumber: str,
    body: SendInvoiceRequest,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.INVOICE_SEND))],
) -> SendInvoiceResponse:
    caller.require_any(*SEND_PERMISSIONS)
    sim = get_sim(request)
    now = sim.clock.now()
    session = load_session(sim, caller, referenceNumber, ONLINE)
    require_open(session, now)
    limits = context_limits(sim.store, caller.context)["onlineSession"]
    if len(session.invoice_refs) >= limits["maxInvoices"]:
        raise KsefError(21155, f"Limit faktur w sesji: {limits['maxInvoices']}.")
    try:
        ciphertext = b64decode(body.encryptedInvoiceContent)
    except (ValueError, binascii.Error) as exc:
        raise KsefError(21405, "encryptedInvoiceContent: nieprawidłowe kodowanie Base64.") from exc
    if len(ciphertext) != body.encryptedInvoiceSize:
        raise KsefError(21402, "Rozmiar zaszyfrowanej faktury nie zgadza się z encryptedInvoiceSize.")
    if sha256_b64(ciphertext) != body.encryptedInvoiceHash:
        raise KsefError(21403, "Skrót zaszyfrowanej faktury nie zgadza się z encryptedInvoiceHash.")
    original = check_technical_correction(sim.store, caller.context, body.hashOfCorrectedInvoice, body.offlineMode, now)

    reference = reference_number(RefType.SESSION_INVOICE, now)
    final_at = now + timedelta(seconds=sim.settings.invoice_processing_delay_s)
    assert session.aes_key_b64 is not None  # require_open excludes sessions whose key failed
    try:
        content = aes_cbc_decrypt(b64decode(session.aes_key_b64), b64decode(session.iv_b64), ciphertext)
    except DecryptionError:
        # Decryption is part of the asynchronous processing: the send is accepted, the invoice ends in 435.
        verdict = failed_verdict(435, "Plik niepoprawnie zaszyfrowany")
        record_invoice(
            sim,
            session,
            reference=reference,
            invoice_hash=body.invoiceHash,
            invoice_size=body.invoiceSize,
            invoicing_date=now,
            final_at=final_at,
            verdict=verdict,
            offline_mode=body.offlineMode,
            hash_of_corrected_invoice=body.hashOfCorrectedInvoice,
        )
        session.updated_at = now
        sim.store.put(session)
        return SendInvoiceResponse(referenceNumber=reference)
    if len(content) != body.invoiceSize:
        raise KsefError(21402, f"invoiceSize {body.invoiceSize} ≠ rozmiar odszyfrowanej faktury {len(content)} B.")
    if sha256_b64(content) != body.invoiceHash:
        raise KsefError(21403, "invoiceHash nie zgadza się ze skrótem odszyfrowanej faktury.")

    form = find_form(session.form_code.systemCode, session.form_code.schemaVersion, session.form_code.value)
    assert form is not None
    with sim.store.batch():
        verdict = accept_invoice(
            sim,
            Submission(
                content=content,
                form=form,
                context=caller.context,
                session_reference_number=session.reference_number,
                invoice_reference_number=reference,
                invoicing_date=now,
                acquisition_date=final_at,
                offline_mode=body.offlineMode,
                hash_of_corrected_invoice=body.hashOfCorrectedInvoice,
                attachments_allowed=False,  # §5/§7: attachments only in batch sessions (415 online)
                max_size=limits["maxInvoiceSizeInMB"] * MB,
                max_size_with_attachment=limits["maxInvoiceWithAttachmentSizeInMB"] * MB,
            ),
        )
        record = record_invoice(
            sim,
            session,
            reference=reference,
            invoice_hash=body.invoiceHash,
            invoice_size=body.invoiceSize,
            invoicing_date=now,
            final_at=final_at,
            verdict=verdict,
            offline_mode=body.offlineMode,
            hash_of_corrected_invoice=body.hashOfCorrectedInvoice,
        )
        if original is not None:
            original.corrected_by = record.reference_number
            sim.store.put(original)
        session.updated_at = now
        sim.store.put(session)
    return SendInvoiceResponse(referenceNumber=reference)


@router.post("/sessions/online/{referenceNumber}/close", status_code=204)
async def close_online_session(
    referenceNumber: str,
    request: Request,
    caller: Annotated[Caller, Depends(access(Group.ONLINE_SESSION))],
) -> Response:
    caller.require_any(*SEND_PERMISSIONS)
    sim = get_sim(request)
    now = sim.clock.now()
    session = load_session(sim, caller, referenceNumber, ONLINE)
    require_open(session, now)
    session.closed_at = now
    session.updated_at = now
    sim.store.put(session)
    return Response(status_code=204)
