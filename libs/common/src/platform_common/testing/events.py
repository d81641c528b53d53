"""Events as their producers would publish them, for tests of the services that consume them."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from platform_common.contracts import InvoiceFetched, Party
from platform_common.messaging.envelope import Envelope, EventContract

_serial = itertools.count(1)


def ksef_number(seller_nip: str, issued: date, serial: int | None = None) -> str:
    """A well-formed KSeF number: the seller's NIP, the date, a 12-hex-digit serial, a 2-hex-digit check."""
    serial = next(_serial) if serial is None else serial
    return f"{seller_nip}-{issued:%Y%m%d}-{serial:012X}-{serial % 256:02X}"


def invoice_fetched(
    client_nip: str,
    *,
    seller_nip: str = "5213000001",
    seller_name: str = "Hurtownia Papieru Sp. z o.o.",
    issued: date = date(2026, 11, 14),
    number: str | None = None,
    gross: Decimal | str = "123.00",
    invoice_type: str = "VAT",
    corrects: str | None = None,
    currency: str = "PLN",
    **overrides: Any,
) -> InvoiceFetched:
    gross = Decimal(gross)
    net = (gross / Decimal("1.23")).quantize(Decimal("0.01"))
    ksef = overrides.pop("ksef_number", None) or ksef_number(seller_nip, issued)
    values: dict[str, Any] = {
        "ksef_number": ksef,
        "client_nip": client_nip,
        "seller": Party(nip=seller_nip, name=seller_name),
        "buyer": Party(nip=client_nip, name="Nabywca"),
        "p_1": issued,
        "p_2": number or f"FV/{ksef[-15:-3]}",
        "net_amount": net,
        "vat_amount": gross - net,
        "gross_amount": gross,
        "vat_amount_pln": gross - net if currency == "PLN" else None,
        "currency": currency,
        "invoice_type": invoice_type,
        "corrected_ksef_number": corrects,
        "acquisition_date": datetime.combine(issued, datetime.min.time(), UTC).replace(hour=12),
        "invoice_hash": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "xml_ref": f"/clients/{client_nip}/invoices/{ksef}/xml",
    }
    return InvoiceFetched(**(values | overrides))


def envelope_of(contract: EventContract, *, producer: str, client_nip: str | None = None) -> Envelope:
    return Envelope.wrap(contract, producer=producer, client_nip=client_nip)
