"""The verification QR codes printed on a sales invoice handed over outside KSeF (REFERENCE.md §11); no I/O.

- KOD I links to the invoice itself: seller NIP, issue date (P_1) and the SHA-256 of the exact XML bytes. Every
  invoice given to a buyer outside KSeF carries it; its caption is the KSeF number, or ``OFFLINE`` before one exists.
- KOD II (offline invoices only, §12) proves who issued the invoice: the same hash plus the issuing context and the
  serial of a KSeF certificate of type Offline, signed with that certificate's key. Caption ``CERTYFIKAT``.

Both are rendered with segno at error correction level M with the standard 4-module quiet zone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import segno
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ksef_gateway.ksef.environments import Environment

QR_BASE_URLS: dict[Environment, str] = {
    Environment.TEST: "https://qr-test.ksef.mf.gov.pl",
    Environment.DEMO: "https://qr-demo.ksef.mf.gov.pl",
    Environment.PROD: "https://qr.ksef.mf.gov.pl",
}

CAPTION_OFFLINE = "OFFLINE"
CAPTION_CERTIFICATE = "CERTYFIKAT"
QUIET_ZONE = 4
ERROR_CORRECTION = "M"

# The identifier shapes of the OpenAPI schemas (REFERENCE.md §2), loosened where the spec lists every EU country:
# enough to keep each value one URL path segment of unreserved characters.
_CONTEXT_VALUE = {
    "Nip": re.compile(r"\d{10}", re.ASCII),
    "InternalId": re.compile(r"\d{10}-\d{5}", re.ASCII),
    "NipVatUe": re.compile(r"\d{10}-[A-Z]{2}[A-Z0-9+*]{2,13}", re.ASCII),
    "PeppolId": re.compile(r"P[A-Z]{2}\d{6}", re.ASCII),
}
CONTEXT_TYPES = tuple(_CONTEXT_VALUE)

_NIP = re.compile(r"\d{10}", re.ASCII)
_KSEF_NUMBER = re.compile(r"\d{10}-\d{8}-[0-9A-F]{12}-[0-9A-F]{2}", re.ASCII)
_HASH_B64URL = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)
# KSeF shows certificate serials as 16 uppercase hex digits ("0321C82DA41B4362" in the OpenAPI examples of
# /certificates/retrieve and /certificates/query; §17); the zero padding is our reading of "16 hex".
_SERIAL = re.compile(r"[0-9A-F]{16}", re.ASCII)
_MAX_SERIAL = (1 << 64) - 1

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
_MIN_RSA_BITS = 2048
_P256_COORDINATE_BYTES = 32


def qr_base_url(environment: Environment, sim_qr_base_url: str) -> str:
    """The QR host of ``environment``; the simulator's comes from configuration (it runs wherever we start it)."""
    if environment is Environment.SIM:
        return sim_qr_base_url.rstrip("/")
    return QR_BASE_URLS[environment]


def _b64url(data: bytes) -> str:
    # §11/§20.9: URL-safe alphabet and no '=' padding, or the verification page rejects the link.
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64url_decode(value: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", value, re.ASCII) or len(value) % 4 == 1:
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def invoice_hash_b64url(xml: bytes) -> str:
    """SHA-256 of the exact invoice bytes sent to KSeF (a re-serialised XML hashes differently, §20.1)."""
    return _b64url(hashlib.sha256(xml).digest())


def b64url_from_invoice_hash(invoice_hash_b64: str) -> str:
    """KSeF's ``invoiceHash`` (standard Base64 of the SHA-256) in the form the QR links use."""
    try:
        digest = base64.b64decode(invoice_hash_b64, validate=True)
    except binascii.Error as exc:
        raise ValueError("invoiceHash is not standard Base64") from exc
    if len(digest) != hashlib.sha256().digest_size:
        raise ValueError("invoiceHash is not a SHA-256 digest")
    return _b64url(digest)


@dataclass(frozen=True)
class QrCode:
    url: str
    caption: str

    def _symbol(self) -> segno.QRCode:
        # boost_error=False: segno would otherwise raise the level above M whenever the version has room.
        return segno.make_qr(self.url, error=ERROR_CORRECTION, boost_error=False)

    def png(self, scale: int = 4) -> bytes:
        """The symbol alone (Pillow is not a dependency, so the caption is not drawn here): print ``caption``
        under it yourself, or use ``svg()``."""
        if scale < 1:
            raise ValueError("scale must be at least 1 pixel per module")
        out = io.BytesIO()
        self._symbol().save(out, kind="png", scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
        return out.getvalue()

    def svg(self) -> str:
        """The symbol with ``caption`` centred under its quiet zone, in module units (4 px per module)."""
        symbol = self._symbol()
        size, _ = symbol.symbol_size(border=QUIET_ZONE)
        out = io.BytesIO()
        symbol.save(
            out, kind="svg", border=QUIET_ZONE, dark="#000", xmldecl=False, svgns=False, omitsize=True, nl=False
        )
        inner = out.getvalue().decode("utf-8")
        if not inner.startswith("<svg "):
            raise RuntimeError("unexpected segno SVG output")
        # A nested <svg> without width/height would fill the whole taller canvas and be centred in it.
        inner = f'<svg x="0" y="0" width="{size}" height="{size}" ' + inner[len("<svg ") :]
        # Monospace advances are ~0.6 em: fit the caption (a KSeF number is 35 characters) to the symbol's width.
        font = min(4.0, 0.95 * size / (0.6 * max(len(self.caption), 1)))
        band = math.ceil(font * 1.6)  # whole modules keep the canvas in whole pixels
        height = size + band
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{size * 4}" height="{_num(height * 4)}" '
            f'viewBox="0 0 {size} {_num(height)}">'
            f'<rect width="{size}" height="{_num(height)}" fill="#fff"/>'
            f"{inner}"
            f'<text x="{_num(size / 2)}" y="{_num(size + font * 1.1)}" text-anchor="middle" '
            f'font-family="monospace" font-size="{_num(font)}" fill="#000">{escape(self.caption)}</text>'
            "</svg>"
        )


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _check_nip(nip: str, what: str) -> None:
    if not _NIP.fullmatch(nip):
        raise ValueError(f"{what} must be 10 digits")


def _check_base(qr_base: str) -> str:
    base = qr_base.rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("the QR base must be an http(s) URL without query or fragment")
    return base


def kod_i(qr_base: str, seller_nip: str, issue_date: date, xml: bytes, ksef_number: str | None) -> QrCode:
    """KOD I of an invoice; ``issue_date`` is P_1, written DD-MM-YYYY (an ISO date breaks the link, §20.9)."""
    return kod_i_for_hash(
        qr_base, seller_nip, issue_date, base64.b64encode(hashlib.sha256(xml).digest()).decode(), ksef_number
    )


def kod_i_for_hash(
    qr_base: str, seller_nip: str, issue_date: date, invoice_hash_b64: str, ksef_number: str | None
) -> QrCode:
    """KOD I from KSeF's ``invoiceHash`` (standard Base64) instead of the document itself."""
    base = _check_base(qr_base)
    _check_nip(seller_nip, "the seller NIP")
    if ksef_number is not None:
        if not _KSEF_NUMBER.fullmatch(ksef_number):
            raise ValueError("not a KSeF number (NIP-YYYYMMDD-12 hex-2 hex)")
        # The number begins with Podmiot1's NIP (§10): another invoice's number would send the buyer elsewhere.
        if not ksef_number.startswith(seller_nip + "-"):
            raise ValueError("the KSeF number belongs to another seller")
    url = f"{base}/invoice/{seller_nip}/{issue_date:%d-%m-%Y}/{b64url_from_invoice_hash(invoice_hash_b64)}"
    return QrCode(url=url, caption=ksef_number if ksef_number is not None else CAPTION_OFFLINE)


def certificate_serial(certificate: x509.Certificate) -> str:
    if not 0 <= certificate.serial_number <= _MAX_SERIAL:
        raise ValueError("not a KSeF certificate: its serial does not fit 16 hex digits")
    return f"{certificate.serial_number:016X}"


def _public_der(key: object) -> bytes:
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("KOD II needs an RSA or EC P-256 key")
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _sign(private_key: object, data: bytes) -> bytes:
    # §11: RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, or ECDSA P-256 with SHA-256 as R||S.
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"an RSA key for KOD II needs at least {_MIN_RSA_BITS} bits")
        return private_key.sign(data, _PSS, hashes.SHA256())
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("an EC key for KOD II must be on curve P-256")
        r, s = decode_dss_signature(private_key.sign(data, ec.ECDSA(hashes.SHA256())))
        # IEEE P1363 is the form §11 recommends: fixed 64 bytes, unlike DER, so the QR code's size is predictable.
        return r.to_bytes(_P256_COORDINATE_BYTES, "big") + s.to_bytes(_P256_COORDINATE_BYTES, "big")
    raise ValueError("KOD II needs an RSA (>= 2048 bits) or EC P-256 private key")


def _signed_part(url: str) -> str:
    # §11: the signed string is the link without "https://" (the simulator's http:// likewise) and without a
    # trailing slash, up to and including the hash segment: the path, not the hash (§20.9).
    return url.split("://", 1)[1].rstrip("/")


def kod_ii(
    qr_base: str,
    *,
    context_type: str,
    context_value: str,
    seller_nip: str,
    certificate: x509.Certificate,
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    xml: bytes,
    now: datetime,
) -> QrCode:
    """KOD II of an offline invoice, signed with the key of the issuer's KSeF Offline certificate."""
    base = _check_base(qr_base)
    if context_type not in _CONTEXT_VALUE:
        raise ValueError(f"context type must be one of {', '.join(CONTEXT_TYPES)}")
    if not _CONTEXT_VALUE[context_type].fullmatch(context_value):
        raise ValueError(f"not a valid {context_type} context identifier")
    _check_nip(seller_nip, "the seller NIP")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ValueError("the certificate is not valid at the signing time")
    try:
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        key_usage = None
    # Offline certificates carry nonRepudiation; an Authentication certificate is refused by the verifier (§11, #321).
    if key_usage is not None and not key_usage.content_commitment:
        raise ValueError("KOD II needs a KSeF certificate of type Offline (keyUsage nonRepudiation)")
    if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("KOD II needs an RSA (>= 2048 bits) or EC P-256 private key")
    if _public_der(private_key.public_key()) != _public_der(certificate.public_key()):
        raise ValueError("the private key does not belong to the certificate")
    signed = (
        f"{base}/certificate/{context_type}/{context_value}/{seller_nip}/"
        f"{certificate_serial(certificate)}/{invoice_hash_b64url(xml)}"
    )
    signature = _sign(private_key, _signed_part(signed).encode("utf-8"))
    return QrCode(url=f"{signed}/{_b64url(signature)}", caption=CAPTION_CERTIFICATE)


def verify_kod_ii(url: str, certificate: x509.Certificate) -> bool:
    """Whether ``url`` is a KOD II signed by ``certificate``'s key for that certificate's serial; checks the link
    alone (not the certificate's status or permissions, which only KSeF knows)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        return False
    signed, _, signature_b64 = url.rstrip("/").rpartition("/")
    segments = signed.split("/")
    if len(segments) < 9:  # scheme, "", host, then the six segments from "certificate" to the hash
        return False
    marker, context_type, context_value, seller_nip, serial, invoice_hash = segments[-6:]
    context = _CONTEXT_VALUE.get(context_type)
    if (
        marker != "certificate"
        or context is None
        or not context.fullmatch(context_value)
        or not _NIP.fullmatch(seller_nip)
        or not _SERIAL.fullmatch(serial)
        or not _HASH_B64URL.fullmatch(invoice_hash)
        or certificate.serial_number > _MAX_SERIAL
        or serial != f"{certificate.serial_number:016X}"
    ):
        return False
    try:
        signature = _b64url_decode(signature_b64)
    except ValueError:
        return False
    data = _signed_part(signed).encode("utf-8")
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        try:
            public.verify(signature, data, _PSS, hashes.SHA256())
        except InvalidSignature:
            return False
        return True
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        return False
    # §11 accepts DER as well as R||S; a DER signature is never exactly 64 bytes in practice, but trying both costs
    # one more verification at most.
    candidates = [signature]
    if len(signature) == 2 * _P256_COORDINATE_BYTES:
        r = int.from_bytes(signature[:_P256_COORDINATE_BYTES], "big")
        s = int.from_bytes(signature[_P256_COORDINATE_BYTES:], "big")
        candidates.insert(0, encode_dss_signature(r, s))
    for candidate in candidates:
        try:
            public.verify(candidate, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            continue
        return True
    return False
