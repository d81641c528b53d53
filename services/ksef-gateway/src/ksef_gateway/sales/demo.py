"""Demo sales invoices for the embedded mode (``make run``): the active demo client sends four invoices through the
same use case as ``POST /clients/{nip}/sales`` — two accepted, one sent again (KSeF's 440, resolved to the first
one's KSeF number) and one KSeF refuses (an issue date in the future, 450) — and, under the client's auto-send
rules (pro-formas ``PRO/*`` held, a backfill on the 5th), a pro-forma that waits as ``held``; and ``FV/DEMO/4``
issued offline24 with KOD II, signed by a demo Offline certificate (self-signed here; KSeF issues the real one).

Idempotent across restarts: each has its own Idempotency-Key, and a key already in the database is not submitted
again (the document would differ: it is rendered on the day of the start).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ksef_gateway.sales.deadlines import OfflineMode
from ksef_gateway.sales.rendering import SalesInvoiceIn, render_fa3
from ksef_gateway.sales.rules import AutoSendRules, SeriesAction, SeriesRule
from ksef_gateway.sales.service import SalesInvoices
from ksef_gateway.vault.offline import OfflineCertificates

log = logging.getLogger(__name__)

DEMO_ACTOR = "system:embedded-demo"
DEMO_BUYER = {
    "nip": "5260250274",
    "name": "Sklep Spożywczy Pod Lipą Sp. z o.o.",
    "address": {"line1": "ul. Lipowa 7", "line2": "00-950 Warszawa"},
}


def _invoice(seller_nip: str, seller_name: str, number: str, issued: datetime, lines: list[dict[str, Any]]) -> bytes:
    document = SalesInvoiceIn.model_validate(
        {
            "number": number,
            "issue_date": issued.date().isoformat(),
            "seller": {"nip": seller_nip, "name": seller_name, "address": {"line1": "ul. Piekarska 3"}},
            "buyer": DEMO_BUYER,
            "lines": lines,
            "payment": {"due_date": (issued + timedelta(days=14)).date().isoformat(), "method": "transfer"},
        }
    )
    return render_fa3(document, generated_at=issued)


BREAD = [
    {"name": "Chleb żytni 800 g", "unit": "szt.", "quantity": "120", "unit_net_price": "6.20", "rate": "5"},
    {"name": "Bułka kajzerka", "unit": "szt.", "quantity": "400", "unit_net_price": "0.65", "rate": "5"},
]
CAKE = [
    {"name": "Tort urodzinowy na zamówienie", "unit": "szt.", "quantity": "2", "unit_net_price": "120.00", "rate": "8"},
    {"name": "Dostawa", "unit": "usł.", "quantity": "1", "unit_net_price": "40.00", "rate": "23"},
]


def _demo_offline_certificate(nip: str, name: str, now: datetime) -> tuple[str, str]:
    """An Offline-type certificate as KSeF issues them (EC P-256, a 64-bit serial, nonRepudiation), self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (offline, demo)"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"NIP-{nip}"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(63) | 1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=730))
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem


async def ensure_demo_sales(
    sales: SalesInvoices, seller_nip: str, seller_name: str, offline_certificates: OfflineCertificates | None = None
) -> int:
    """Submit what is not in the database yet; how many were submitted now."""
    now = datetime.now(UTC)
    first = _invoice(seller_nip, seller_name, "FV/DEMO/1", now, BREAD)
    plan = [
        ("demo-sales-1", first),
        ("demo-sales-2", _invoice(seller_nip, seller_name, "FV/DEMO/2", now, CAKE)),
        # The first invoice again, as an ERP that lost the answer would send it: KSeF says 440.
        ("demo-sales-1-again", first),
        # Dated the day after tomorrow: KSeF refuses an issue date after its receipt (REFERENCE.md §8, code 450).
        ("demo-sales-3", _invoice(seller_nip, seller_name, "FV/DEMO/3", now + timedelta(days=2), BREAD)),
    ]
    if (await sales.rules(seller_nip))[1] is None:
        rules = AutoSendRules(series=[SeriesRule(pattern="PRO/*", action=SeriesAction.HOLD)], backfill_day=5)
        await sales.set_rules(seller_nip, rules, by=DEMO_ACTOR)
    plan.append(("demo-sales-proforma", _invoice(seller_nip, seller_name, "PRO/DEMO/1", now, CAKE)))
    if offline_certificates is not None and await offline_certificates.view(seller_nip) is None:
        certificate_pem, key_pem = _demo_offline_certificate(seller_nip, seller_name, now)
        await offline_certificates.put(seller_nip, certificate_pem, key_pem, None, actor=DEMO_ACTOR)
    offline_key = "demo-sales-offline24"
    submitted = 0
    if offline_certificates is not None and await sales.by_idempotency_key(seller_nip, offline_key) is None:
        xml = _invoice(seller_nip, seller_name, "FV/DEMO/4", now, BREAD)
        await sales.submit(
            seller_nip,
            xml,
            source="xml",
            content_type="application/xml",
            body=xml,
            idempotency_key=offline_key,
            submitted_by=DEMO_ACTOR,
            offline=OfflineMode.OFFLINE24,
        )
        submitted += 1
    for key, xml in plan:
        if await sales.by_idempotency_key(seller_nip, key) is not None:
            continue
        await sales.submit(
            seller_nip,
            xml,
            source="xml",
            content_type="application/xml",
            body=xml,
            idempotency_key=key,
            submitted_by=DEMO_ACTOR,
        )
        submitted += 1
    if submitted:
        log.info("demo: %d sales invoice(s) of NIP %s queued for KSeF", submitted, seller_nip)
    return submitted
