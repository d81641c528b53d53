"""The XAdES-signed ``AuthTokenRequest`` of POST /auth/xades-signature (REFERENCE.md §3.3).

The request follows ``schemat_auth_v2-0.xsd`` (Challenge, ContextIdentifier/Nip, SubjectIdentifierType) and is
signed with an enveloped XAdES-BES signature (signxml): ECDSA-SHA256 for EC keys (``SignatureValue`` = R||S, as
KSeF wants) or RSA-SHA256 for RSA keys of at least 2048 bits. The signing certificate travels in ``KeyInfo``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml.xades.xades import XAdESSigner

from ksef_gateway.ksef.crypto import CryptoError

AUTH_NAMESPACE = "http://ksef.mf.gov.pl/auth/token/2.0"
CERTIFICATE_SUBJECT = "certificateSubject"
CERTIFICATE_FINGERPRINT = "certificateFingerprint"


def auth_token_request(
    challenge: str, context_nip: str, subject_identifier_type: str = CERTIFICATE_SUBJECT
) -> etree._Element:
    ns = AUTH_NAMESPACE
    root = etree.Element(f"{{{ns}}}AuthTokenRequest", nsmap={None: ns})  # type: ignore[dict-item]
    etree.SubElement(root, f"{{{ns}}}Challenge").text = challenge
    context = etree.SubElement(root, f"{{{ns}}}ContextIdentifier")
    etree.SubElement(context, f"{{{ns}}}Nip").text = context_nip
    etree.SubElement(root, f"{{{ns}}}SubjectIdentifierType").text = subject_identifier_type
    return root


def load_signing_material(
    certificate_pem: bytes, private_key_pem: bytes
) -> tuple[x509.Certificate, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]:
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CryptoError(f"unreadable certificate or private key: {type(exc).__name__}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CryptoError("the private key must be RSA or EC")
    if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
        raise CryptoError("the private key does not belong to the certificate")
    return certificate, key


def sign_auth_token_request(
    challenge: str,
    context_nip: str,
    certificate_pem: bytes,
    private_key_pem: bytes,
    subject_identifier_type: str = CERTIFICATE_SUBJECT,
) -> bytes:
    """The signed request, serialised with its XML declaration, ready to POST as ``application/xml``."""
    certificate, key = load_signing_material(certificate_pem, private_key_pem)
    algorithm = "ecdsa-sha256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-sha256"
    signer = XAdESSigner(signature_algorithm=algorithm, digest_algorithm="sha256")
    signed = signer.sign(
        auth_token_request(challenge, context_nip, subject_identifier_type), key=key, cert=[certificate]
    )
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="utf-8"))
