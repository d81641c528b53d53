"""What the sales tests share: the ``Hub`` a test drives (the gateway's HTTP API, its outbox, the simulator's
records) and invoices to send."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from random import Random
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from ksef_gateway.budget import domain as budget_domain
from ksef_gateway.budget.domain import Limits
from ksef_gateway.db import messaging_tables
from ksef_gateway.sales.deadlines import WARSAW
from ksef_gateway.sales.domain import SalesStatus
from ksef_gateway.sales.rendering import SalesInvoiceIn, render_fa3
from ksef_gateway.wiring import Gateway
from ksef_sim.records import StoredInvoice
from ksef_sim.testing import RunningSim
from platform_common.testing import wait_until


@dataclass
class Hub:
    api: httpx.AsyncClient
    gateway: Gateway
    nip: str
    sender: dict[str, str]
    reader: dict[str, str]
    sim: RunningSim
    manager: str
    auto: dict[str, str]  # ksef.send.auto: the client's auto-send rules

    def accepted_in_sim(self) -> list[StoredInvoice]:
        return [i for i in self.sim.sim.store.all(StoredInvoice) if i.seller_nip == self.nip]

    async def submit(self, body: bytes | dict[str, Any], *, key: str | None = None) -> httpx.Response:
        headers = dict(self.sender)
        if key is not None:
            headers["Idempotency-Key"] = key
        if isinstance(body, dict):
            return await self.api.post(f"/clients/{self.nip}/sales", json=body, headers=headers)
        headers["Content-Type"] = "application/xml"
        return await self.api.post(f"/clients/{self.nip}/sales", content=body, headers=headers)

    async def final(self, invoice_id: str) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            r = await self.api.get(f"/clients/{self.nip}/sales/{invoice_id}", headers=self.reader)
            assert r.status_code == 200, r.text
            return r.json() if SalesStatus(r.json()["status"]).final else None

        return await wait_until(done, timeout=30, interval=0.05, what=f"sales invoice {invoice_id} decided")

    async def events(self, topic: str) -> list[dict[str, Any]]:
        outbox = messaging_tables.outbox
        async with self.gateway.runtime.db.sessionmaker() as session:
            rows = (await session.execute(select(outbox.c.payload).where(outbox.c.topic == topic))).all()
        envelopes = [json.loads(r.payload) for r in rows]
        return [e["payload"] for e in envelopes if e.get("client_nip") == self.nip]

    def invoice(self, number: str, *, nip: str | None = None, **kwargs: Any) -> dict[str, Any]:
        return invoice(nip or self.nip, number, **kwargs)

    def fa3(self, number: str, *, nip: str | None = None, **kwargs: Any) -> bytes:
        return fa3(nip or self.nip, number, **kwargs)

    def offline_certificate(self) -> tuple[str, str, x509.Certificate]:
        return offline_certificate(self.nip)

    async def register_offline_certificate(self) -> x509.Certificate:
        """The client's Offline certificate stored through the API (what KOD II is signed with)."""
        cert_pem, key_pem, certificate = self.offline_certificate()
        r = await self.api.put(
            f"/clients/{self.nip}/offline-certificate",
            json={"certificate_pem": cert_pem, "private_key_pem": key_pem},
            headers={"Authorization": self.manager},
        )
        assert r.status_code == 200, r.text
        return certificate


async def submit(hub: Hub, numbers: list[str]) -> dict[str, bytes]:
    """An FA(3) invoice submitted (202) for each number, in order: by the id the gateway gave it, with its XML."""
    sent: dict[str, bytes] = {}
    for number in numbers:
        xml = hub.fa3(number)
        response = await hub.submit(xml)
        assert response.status_code == 202, response.text
        sent[response.json()["id"]] = xml
    return sent


async def leased(gateway: Gateway, nip: str) -> bool:
    return gateway.leases.holds(nip) or await gateway.leases.try_acquire(nip)


def invoice(nip: str, number: str, *, issue_date: date | None = None, price: str = "100.00") -> dict[str, Any]:
    return {
        "number": number,
        "issue_date": (issue_date or datetime.now(WARSAW).date()).isoformat(),
        "seller": {"nip": nip, "name": "Piekarnia Testowa Sp. z o.o.", "address": {"line1": "ul. Chlebowa 1"}},
        "buyer": {
            "nip": "5260250274",
            "name": "Hurtownia Odbiorca S.A.",
            "address": {"line1": "ul. Handlowa 2", "line2": "00-950 Warszawa"},
        },
        "lines": [
            {"name": "Chleb żytni", "unit": "szt.", "quantity": "10", "unit_net_price": price, "rate": "5"},
            {"name": "Usługa dostawy", "quantity": "1", "unit_net_price": "50.00", "rate": "23"},
        ],
    }


def fa3(nip: str, number: str, **kwargs: Any) -> bytes:
    return render_fa3(SalesInvoiceIn.model_validate(invoice(nip, number, **kwargs)), generated_at=datetime.now(UTC))


def offline_certificate(nip: str) -> tuple[str, str, x509.Certificate]:
    """A KSeF-like Offline certificate: EC P-256, a 64-bit serial, key usage nonRepudiation (REFERENCE.md §11)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Offline {nip}")])
    now = datetime.now(UTC)
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
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(Random(nip).getrandbits(63) | 1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem, certificate


def widen_windows(monkeypatch: pytest.MonkeyPatch, groups: tuple[str, ...]) -> None:
    """KSeF's per-second limits stay; the minute and hour windows of ``groups`` are widened ten times, as KSeF's
    TEST environment lets a context raise them (POST /testdata/rate-limits)."""
    table = dict(budget_domain.PRODUCTION_LIMITS)
    for group in groups:
        limits = table[group]
        table[group] = Limits(limits.per_second, 10 * limits.per_minute, 10 * limits.per_hour)
    monkeypatch.setattr(budget_domain, "PRODUCTION_LIMITS", table)
