"""KOD I and KOD II (REFERENCE.md §11): link formats, signatures checked independently, rendering."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from ksef_gateway.ksef.environments import Environment
from ksef_gateway.sales.qr import (
    QrCode,
    b64url_from_invoice_hash,
    invoice_hash_b64url,
    kod_i,
    kod_ii,
    qr_base_url,
    verify_kod_ii,
)

TEST_QR = "https://qr-test.ksef.mf.gov.pl"
SELLER = "1111111111"
XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<Faktura><P_1>2026-02-01</P_1></Faktura>\n'
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
SERIAL = 0x0321C82DA41B4362
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def offline_certificate(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    serial: int = SERIAL,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    non_repudiation: bool = True,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Offline 1111111111")])
    usage = x509.KeyUsage(
        digital_signature=not non_repudiation,
        content_commitment=non_repudiation,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_kod_ii(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    *,
    context_type: str = "Nip",
    context_value: str = SELLER,
    now: datetime = NOW,
) -> QrCode:
    return kod_ii(
        TEST_QR,
        context_type=context_type,
        context_value=context_value,
        seller_nip=SELLER,
        certificate=certificate,
        private_key=key,
        xml=XML,
        now=now,
    )


def replace_segment(url: str, index: int, value: str) -> str:
    parts = url.split("/")
    parts[index] = value
    return "/".join(parts)


# --- hashes ---


def test_invoice_hash_is_43_chars_of_unpadded_base64url_sha256() -> None:
    # Enough inputs that the digest contains '+' or '/' in standard Base64 at least once.
    for i in range(64):
        data = XML + str(i).encode()
        value = invoice_hash_b64url(data)
        assert len(value) == 43
        assert "=" not in value and "+" not in value and "/" not in value
        assert b64url_decode(value) == hashlib.sha256(data).digest()
    assert any("+" in base64.b64encode(hashlib.sha256(XML + str(i).encode()).digest()).decode() for i in range(64))


def test_invoice_hash_equals_ksef_invoice_hash_reencoded() -> None:
    for i in range(64):
        data = XML + str(i).encode()
        ksef_invoice_hash = base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert b64url_from_invoice_hash(ksef_invoice_hash) == invoice_hash_b64url(data)


def test_reference_example_hash_round_trips() -> None:
    # The §11 example link's hash, as KSeF would report it in invoiceHash.
    example = "UtQp9Gpc51y-u3xApZjIjgkpZ01js-J8KflSPW8WzIE"
    standard = base64.b64encode(b64url_decode(example)).decode()
    assert "+" in standard and standard.endswith("=")
    assert b64url_from_invoice_hash(standard) == example


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode(), "UtQp9Gpc51y-u3xApZjIjgkpZ01js"])
def test_b64url_from_invoice_hash_refuses_what_is_not_a_sha256_in_base64(bad: str) -> None:
    with pytest.raises(ValueError, match="invoiceHash"):
        b64url_from_invoice_hash(bad)


# --- hosts ---


def test_qr_hosts_per_environment() -> None:
    assert qr_base_url(Environment.TEST, "") == "https://qr-test.ksef.mf.gov.pl"
    assert qr_base_url(Environment.DEMO, "") == "https://qr-demo.ksef.mf.gov.pl"
    assert qr_base_url(Environment.PROD, "") == "https://qr.ksef.mf.gov.pl"
    assert qr_base_url(Environment.SIM, "http://127.0.0.1:8000/qr/") == "http://127.0.0.1:8000/qr"


# --- KOD I ---


def test_kod_i_url_is_exact_with_dd_mm_yyyy_date() -> None:
    code = kod_i(TEST_QR, SELLER, date(2026, 2, 1), XML, None)
    assert code.url == f"https://qr-test.ksef.mf.gov.pl/invoice/1111111111/01-02-2026/{b64url_sha256(XML)}"


def test_kod_i_trailing_slash_of_the_base_is_ignored() -> None:
    assert kod_i(TEST_QR + "/", SELLER, date(2026, 12, 9), XML, None).url == (
        f"{TEST_QR}/invoice/{SELLER}/09-12-2026/{b64url_sha256(XML)}"
    )


def test_kod_i_caption_is_offline_until_a_ksef_number_exists() -> None:
    assert kod_i(TEST_QR, SELLER, date(2026, 2, 1), XML, None).caption == "OFFLINE"
    number = "1111111111-20260201-010020FC1565-02"
    assert kod_i(TEST_QR, SELLER, date(2026, 2, 1), XML, number).caption == number


@pytest.mark.parametrize(
    ("nip", "number"),
    [
        ("111111111", None),
        ("11111111111", None),
        ("11111a1111", None),
        ("１１１１１１１１１１", None),  # noqa: RUF001 - full-width digits pass str.isdigit, not the NIP rule
        (SELLER, "not-a-ksef-number"),
        (SELLER, "5154965572-20260202-010020FC1565-02"),  # another seller's number (§10)
    ],
)
def test_kod_i_refuses_bad_nip_or_ksef_number(nip: str, number: str | None) -> None:
    with pytest.raises(ValueError, match=r"NIP|KSeF number"):
        kod_i(TEST_QR, nip, date(2026, 2, 1), XML, number)


def test_kod_i_refuses_a_base_that_is_not_an_http_url() -> None:
    with pytest.raises(ValueError, match="QR base"):
        kod_i("qr-test.ksef.mf.gov.pl", SELLER, date(2026, 2, 1), XML, None)


# --- KOD II ---


def test_kod_ii_rsa_pss_link_shape_and_signature() -> None:
    key = rsa_key()
    certificate = offline_certificate(key)
    code = make_kod_ii(key, certificate)

    prefix = f"{TEST_QR}/certificate/Nip/{SELLER}/{SELLER}/0321C82DA41B4362/{b64url_sha256(XML)}"
    assert code.url.startswith(prefix + "/")
    assert code.caption == "CERTYFIKAT"
    assert verify_kod_ii(code.url, certificate)

    # Independently of verify_kod_ii: PSS with SHA-256/MGF1-SHA-256 and a 32-byte salt over the URL without
    # "https://", up to and including the hash.
    signature = b64url_decode(code.url.rsplit("/", 1)[1])
    key.public_key().verify(
        signature,
        prefix.removeprefix("https://").encode(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_kod_ii_ecdsa_signature_is_64_byte_p1363() -> None:
    key = ec_key()
    certificate = offline_certificate(key)
    code = make_kod_ii(key, certificate, context_type="InternalId", context_value="1111111111-00001")

    assert "/certificate/InternalId/1111111111-00001/1111111111/0321C82DA41B4362/" in code.url
    assert verify_kod_ii(code.url, certificate)
    signature = b64url_decode(code.url.rsplit("/", 1)[1])
    assert len(signature) == 64
    signed = code.url.rsplit("/", 1)[0].removeprefix("https://").encode()
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.public_key().verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))


def test_verify_kod_ii_accepts_a_der_ecdsa_signature() -> None:
    key = ec_key()
    certificate = offline_certificate(key)
    url = make_kod_ii(key, certificate).url
    signed, _, p1363 = url.rpartition("/")
    raw = b64url_decode(p1363)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert decode_dss_signature(der) == (int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    der_url = f"{signed}/{base64.urlsafe_b64encode(der).decode().rstrip('=')}"
    assert verify_kod_ii(der_url, certificate)


@pytest.mark.parametrize("make_key", [rsa_key, ec_key])
def test_tampered_kod_ii_fails_verification(
    make_key: Callable[[], rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey],
) -> None:
    key = make_key()
    certificate = offline_certificate(key)
    url = make_kod_ii(key, certificate).url
    assert verify_kod_ii(url, certificate)

    other_hash = b64url_sha256(XML + b" ")
    assert not verify_kod_ii(replace_segment(url, -2, other_hash), certificate)
    assert not verify_kod_ii(replace_segment(url, -3, "0321C82DA41B4363"), certificate)
    assert not verify_kod_ii(replace_segment(url, -4, "5265877635"), certificate)
    assert not verify_kod_ii(replace_segment(url, -6, "InternalId"), certificate)
    assert not verify_kod_ii(url.replace("qr-test.", "qr-demo."), certificate)
    assert not verify_kod_ii(replace_segment(url, -1, "AAAA"), certificate)
    assert not verify_kod_ii(url.rsplit("/", 1)[0], certificate)


def test_verify_kod_ii_refuses_a_serial_matching_another_certificate() -> None:
    key = ec_key()
    url = make_kod_ii(key, offline_certificate(key)).url
    # Same key, different serial: the link names a certificate that is not this one.
    assert not verify_kod_ii(url, offline_certificate(key, serial=SERIAL + 1))
    # Same serial, different key.
    assert not verify_kod_ii(url, offline_certificate(ec_key()))


def test_kod_ii_serial_is_zero_padded_uppercase_hex() -> None:
    key = ec_key()
    url = make_kod_ii(key, offline_certificate(key, serial=0xABC)).url
    assert url.split("/")[-3] == "0000000000000ABC"


def test_kod_ii_refuses_a_short_rsa_key() -> None:
    key = rsa_key(1024)
    with pytest.raises(ValueError, match="2048"):
        make_kod_ii(key, offline_certificate(key))


def test_kod_ii_refuses_an_ec_key_off_p256() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        make_kod_ii(key, offline_certificate(key))


def test_kod_ii_refuses_other_key_types() -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_certificate = offline_certificate(ec_key())
    with pytest.raises(ValueError, match="RSA"):
        make_kod_ii(ed_key, ed_certificate)  # type: ignore[arg-type]
    dsa_key = dsa.generate_private_key(key_size=2048)
    with pytest.raises(ValueError, match="RSA"):
        make_kod_ii(dsa_key, ed_certificate)  # type: ignore[arg-type]


def test_kod_ii_refuses_a_key_that_is_not_the_certificates() -> None:
    with pytest.raises(ValueError, match="does not belong"):
        make_kod_ii(ec_key(), offline_certificate(ec_key()))
    with pytest.raises(ValueError, match="does not belong"):
        make_kod_ii(rsa_key(), offline_certificate(ec_key()))


def test_kod_ii_refuses_a_certificate_not_valid_now() -> None:
    key = ec_key()
    expired = offline_certificate(key, not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(seconds=1))
    with pytest.raises(ValueError, match="not valid"):
        make_kod_ii(key, expired)
    future = offline_certificate(key, not_before=NOW + timedelta(days=1), not_after=NOW + timedelta(days=30))
    with pytest.raises(ValueError, match="not valid"):
        make_kod_ii(key, future)
    with pytest.raises(ValueError, match="timezone"):
        make_kod_ii(key, offline_certificate(key), now=NOW.replace(tzinfo=None))


def test_kod_ii_refuses_an_authentication_certificate() -> None:
    key = ec_key()
    with pytest.raises(ValueError, match="Offline"):
        make_kod_ii(key, offline_certificate(key, non_repudiation=False))


def test_kod_ii_refuses_a_serial_longer_than_16_hex_digits() -> None:
    key = ec_key()
    with pytest.raises(ValueError, match="16 hex"):
        make_kod_ii(key, offline_certificate(key, serial=1 << 64))


@pytest.mark.parametrize(
    ("context_type", "context_value"),
    [
        ("nip", SELLER),
        ("Pesel", "80010112345"),
        ("Nip", "111111111"),
        ("InternalId", SELLER),
        ("NipVatUe", "1111111111/DE123456789"),
        ("PeppolId", "PPL12345"),
    ],
)
def test_kod_ii_refuses_bad_context(context_type: str, context_value: str) -> None:
    key = ec_key()
    with pytest.raises(ValueError, match="context"):
        make_kod_ii(key, offline_certificate(key), context_type=context_type, context_value=context_value)


@pytest.mark.parametrize(
    ("context_type", "context_value"), [("NipVatUe", "1111111111-DE123456789"), ("PeppolId", "PPL123456")]
)
def test_kod_ii_other_context_types_verify(context_type: str, context_value: str) -> None:
    key = ec_key()
    certificate = offline_certificate(key)
    code = make_kod_ii(key, certificate, context_type=context_type, context_value=context_value)
    assert f"/certificate/{context_type}/{context_value}/" in code.url
    assert verify_kod_ii(code.url, certificate)


# --- rendering ---


def test_png_is_a_png_and_grows_with_scale() -> None:
    code = kod_i(TEST_QR, SELLER, date(2026, 2, 1), XML, None)
    small, large = code.png(scale=1), code.png()
    assert small.startswith(PNG_SIGNATURE) and large.startswith(PNG_SIGNATURE)
    width = int.from_bytes(small[16:20], "big")  # IHDR width
    # Error correction M: this link needs version 6 (41 modules), plus a 4-module quiet zone on each side.
    assert width == 41 + 2 * 4
    assert int.from_bytes(large[16:20], "big") == 4 * width
    with pytest.raises(ValueError, match="scale"):
        code.png(scale=0)


def test_svg_carries_the_caption_under_the_symbol() -> None:
    number = "1111111111-20260201-010020FC1565-02"
    svg = kod_i(TEST_QR, SELLER, date(2026, 2, 1), XML, number).svg()
    assert svg.startswith("<svg ") and svg.endswith("</svg>")
    assert f">{number}</text>" in svg
    assert 'viewBox="0 0 49 ' in svg  # wider than tall would mean the caption band is missing
    height = float(svg.split('viewBox="0 0 49 ', 1)[1].split('"', 1)[0])
    assert height > 49
    assert ">CERTYFIKAT</text>" in QrCode(url="https://example.test/x", caption="CERTYFIKAT").svg()


def test_svg_escapes_the_caption() -> None:
    assert "&lt;b&gt;&amp;</text>" in QrCode(url="https://example.test/x", caption="<b>&").svg()
