"""The simulator driven by an INDEPENDENT client: the PyPI package ``ksef-client`` (0.20.0), unmodified, over real
HTTP against uvicorn on loopback.

Nothing of the simulator's own client-side helpers is used: the XAdES ``AuthTokenRequest`` is built by ksef-client and
signed here with signxml; every request, cipher, hash check, archive unpacking and response parsing is ksef-client's.
If this test fails, the simulator disagrees with a client written against the official spec and the real service.

Pre-signed links: ksef-client refuses links whose literal host is ``localhost`` or a loopback address (an SSRF guard),
and wants https unless ``strict_presigned_url_validation=False``. The simulator is configured with the public base URL
``http://ksef-sim.test:<port>``, the name resolves to 127.0.0.1 inside this process only (``resolve_to_loopback``),
and the client runs with ``strict_presigned_url_validation=False``, which only relaxes the https requirement.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ksef_client import KsefClient, KsefClientOptions
from ksef_client.models import (
    FormCode,
    GenerateTokenRequest,
    InvoiceExportRequest,
    InvoiceQueryDateRange,
    InvoiceQueryFilters,
    TokenPermissionType,
)
from ksef_client.services import (
    AuthCoordinator,
    ExportWorkflow,
    OnlineSessionWorkflow,
    build_auth_token_request_xml,
    build_encryption_data,
    update_continuation_point,
)
from lxml import etree
from signxml.xades.xades import XAdESSigner

from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.testing import SIM_HOST_NAME, RunningSim, resolve_to_loopback, serve

SELLER = "5265877635"
BUYER = "7352765225"
SPEC_PATH = Path("/work/shared/ksef/openapi/open-api.json")
SAMPLE = Path("/work/shared/ksef/samples/invoices/fa3/csharp-invoice-template-fa-3.xml")
UPO_NS = "http://upo.schematy.mf.gov.pl/KSeF/v4-3"
KSEF_NUMBER = re.compile(r"^\d{10}-\d{8}-[0-9A-F]{12}-[0-9A-F]{2}$")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

T = TypeVar("T")


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningSim]:
    for variable in PROXY_VARIABLES:  # a proxy from the environment would take ksef-sim.test off loopback
        monkeypatch.delenv(variable, raising=False)

    def settings(port: int) -> SimSettings:
        return SimSettings(
            database_path=tmp_path / "ksef-sim.sqlite3",
            public_base_url=f"http://{SIM_HOST_NAME}:{port}",
            rate_limits=RateLimitMode.OFF,
            invoice_processing_delay_s=0,
            permanent_storage_delay_s=0,
            permanent_storage_jitter_s=0,
            export_processing_delay_s=0,
            random_seed=20260310,
        )

    with resolve_to_loopback(SIM_HOST_NAME), serve(settings) as server:
        yield server


@pytest.fixture
def exchanges() -> list[httpx.Response]:
    return []


@pytest.fixture
def ksef(running: RunningSim, exchanges: list[httpx.Response]) -> Iterator[KsefClient]:
    options = KsefClientOptions(base_url=running.api_url, strict_presigned_url_validation=False, timeout_seconds=10)
    with KsefClient(options) as client:
        # Observation only: every response the client receives is kept for the spec check at the end of the test.
        # The hook reads the body (httpx requires it inside a response hook) and changes nothing the client sees.
        def record(response: httpx.Response) -> None:
            response.read()
            exchanges.append(response)

        client.http_client._client.event_hooks["response"].append(record)
        yield client


def assert_responses_match_the_spec(exchanges: list[httpx.Response]) -> int:
    """Every /v2 response the client got, validated against the official spec (status, content type, schema,
    headers) by schemathesis: the happy-path bodies the random conformance run cannot reach."""
    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    checked = 0
    problems = []
    for response in exchanges:
        path = response.request.url.path
        if not path.startswith("/v2/"):
            continue  # pre-signed storage links are not API operations
        operation = schema.find_operation_by_path(response.request.method, path[len("/v2") :])
        assert operation is not None, f"{response.request.method} {path} is not a spec operation"
        try:
            operation.validate_response(response)
        except (AssertionError, BaseExceptionGroup) as failure:
            problems.append(f"{response.request.method} {path} -> {response.status_code}: {failure}")
        checked += 1
    assert not problems, "\n".join(problems)
    return checked


def until(running: RunningSim, read: Callable[[], T], done: Callable[[T], bool], what: str) -> T:
    """Re-read until ``done``; between reads the SIMULATOR's clock moves on (no wall-clock sleeps)."""
    for _ in range(30):
        value = read()
        if done(value):
            return value
        running.sim.clock.advance(1)
    raise AssertionError(f"{what} did not finish; last: {value!r}")


def self_signed_person(nip: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed certificate naming the owner by NIP (``serialNumber=TINPL-<nip>``), accepted on TEST."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.GIVEN_NAME, "Jan"),
            x509.NameAttribute(NameOID.SURNAME, "Niezależny"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Jan Niezależny"),
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
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def xades_access_token(ksef: KsefClient, running: RunningSim, nip: str) -> str:
    """XAdES login of the context's owner: ksef-client builds the request, signxml signs it (XAdES-BES enveloped)."""
    challenge = ksef.auth.get_challenge()
    unsigned = build_auth_token_request_xml(
        challenge=challenge.challenge,
        context_identifier_type="Nip",
        context_identifier_value=nip,
        subject_identifier_type="certificateSubject",
    )
    key, certificate = self_signed_person(nip)
    signer = XAdESSigner(signature_algorithm="ecdsa-sha256", digest_algorithm="sha256")
    signed = signer.sign(etree.fromstring(unsigned.encode()), key=key, cert=[certificate])
    init = ksef.auth.submit_xades_auth_request(etree.tostring(signed, xml_declaration=True, encoding="utf-8").decode())
    assert init is not None
    authentication_token = init.authentication_token.token
    # KSeF decides asynchronously: 100 until the simulator's auth processing delay has passed (§3.5).
    status = until(
        running,
        lambda: ksef.auth.get_auth_status(init.reference_number, authentication_token),
        lambda s: s.status.code != 100,
        "XAdES authentication",
    )
    assert status.status.code == 200, status
    return ksef.auth.redeem_token(authentication_token).access_token.token


def ksef_token_access(ksef: KsefClient, running: RunningSim, nip: str) -> str:
    """Create a KSeF token (with an XAdES session), then log in with it through ksef-client's AuthCoordinator."""
    xades_token = xades_access_token(ksef, running, nip)
    generated = ksef.tokens.generate_token(
        GenerateTokenRequest(
            description="ksef-client interoperability",
            permissions=[TokenPermissionType.INVOICEREAD, TokenPermissionType.INVOICEWRITE],
        ),
        access_token=xades_token,
    )
    active = until(
        running,
        lambda: ksef.tokens.get_token_status(generated.reference_number, access_token=xades_token),
        lambda s: s.status.value == "Active",
        "KSeF token activation",
    )
    assert active.reference_number == generated.reference_number
    certificate = ksef.security.get_public_key_certificate("KsefTokenEncryption")
    result = AuthCoordinator(ksef.auth).authenticate_with_ksef_token(
        token=generated.token,
        public_certificate=certificate.certificate,
        context_identifier_type="Nip",
        context_identifier_value=nip,
        poll_interval_seconds=0.01,
        max_attempts=50,
    )
    assert result.access_token and result.refresh_token
    return result.access_token


def fa3_invoice(number: str, issue_day: str) -> bytes:
    """The Ministry's own FA(3) sample with its placeholders filled and our buyer in Podmiot2."""
    text = SAMPLE.read_text(encoding="utf-8")
    text = text.replace("#nip#", SELLER).replace("#invoice_number#", number)
    text = text.replace("<NIP>1111111111</NIP>", f"<NIP>{BUYER}</NIP>")
    text = re.sub(r"<P_1>[^<]*</P_1>", f"<P_1>{issue_day}</P_1>", text)
    return text.encode("utf-8")


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def presigned_get(ksef: KsefClient, url: str) -> bytes:
    """A pre-signed link the way ksef-client follows one: no token, its URL security validation applied."""
    assert url.startswith(f"http://{SIM_HOST_NAME}:"), url
    return ksef.http_client.request("GET", url, skip_auth=True).content


def upo_ksef_numbers(upo: bytes) -> list[str]:
    document = etree.fromstring(upo)
    return [node.text or "" for node in document.iter(f"{{{UPO_NS}}}NumerKSeFDokumentu")]


def test_ksef_client_end_to_end_against_the_real_http_simulator(
    ksef: KsefClient, running: RunningSim, exchanges: list[httpx.Response]
) -> None:
    # --- public keys, as the client selects them (current, by usage) -------------------------------------------
    symmetric = ksef.security.get_public_key_certificate("SymmetricKeyEncryption")

    # --- seller: token auth, online session, one FA(3) invoice ------------------------------------------------
    seller_token = ksef_token_access(ksef, running, SELLER)
    online = OnlineSessionWorkflow(ksef.sessions)
    session = online.open_session(
        form_code=FormCode(system_code="FA (3)", schema_version="1-0E", value="FA"),
        public_certificate=symmetric.certificate,
        access_token=seller_token,
    )
    today = datetime.now(ZoneInfo("Europe/Warsaw")).date().isoformat()
    invoice_xml = fa3_invoice("IND/1", today)
    sent = session.send_invoice(invoice_xml)
    status = until(
        running,
        lambda: session.get_invoice_status(sent.reference_number),
        lambda s: s.status.code != 150,
        "invoice processing",
    )
    assert status.status.code == 200, status.status
    assert status.invoice_hash == sha256_b64(invoice_xml)
    assert status.invoice_number == "FA/GRQMB-IND/1/05/2025"
    ksef_number = status.ksef_number
    assert ksef_number and KSEF_NUMBER.match(ksef_number) and ksef_number.startswith(SELLER)

    # The invoice's UPO three ways: by KSeF number, by invoice reference, and through its pre-signed link.
    upo_by_ksef = session.get_invoice_upo_by_ksef(ksef_number)
    assert upo_ksef_numbers(upo_by_ksef) == [ksef_number]
    assert session.get_invoice_upo_by_ref(sent.reference_number) == upo_by_ksef
    assert status.upo_download_url
    assert presigned_get(ksef, status.upo_download_url) == upo_by_ksef

    listed = session.list_invoices()
    assert [i.ksef_number for i in listed.invoices] == [ksef_number]

    session.close()
    closed = until(running, session.get_status, lambda s: s.status.code not in (100, 170), "closing the online session")
    assert closed.status.code == 200, closed.status
    assert (closed.invoice_count, closed.successful_invoice_count) == (1, 1)
    assert closed.upo and closed.upo.pages
    page = closed.upo.pages[0]
    session_upo = presigned_get(ksef, page.download_url)
    assert upo_ksef_numbers(session_upo) == [ksef_number]
    assert session.get_upo(page.reference_number) == session_upo

    # --- buyer: its own context and token; finds the purchase, downloads it, exports it -------------------------
    buyer_token = ksef_token_access(ksef, running, BUYER)
    window_from = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    found = ksef.invoices.query_invoice_metadata_by_date_range(
        subject_type="Subject2", date_type="PermanentStorage", date_from=window_from, access_token=buyer_token
    )
    assert [m.ksef_number for m in found.invoices] == [ksef_number]
    metadata = found.invoices[0]
    assert metadata.seller is not None and metadata.seller.nip == SELLER
    assert metadata.buyer is not None and metadata.buyer.identifier.value == BUYER
    assert (metadata.net_amount, metadata.vat_amount, metadata.gross_amount) == (43.60, 10.03, 53.63)
    assert found.permanent_storage_hwm_date

    content = ksef.invoices.get_invoice_bytes(ksef_number, access_token=buyer_token)
    assert content.content == invoice_xml
    assert content.sha256_base64 == sha256_b64(invoice_xml)

    # The seller does not see it as a buyer.
    as_seller = ksef.invoices.query_invoice_metadata_by_date_range(
        subject_type="Subject2", date_type="PermanentStorage", date_from=window_from, access_token=seller_token
    )
    assert as_seller.invoices == []

    encryption = build_encryption_data(symmetric.certificate)
    assert encryption.encryption_info is not None
    export = ksef.invoices.export_invoices(
        InvoiceExportRequest(
            encryption=encryption.encryption_info,
            filters=InvoiceQueryFilters(
                subject_type="Subject2",  # type: ignore[arg-type]
                date_range=InvoiceQueryDateRange(date_type="PermanentStorage", from_=window_from),  # type: ignore[arg-type]
            ),
        ),
        access_token=buyer_token,
    )
    exported = until(
        running,
        lambda: ksef.invoices.get_export_status(export.reference_number, access_token=buyer_token),
        lambda s: s.status.code != 100,
        "the export",
    )
    assert exported.status.code == 200, exported.status
    assert exported.package is not None and exported.package.invoice_count == 1
    processed = ExportWorkflow(ksef.invoices, ksef.http_client).download_and_process_package(
        exported.package, encryption
    )
    assert list(processed.invoice_xml_files.values()) == [invoice_xml.decode("utf-8")]
    assert [summary["ksefNumber"] for summary in processed.metadata_summaries] == [ksef_number]

    # Incremental download continues from the package's high-water mark (not truncated).
    points: dict[str, Any] = {}
    update_continuation_point(points, "Subject2", exported.package)
    assert points == {"Subject2": exported.package.permanent_storage_hwm_date}

    # --- and every API answer on the way matched the official spec --------------------------------------------
    checked = assert_responses_match_the_spec(exchanges)
    assert checked >= 25


def test_the_loopback_alias_covers_one_name_and_is_removed_afterwards() -> None:
    original = socket.getaddrinfo
    with resolve_to_loopback(SIM_HOST_NAME):
        for name in (SIM_HOST_NAME, SIM_HOST_NAME.upper() + ".", SIM_HOST_NAME.encode()):
            answers = socket.getaddrinfo(name, 8090, type=socket.SOCK_STREAM)
            assert {answer[4][0] for answer in answers} == {"127.0.0.1"}
        # Other names go to the real resolver unchanged (a literal address: no lookup leaves the machine).
        assert {a[4][0] for a in socket.getaddrinfo("127.0.0.2", 80, type=socket.SOCK_STREAM)} == {"127.0.0.2"}
        assert socket.getaddrinfo is not original
    assert socket.getaddrinfo is original
