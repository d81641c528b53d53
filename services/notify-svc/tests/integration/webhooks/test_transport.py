"""The webhook transport against real HTTP/1.1 receivers on 127.0.0.1 (plain and TLS): a delivery goes to the
address that was checked with the URL's name in ``Host`` and SNI, DNS is asked once, refused targets get no
connection, redirects are not followed, answers are read only up to the limit, and timeouts and closed ports come
back as results, not exceptions. Test resolvers map the names; nothing leaves loopback."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notify_svc.webhooks.targets import TargetPolicy, TargetRefused
from notify_svc.webhooks.transport import WebhookTransport
from platform_common.testing.http_receiver import Receiver, Reply

LOOPBACK = TargetPolicy.from_strings(require_https=False, allowed=["127.0.0.0/8"])
BODY = b'{"type":"invoice.fetched","data":{"id":"42"}}'
HEADERS = {"Content-Type": "application/json", "webhook-id": "msg_1"}
READ_TIMEOUT_S = 5.0


class TestResolver:
    """Answers from a table; counts the questions."""

    __test__ = False

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise TargetRefused(f"The host {host} cannot be resolved.")
        return self.answers[host]


StartReceiver = Callable[..., Awaitable[Receiver]]
MakeTransport = Callable[..., WebhookTransport]


@pytest.fixture
async def receivers() -> AsyncIterator[StartReceiver]:
    started: list[Receiver] = []

    async def start(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        started.append(receiver)
        return await receiver.start()

    yield start
    for receiver in started:
        await receiver.close()


@pytest.fixture
async def transports() -> AsyncIterator[MakeTransport]:
    made: list[WebhookTransport] = []

    def make(policy: TargetPolicy, resolver: TestResolver, **kwargs: Any) -> WebhookTransport:
        transport = WebhookTransport(policy, resolver, **kwargs)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.aclose()


async def test_a_delivery_reaches_the_checked_address_with_the_urls_name_as_host(
    receivers: StartReceiver, transports: MakeTransport
) -> None:
    receiver = await receivers(reply=lambda _: Reply(202, b'{"accepted":true}'))
    resolver = TestResolver({"erp.test": ["127.0.0.1"]})
    transport = transports(LOOPBACK, resolver)

    # Host, framing and User-Agent are the transport's, whatever the caller passes.
    headers = {**HEADERS, "Host": "elsewhere.test", "Content-Length": "1", "User-Agent": "spoofed"}
    result = await transport.post(f"http://erp.test:{receiver.port}/hooks?tenant=7", BODY, headers)

    assert (result.status, result.ok, result.error, result.refused) == (202, True, None, False)
    assert result.excerpt == '{"accepted":true}'
    assert result.latency_ms >= 0
    assert resolver.asked == [("erp.test", receiver.port)]
    [request] = receiver.requests
    assert (request.method, request.target, request.body) == ("POST", "/hooks?tenant=7", BODY)
    assert request.headers["host"] == f"erp.test:{receiver.port}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "msg_1"
    assert request.headers["user-agent"] == "KSeF-Hub-Webhooks/1.0"
    assert request.headers["content-length"] == str(len(BODY))
    assert request.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    "answers",
    [["10.0.0.5"], ["::ffff:10.0.0.5"], ["169.254.169.254"], ["127.0.0.1", "10.0.0.5"], ["64:ff9b::a9fe:a9fe"]],
)
async def test_a_name_resolving_to_a_refused_address_gets_no_connection(
    answers: list[str],
    receivers: StartReceiver,
    transports: MakeTransport,
) -> None:
    receiver = await receivers()
    transport = transports(LOOPBACK, TestResolver({"erp.test": answers}))

    result = await transport.post(f"http://erp.test:{receiver.port}/hooks", BODY, HEADERS)

    assert (result.status, result.ok, result.refused, result.excerpt) == (None, False, True, None)
    assert result.error is not None and result.error.startswith("target refused: The host erp.test resolves to ")
    # 127.0.0.1 (allowed, first in one answer) is where the receiver listens: refusing means never trying it.
    assert receiver.connections == 0


async def test_loopback_outside_the_allow_list_is_refused_and_never_reached(
    receivers: StartReceiver, transports: MakeTransport
) -> None:
    receiver = await receivers()
    dev = TargetPolicy(require_https=False)
    transport = transports(dev, TestResolver({"erp.test": ["127.0.0.1"]}))

    by_name = await transport.post(f"http://erp.test:{receiver.port}/", BODY, HEADERS)
    by_literal = await transport.post(f"http://0x7f.1:{receiver.port}/", BODY, HEADERS)

    assert by_name.refused and by_name.error == "target refused: The host erp.test resolves to a loopback address."
    assert by_literal.refused and by_literal.error == "target refused: The address 127.0.0.1 is a loopback address."
    assert receiver.connections == 0


async def test_a_redirect_is_not_followed(receivers: StartReceiver, transports: MakeTransport) -> None:
    landing = await receivers()
    location = f"http://landing.test:{landing.port}/elsewhere"
    first = await receivers(reply=lambda _: Reply(302, b"moved", (("Location", location),)))
    resolver = TestResolver({"erp.test": ["127.0.0.1"], "landing.test": ["127.0.0.1"]})
    transport = transports(LOOPBACK, resolver)

    result = await transport.post(f"http://erp.test:{first.port}/hooks", BODY, HEADERS)

    assert (result.status, result.ok, result.excerpt) == (302, False, "moved")
    assert result.error == f"redirect not followed (HTTP 302 to {location})"
    assert len(first.requests) == 1
    assert landing.connections == 0
    assert resolver.asked == [("erp.test", first.port)]


async def test_an_oversized_answer_is_read_only_up_to_the_limit(
    receivers: StartReceiver, transports: MakeTransport
) -> None:
    # 4 KiB of a declared 10 MB, and then the receiver stalls: a transport reading on past its 1 KiB limit would
    # wait for the rest until its read timeout (5 s), so answering well before it shows that reading stopped.
    stalled_ok = await receivers(reply=lambda _: Reply(200, b"a" * 4096, content_length=10_000_000, hold_open=True))
    stalled_error = await receivers(reply=lambda _: Reply(500, b"e" * 4096, content_length=10_000_000, hold_open=True))
    exact = await receivers(reply=lambda _: Reply(500, b"x" * 1024))
    transport = transports(
        LOOPBACK, TestResolver({"erp.test": ["127.0.0.1"]}), max_response_bytes=1024, read_timeout_s=READ_TIMEOUT_S
    )

    delivered = await transport.post(f"http://erp.test:{stalled_ok.port}/", BODY, HEADERS)
    failed = await transport.post(f"http://erp.test:{stalled_error.port}/", BODY, HEADERS)
    at_limit = await transport.post(f"http://erp.test:{exact.port}/", BODY, HEADERS)

    # A 2xx is a delivery, however long its answer: no error, the excerpt cut to 500 characters.
    assert (delivered.status, delivered.ok, delivered.error, delivered.excerpt) == (200, True, None, "a" * 500)
    assert (failed.status, failed.error, failed.excerpt) == (500, "response too large (HTTP 500)", "e" * 500)
    assert (at_limit.status, at_limit.error) == (500, "HTTP 500")
    assert delivered.latency_ms < READ_TIMEOUT_S * 1000
    assert failed.latency_ms < READ_TIMEOUT_S * 1000


async def test_a_receiver_that_never_answers_is_a_read_timeout(
    receivers: StartReceiver, transports: MakeTransport
) -> None:
    silent = await receivers(reply=None)
    transport = transports(LOOPBACK, TestResolver({"erp.test": ["127.0.0.1"]}), read_timeout_s=0.2)

    result = await transport.post(f"http://erp.test:{silent.port}/", BODY, HEADERS)

    assert (result.status, result.ok, result.error, result.refused, result.excerpt) == (
        None,
        False,
        "read timeout",
        False,
        None,
    )
    assert silent.connections == 1
    assert result.latency_ms >= 200


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connecting is refused at once, and no other test or process can take the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


async def test_a_closed_port_is_a_connection_failure(closed_port: int, transports: MakeTransport) -> None:
    transport = transports(LOOPBACK, TestResolver({"erp.test": ["127.0.0.1"]}))

    result = await transport.post(f"http://erp.test:{closed_port}/", BODY, HEADERS)

    assert (result.status, result.ok, result.refused, result.excerpt) == (None, False, False, None)
    assert result.error is not None and result.error.startswith("connection failed: ")


async def test_an_error_status_is_reported_with_its_excerpt_and_cookies_are_not_kept(
    receivers: StartReceiver, transports: MakeTransport
) -> None:
    replies = iter([Reply(503, "Wartung läuft".encode(), (("Set-Cookie", "session=abc; Path=/"),)), Reply(204)])
    receiver = await receivers(reply=lambda _: next(replies))
    transport = transports(LOOPBACK, TestResolver({"erp.test": ["127.0.0.1"]}))

    failed = await transport.post(f"http://erp.test:{receiver.port}/", BODY, HEADERS)
    again = await transport.post(f"http://erp.test:{receiver.port}/", BODY, HEADERS)

    assert (failed.status, failed.ok, failed.error, failed.excerpt) == (503, False, "HTTP 503", "Wartung läuft")
    assert (again.status, again.ok, again.error, again.excerpt) == (204, True, None, None)
    assert "cookie" not in receiver.requests[1].headers
    # Plain http may keep the connection: it goes to the same checked address either way.
    assert receiver.connections == 1


@dataclass(frozen=True)
class Pki:
    client: ssl.SSLContext
    server: Callable[[], ssl.SSLContext]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A test CA and a certificate for ``erp.test`` only (no IP address in it), on disk for the server."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "KSeF Hub test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erp.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("erp.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "erp.test.pem", tmp_path / "erp.test.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )

    def server() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context

    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return Pki(client=client, server=server)


async def test_https_uses_the_name_for_sni_and_the_certificate_while_connecting_to_the_address(
    pki: Pki, receivers: StartReceiver, transports: MakeTransport
) -> None:
    receiver = await receivers(tls=pki.server())
    resolver = TestResolver({"erp.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    https_loopback = TargetPolicy.from_strings(require_https=True, allowed=["127.0.0.0/8"])
    transport = transports(https_loopback, resolver, ssl_context=pki.client)

    first = await transport.post(f"https://erp.test:{receiver.port}/hooks", BODY, HEADERS)
    second = await transport.post(f"https://erp.test:{receiver.port}/hooks", BODY, HEADERS)
    # Same address and port, another name: the certificate for erp.test must not vouch for it, so a kept-alive
    # connection from the deliveries above must not be reused.
    other = await transport.post(f"https://other.test:{receiver.port}/hooks", BODY, HEADERS)

    assert (first.status, first.ok, first.error) == (200, True, None)
    assert (second.status, second.ok) == (200, True)
    # Three handshakes: every https delivery has its own connection, and the SNI is the URL's name.
    assert receiver.server_names == ["erp.test", "erp.test", "other.test"]
    assert [r.headers["host"] for r in receiver.requests] == [f"erp.test:{receiver.port}"] * 2
    assert (other.status, other.ok, other.refused) == (None, False, False)
    assert other.error is not None and other.error.startswith("connection failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in other.error or "hostname" in other.error.lower()
    assert len(receiver.requests) == 2
