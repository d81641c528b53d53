"""Verification and acceptance of one invoice, shared by online sends, batch processing and seeding
(REFERENCE.md §7, §8, §10).

Order of checks, each ending in the invoice status KSeF reports:
1. file: no UTF-8 BOM, valid UTF-8, a declared encoding must be UTF-8, no processing instructions → 430;
2. well-formed XML and XSD of the session's form → 450 with the validator's messages;
3. P_1 not later than the acceptance day → 450;
4. the context may issue for Podmiot1 → 410;
5. attachments (``Zalacznik``) only where allowed → 415;
6. duplicate (Podmiot1 NIP, RodzajFaktury, P_2) among accepted invoices → 440 with the original's numbers;
then the invoice is accepted: KSeF number, storage times, ``StoredInvoice`` and its XML blob.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from ksef_sim.crypto import sha256_b64
from ksef_sim.domain import fa
from ksef_sim.domain.sessions import INVOICE_DESCRIPTIONS, SessionInvoice
from ksef_sim.errors import KsefError
from ksef_sim.records import StoredInvoice, storage_times
from ksef_sim.refs import ksef_number
from ksef_sim.security import Identifier
from ksef_sim.state import Sim
from ksef_sim.store import Store

WARSAW = ZoneInfo("Europe/Warsaw")
BOM = b"\xef\xbb\xbf"
_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._\-]+)[\"']", re.S)
_PROCESSING_INSTRUCTION = re.compile(rb"<\?(?!xml[\s?])[A-Za-z_]", re.I)
# Podmiot3 roles that issue the invoice on the seller's behalf (FA(3) Rola 5 Wystawca faktury, 7 JST – wystawca,
# 9 Członek grupy VAT – wystawca).
_ISSUER_ROLES = {5, 7, 9}


@dataclass(frozen=True)
class Submission:
    """One invoice to verify. ``invoicing_date`` = receipt (online) or session open (batch); ``acquisition_date``
    = when its processing ends and the KSeF number becomes visible."""

    content: bytes
    form: fa.InvoiceForm
    context: Identifier
    session_reference_number: str
    invoice_reference_number: str
    invoicing_date: datetime
    acquisition_date: datetime
    offline_mode: bool = False
    hash_of_corrected_invoice: str | None = None
    attachments_allowed: bool = False
    max_size: int | None = None
    max_size_with_attachment: int | None = None


@dataclass
class Verdict:
    code: int
    description: str
    details: list[str] | None = None
    extensions: dict[str, str | None] | None = None
    facts: fa.InvoiceFacts | None = None
    invoicing_mode: str | None = None
    invoice: StoredInvoice | None = None


def _reject(code: int, *details: str, facts: fa.InvoiceFacts | None = None) -> Verdict:
    return Verdict(code, INVOICE_DESCRIPTIONS[code], list(details) or None, facts=facts)


def check_file(content: bytes) -> list[str]:
    """§8 file rules (430); empty when the bytes are acceptable."""
    if content.startswith(BOM):
        return ["Plik faktury zawiera znacznik BOM; wymagane jest kodowanie UTF-8 bez BOM."]
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return ["Nieprawidłowe kodowanie znaków; wymagane jest kodowanie UTF-8."]
    declared = _DECLARED_ENCODING.match(content)
    if declared and declared.group(1).decode("ascii").lower().replace("_", "-") not in ("utf-8", "utf8"):
        return [f"Zadeklarowane kodowanie {declared.group(1).decode('ascii')} jest niedozwolone; wymagane UTF-8."]
    if _PROCESSING_INSTRUCTION.search(content):
        return ["Plik faktury zawiera instrukcje przetwarzania (processing instructions), które są niedozwolone."]
    return []


def warsaw_day(instant: datetime) -> date:
    return instant.astimezone(WARSAW).date()


def may_issue(facts: fa.InvoiceFacts, context: Identifier) -> bool:
    """Whether an invoice with these parties may be sent in ``context`` (410 otherwise).

    Accepted: the seller itself (context NIP, or the NIP part of an InternalId / NipVatUe context); the buyer when
    the invoice is self-billed (P_17=1); a PodmiotUpowazniony; a Podmiot3 acting as issuer (Rola 5/7/9).
    Whether the grant behind self-invoicing or representation exists is not checked (the permissions in the
    access token already admitted the caller to the context).
    """
    nip = context.value.split("-", 1)[0] if context.type in ("Nip", "InternalId", "NipVatUe") else None
    if nip is None:
        return False
    if facts.seller_nip == nip:
        return True
    if facts.is_self_invoicing and facts.buyer_identifier.type == "Nip" and facts.buyer_identifier.value == nip:
        return True
    if facts.authorized_subject is not None and facts.authorized_subject.nip == nip:
        return True
    return any(
        subject.role in _ISSUER_ROLES
        and subject.identifier.value is not None
        and subject.identifier.value.split("-", 1)[0] == nip
        for subject in facts.third_subjects
    )


# Duplicate index: (seller NIP, invoice type, P_2) → accepted invoice, built from StoredInvoice records and
# extended incrementally (seeding writes StoredInvoice directly, so the records are the source of truth).
_DUPLICATE_INDEX: weakref.WeakKeyDictionary[Store, tuple[int, dict[tuple[str, str, str], StoredInvoice]]] = (
    weakref.WeakKeyDictionary()
)


def _duplicate_key(seller_nip: str, invoice_type: str, invoice_number: str) -> tuple[str, str, str]:
    return seller_nip, invoice_type, invoice_number


def find_duplicate(store: Store, seller_nip: str, invoice_type: str, invoice_number: str) -> StoredInvoice | None:
    count = store.count(StoredInvoice)
    seen, index = _DUPLICATE_INDEX.get(store, (0, {}))
    if count < seen:
        seen, index = 0, {}
    if count > seen:
        for invoice in store.all(StoredInvoice)[seen:]:
            index.setdefault(_duplicate_key(invoice.seller_nip, invoice.invoice_type, invoice.invoice_number), invoice)
        _DUPLICATE_INDEX[store] = (count, index)
    found = index.get(_duplicate_key(seller_nip, invoice_type, invoice_number))
    # A record may have been replaced since it was indexed; trust the store.
    return store.get(StoredInvoice, found.ksef_number) if found is not None else None


def check_technical_correction(
    store: Store, context: Identifier, hash_of_corrected_invoice: str | None, offline_mode: bool, now: datetime
) -> SessionInvoice | None:
    """§8 technical correction, checked synchronously on send: 400 21166 when unavailable, 21167 when the
    original's status forbids it. Returns the corrected original (``None`` when this is no correction)."""
    if hash_of_corrected_invoice is None:
        return None
    if not offline_mode:
        raise KsefError(21166, "Korekta techniczna jest dostępna wyłącznie dla faktur wystawionych w trybie offline.")
    candidates = [
        invoice
        for invoice in store.all(SessionInvoice)
        if invoice.invoice_hash == hash_of_corrected_invoice
        and invoice.context_type == context.type
        and invoice.context_value == context.value
    ]
    if not candidates:
        raise KsefError(21166, "Nie znaleziono faktury o wskazanym skrócie (hashOfCorrectedInvoice).")
    original = candidates[-1]
    if not original.is_final(now) or original.code == 200 or original.invoicing_mode == "Online":
        raise KsefError(21167)
    if original.corrected_by is not None:
        corrected = store.get(SessionInvoice, original.corrected_by)
        if corrected is not None and (not corrected.is_final(now) or corrected.code == 200):
            raise KsefError(21167, "Faktura została już skorygowana technicznie.")
    return original


def accept_invoice(sim: Sim, submission: Submission) -> Verdict:
    """Verify ``submission`` and, when it passes, store it as accepted (``Verdict.invoice``)."""
    content = submission.content
    file_errors = check_file(content)
    if file_errors:
        return _reject(430, *file_errors)
    try:
        root = fa.parse_xml(content)
    except fa.InvalidXml:
        # Observed on TEST (ksef-api #141, #556): malformed XML ends in 450 "Nieprawidłowy XML".
        return _reject(450, "Nieprawidłowy XML")
    messages = fa.validate(root, submission.form)
    if messages:
        return _reject(450, *messages)
    facts = fa.extract_facts(root)
    if submission.max_size is not None:
        limit = submission.max_size_with_attachment if facts.has_attachment else submission.max_size
        if limit is not None and len(content) > limit:
            return _reject(430, f"Rozmiar pliku faktury ({len(content)} B) przekracza dopuszczalny limit ({limit} B).")
    invoicing_day = warsaw_day(submission.invoicing_date)
    if facts.issue_date > invoicing_day:
        return _reject(
            450, "Data wystawienia faktury (P_1) nie może być późniejsza niż data przyjęcia faktury.", facts=facts
        )
    if not may_issue(facts, submission.context):
        return _reject(
            410,
            f"Podmiot {submission.context.type} {submission.context.value} nie ma uprawnień do wystawienia faktury "
            f"w imieniu sprzedawcy {facts.seller_nip}.",
            facts=facts,
        )
    if facts.has_attachment and not submission.attachments_allowed:
        return _reject(415, facts=facts)
    original = find_duplicate(sim.store, facts.seller_nip, facts.invoice_type, facts.invoice_number)
    if original is not None:
        verdict = _reject(
            440,
            f"Duplikat faktury. Faktura o numerze KSeF: {original.ksef_number} została już prawidłowo przesłana do "
            f"systemu w sesji: {original.session_reference_number}",
            facts=facts,
        )
        verdict.extensions = {
            "originalSessionReferenceNumber": original.session_reference_number,
            "originalKsefNumber": original.ksef_number,
        }
        return verdict

    # §8: offlineMode=false is upgraded to Offline when the issue day is before the acceptance day.
    mode = "Offline" if submission.offline_mode or facts.issue_date < invoicing_day else "Online"
    number = ksef_number(
        facts.seller_nip, submission.invoicing_date.astimezone(WARSAW), sim.store.next_sequence("ksef")
    )
    permanent, indexed = storage_times(
        submission.acquisition_date,
        sim.settings.permanent_storage_delay_s,
        sim.settings.permanent_storage_jitter_s,
        sim.rng.random(),
    )
    invoice = StoredInvoice(
        ksef_number=number,
        invoice_number=facts.invoice_number,
        issue_date=facts.issue_date,
        invoicing_date=submission.invoicing_date,
        acquisition_date=submission.acquisition_date,
        permanent_storage_date=permanent,
        indexed_at=indexed,
        seller_nip=facts.seller_nip,
        seller_name=facts.seller_name,
        buyer_identifier=facts.buyer_identifier,
        buyer_name=facts.buyer_name,
        net_amount=facts.net_amount,
        vat_amount=facts.vat_amount,
        gross_amount=facts.gross_amount,
        currency=facts.currency,
        invoicing_mode=mode,
        invoice_type=facts.invoice_type,
        form_code=submission.form.form_code,
        is_self_invoicing=facts.is_self_invoicing,
        has_attachment=facts.has_attachment,
        invoice_hash=sha256_b64(content),
        invoice_size=len(content),
        hash_of_corrected_invoice=submission.hash_of_corrected_invoice,
        corrected_invoice_ksef_number=facts.corrected_invoice_ksef_number,
        third_subjects=facts.third_subjects,
        authorized_subject=facts.authorized_subject,
        session_reference_number=submission.session_reference_number,
        invoice_reference_number=submission.invoice_reference_number,
        context_type=submission.context.type,
        context_value=submission.context.value,
    )
    sim.store.put_blob(invoice.blob_name, content)
    sim.store.put(invoice)  # appended last, so find_duplicate's incremental index picks it up
    return Verdict(200, INVOICE_DESCRIPTIONS[200], facts=facts, invoicing_mode=mode, invoice=invoice)
