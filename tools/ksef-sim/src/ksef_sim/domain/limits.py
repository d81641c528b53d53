"""Per-context session limits and per-subject certificate limits (``GET /limits/context``, ``GET /limits/subject``),
changeable on TEST through ``/testdata/limits/*`` (REFERENCE.md §8, §17, §18).

Values live in the store meta so they survive restarts. Sessions and certificate enrollment read them from here.
"""

from __future__ import annotations

from typing import Any

from ksef_sim.security import Identifier
from ksef_sim.store import Store

# Spec examples / docs defaults: 1 MB per invoice, 3 MB with attachments, 10 000 invoices per session.
DEFAULT_SESSION_LIMITS: dict[str, int] = {
    "maxInvoiceSizeInMB": 1,
    "maxInvoiceWithAttachmentSizeInMB": 3,
    "maxInvoices": 10000,
}
# REFERENCE.md §17: a NIP may file 300 enrollments and hold 100 active certificates; a PESEL or fingerprint 12 / 6.
DEFAULT_ENTITY_CERTIFICATE_LIMITS = {"maxEnrollments": 300, "maxCertificates": 100}
DEFAULT_PERSON_CERTIFICATE_LIMITS = {"maxEnrollments": 12, "maxCertificates": 6}


def _context_key(context: Identifier) -> str:
    return f"limits:context:{context.type}:{context.value}"


def _subject_key(subject: Identifier) -> str:
    return f"limits:subject:{subject.type}:{subject.value}"


def context_limits(store: Store, context: Identifier) -> dict[str, dict[str, int]]:
    """``{"onlineSession": {...}, "batchSession": {...}}`` in force for ``context`` (EffectiveContextLimits)."""
    saved: dict[str, Any] = store.get_meta(_context_key(context)) or {}
    return {kind: {**DEFAULT_SESSION_LIMITS, **(saved.get(kind) or {})} for kind in ("onlineSession", "batchSession")}


def set_context_limits(store: Store, context: Identifier, limits: dict[str, dict[str, int]]) -> None:
    store.set_meta(_context_key(context), limits)


def reset_context_limits(store: Store, context: Identifier) -> None:
    store.set_meta(_context_key(context), None)


def subject_limits(store: Store, subject: Identifier) -> dict[str, int]:
    """``{"maxEnrollments": n, "maxCertificates": n}`` in force for ``subject``."""
    defaults = DEFAULT_ENTITY_CERTIFICATE_LIMITS if subject.type == "Nip" else DEFAULT_PERSON_CERTIFICATE_LIMITS
    saved: dict[str, Any] = store.get_meta(_subject_key(subject)) or {}
    return {**defaults, **{k: int(v) for k, v in saved.items() if v is not None}}


def set_subject_limits(
    store: Store, subject: Identifier, *, max_enrollments: int | None, max_certificates: int | None
) -> None:
    saved: dict[str, Any] = store.get_meta(_subject_key(subject)) or {}
    if max_enrollments is not None:
        saved["maxEnrollments"] = max_enrollments
    if max_certificates is not None:
        saved["maxCertificates"] = max_certificates
    store.set_meta(_subject_key(subject), saved)


def reset_subject_limits(store: Store, subject: Identifier) -> None:
    store.set_meta(_subject_key(subject), None)
