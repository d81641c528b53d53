"""Test support for code that talks to KSeF (tests only; nothing in the service imports it): valid NIPs,
self-signed owner certificates as KSeF TEST accepts them (REFERENCE.md §18), a recording call observer, and a
harness around a simulator's URL (the simulator itself is started by the tests: the service never imports it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretBytes, SecretStr

from ksef_gateway.budget.service import Budget, Unlimited
from ksef_gateway.ksef import CertificateCredential, Environment, KsefClient, KsefClients, KsefTokenCredential
from ksef_gateway.ksef.client import CallRecord
from ksef_gateway.settings import KsefSettings

_WEIGHTS = (6, 5, 7, 2, 3, 4, 5, 6, 7)


def valid_nips(count: int, start: int = 526_000_000) -> list[str]:
    """``count`` distinct NIPs with a valid checksum that match KSeF's NIP pattern; deterministic."""
    found: list[str] = []
    body = start
    while len(found) < count:
        digits = str(body)
        check = sum(int(d) * w for d, w in zip(digits, _WEIGHTS, strict=False)) % 11
        if check != 10 and digits[0] != "0" and digits[1:3] != "00":
            found.append(digits + str(check))
        body += 7
    return found


def owner_key_and_certificate(nip: str, *, days: int = 30) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed EC certificate naming its owner by NIP (``serialNumber=TINPL-<nip>``), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"Owner {nip}"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"TINPL-{nip}"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
        ]
    )
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def owner_certificate(nip: str, *, days: int = 30) -> CertificateCredential:
    """``owner_key_and_certificate`` as the credential the KSeF client authenticates with."""
    key, certificate = owner_key_and_certificate(nip, days=days)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return CertificateCredential(certificate.public_bytes(serialization.Encoding.PEM), SecretBytes(pem))


def ksef_settings_for(api_url: str, replica_id: str = "replica-test", **overrides: object) -> KsefSettings:
    """Settings pointing the ``sim`` environment at ``api_url``, with test-friendly retry and poll delays."""
    values: dict[str, object] = {
        "sim_base_url": api_url,
        "replica_id": replica_id,
        "retry_initial_backoff_s": 0.0,
        "auth_poll_interval_s": 0.01,
    }
    values.update(overrides)
    return KsefSettings.model_validate(values)


class RecordingObserver:
    """A ``CallObserver`` keeping every record in memory."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []

    async def record(self, call: CallRecord) -> None:
        self.calls.append(call)

    def operations(self) -> list[str]:
        return [c.operation for c in self.calls]


@dataclass
class KsefHarness:
    """Our client against a simulator at ``root_url`` (its API under ``/v2``, its operator API under ``/_sim``)."""

    root_url: str
    http: httpx.AsyncClient
    budget: Budget = field(default_factory=Unlimited)
    recorder: RecordingObserver = field(default_factory=RecordingObserver)
    replica_id: str = "replica-test"

    def __post_init__(self) -> None:
        self.settings = ksef_settings_for(self.api_url, self.replica_id)
        self.clients = KsefClients(self.http, settings=self.settings, budget=self.budget, observer=self.recorder)

    @property
    def api_url(self) -> str:
        return f"{self.root_url}/v2"

    @property
    def client(self) -> KsefClient:
        return self.clients.for_environment(Environment.SIM)

    async def operator(self, method: str, path: str, json: object = None) -> httpx.Response:
        response = await self.http.request(method, f"{self.root_url}/_sim{path}", json=json)
        assert response.status_code < 400, response.text
        return response

    async def create_ksef_token(self, nip: str, permissions: tuple[str, ...] = ("InvoiceRead", "InvoiceWrite")) -> str:
        """A new KSeF token of the context's owner; creating one needs an XAdES session (§16)."""
        session = await self.client.authenticate(nip, owner_certificate(nip))
        response = await self.http.post(
            f"{self.api_url}/tokens",
            json={"permissions": list(permissions), "description": "gateway integration test"},
            headers={"Authorization": f"Bearer {session.access_token}"},
        )
        assert response.status_code == 202, response.text
        return str(response.json()["token"])

    async def token_credential(
        self, nip: str, permissions: tuple[str, ...] = ("InvoiceRead", "InvoiceWrite")
    ) -> KsefTokenCredential:
        return KsefTokenCredential(SecretStr(await self.create_ksef_token(nip, permissions)))
