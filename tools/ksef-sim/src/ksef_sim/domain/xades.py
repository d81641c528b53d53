"""The signed ``AuthTokenRequest`` of ``POST /auth/xades-signature`` (REFERENCE.md §3.3).

What the real service checks synchronously (400 codes) is checked here: readable XML (21001/21217), exactly one
``ds:Signature`` (9102/9103), an enveloped or enveloping signature that verifies (9105; detached is rejected),
a usable certificate (21115) and the AuthTokenRequest XSD v2.0/v2.1 (21401). Everything that depends on who the
signer is (certificate validity, chain trust, permissions) is decided later and shows up in ``GET /auth/{ref}``.

As on TEST, self-signed certificates are accepted: the certificate carried in ``KeyInfo`` is trusted as is, and
only ``verifyCertificateChain=true`` asks for a chain to a known CA.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.resources import files
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from lxml import etree
from signxml import methods
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier
from signxml.xades.xades import XAdESSigner

from ksef_sim.security import Identifier

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
AUTH_NAMESPACES = {
    "http://ksef.mf.gov.pl/auth/token/2.0": "schemat_auth_v2-0.xsd",
    "http://ksef.mf.gov.pl/auth/token/2.1": "schemat_auth_v2-1.xsd",
}
CERTIFICATE_SUBJECT = "certificateSubject"
CERTIFICATE_FINGERPRINT = "certificateFingerprint"
ORGANIZATION_IDENTIFIER = ObjectIdentifier("2.5.4.97")

# REFERENCE.md §3.3: subject identity from the certificate.
_PERSON_SERIAL = re.compile(r"(?:PNOPL|PESEL).*?(\d{11})")
_NIP_SERIAL = re.compile(r"(?:TINPL|NIP).*?(\d{10})")
_SEAL_ORG_ID = re.compile(r"VATPL-.*?(\d{10})")

# Digests SHA-1/2/3 and RSA (PKCS#1 v1.5 or PSS) or ECDSA signatures are accepted; HMAC and DSA are not.
_SIGNATURE_METHODS = frozenset(m for m in SignatureMethod if not m.name.startswith(("HMAC", "DSA")))
_DIGESTS = frozenset(DigestAlgorithm)


class XadesError(Exception):
    """A synchronous 400 of ``POST /auth/xades-signature``: ``code`` plus details."""

    def __init__(self, code: int, *details: str) -> None:
        super().__init__(f"{code}: {' '.join(details)}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class SignedAuthRequest:
    namespace: str
    challenge: str
    context: Identifier
    subject_identifier_type: str
    allowed_ips: tuple[str, ...]
    certificate: x509.Certificate


_XS = "{http://www.w3.org/2001/XMLSchema}"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_ADDRESS = rf"({_OCTET}\.){{3}}{_OCTET}"
_IP_PATTERNS = {
    "Ip4Address": _ADDRESS,
    "Ip4Range": f"{_ADDRESS}-{_ADDRESS}",
    "Ip4Mask": rf"{_ADDRESS}/(0|[1-9]|[12][0-9]|3[0-2])",
}


def _schema_document(name: str) -> etree._Element:
    r"""The packaged XSD, repaired where libxml2 and .NET disagree on XSD regex syntax.

    The official v2.0 XSD writes its IPv4 patterns with ``^``, ``$`` and ``\b`` (not XSD regex; .NET tolerates
    them, libxml2 refuses to compile the schema), and both versions anchor the PeppolId (``^…$``) and NipVatUe
    (``…$``) patterns, which libxml2 would take literally and so reject every id. XSD patterns are implicitly
    anchored, so the anchors are dropped, and the IPv4 elements get the v2.1 patterns (same addresses accepted).
    """
    document = etree.fromstring(files("ksef_sim").joinpath("schemas", "auth", name).read_bytes())
    for facet in document.iter(f"{_XS}pattern"):
        value = facet.get("value", "")
        owner = next((a for a in facet.iterancestors(f"{_XS}element")), None)
        replacement = _IP_PATTERNS.get(owner.get("name", "")) if owner is not None else None
        facet.set("value", replacement or value.removeprefix("^").removesuffix("$"))
    return document


@cache
def auth_schema(namespace: str) -> etree.XMLSchema:
    return etree.XMLSchema(_schema_document(AUTH_NAMESPACES[namespace]))


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=False)


def _parse(body: bytes) -> etree._Element:
    if not body.strip():
        raise XadesError(21001, "Treść żądania jest pusta.")
    try:
        return etree.fromstring(body, parser=_parser())
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if "encoding" in message.lower() or "utf-8" in message.lower() or "Char 0x" in message:
            raise XadesError(21217, message) from exc
        raise XadesError(21001, message) from exc


def _signing_certificate(signature: etree._Element) -> x509.Certificate:
    nodes = signature.findall(f"{{{DS_NS}}}KeyInfo/{{{DS_NS}}}X509Data/{{{DS_NS}}}X509Certificate")
    if not nodes or not (nodes[0].text or "").strip():
        raise XadesError(21115, "Podpis nie zawiera certyfikatu (KeyInfo/X509Data/X509Certificate).")
    try:
        der = _b64(nodes[0].text or "")
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise XadesError(21115, "Nie można odczytać certyfikatu podpisującego.") from exc
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise XadesError(21115, f"Klucz RSA ma {public.key_size} bitów; wymagane co najmniej 2048.")
    elif isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.key_size < 256:
            raise XadesError(21115, f"Krzywa {public.curve.name} jest za słaba; wymagana co najmniej P-256.")
    else:
        raise XadesError(21115, "Nieobsługiwany typ klucza certyfikatu (wymagany RSA lub ECDSA).")
    return certificate


def _b64(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def _verification_time(certificate: x509.Certificate, now: datetime) -> datetime:
    # The validity period is judged later (status 460 on GET /auth/{ref}), not as a signature failure here.
    return min(max(now, certificate.not_valid_before_utc), certificate.not_valid_after_utc)


def _signed_document(signature: etree._Element, root: etree._Element, body: bytes, now: datetime) -> etree._Element:
    """Verify the signature and return the AuthTokenRequest it actually covers ("see what is signed")."""
    for reference in signature.iter(f"{{{DS_NS}}}Reference"):
        uri = reference.get("URI")
        if uri is None or (uri and not uri.startswith("#")):
            raise XadesError(9105, "Podpis zewnętrzny (detached) nie jest akceptowany; użyj enveloped lub enveloping.")
    certificate = _signing_certificate(signature)
    config = SignatureConfiguration(
        require_x509=True,
        location="./" if root.tag != f"{{{DS_NS}}}Signature" else ".//",
        expect_references=True,
        signature_methods=_SIGNATURE_METHODS,
        digest_algorithms=_DIGESTS,
        verification_time=_verification_time(certificate, now),
    )
    try:
        results = XMLVerifier().verify(body, x509_cert=certificate, parser=_parser(), expect_config=config)
    except (InvalidSignature, InvalidDigest) as exc:
        raise XadesError(9105, str(exc)) from exc
    except InvalidCertificate as exc:
        raise XadesError(21115, str(exc)) from exc
    except (InvalidInput, ValueError, etree.LxmlError) as exc:
        raise XadesError(9105, str(exc)) from exc
    signed = results if isinstance(results, list) else [results]
    for result in signed:
        node = result.signed_xml
        if not isinstance(node, etree._Element):
            continue
        if etree.QName(node).localname == "AuthTokenRequest":
            return node
        if node.tag == f"{{{DS_NS}}}Object":  # enveloping: the request sits inside the signed ds:Object
            inner = [child for child in node if isinstance(child.tag, str)]
            if len(inner) == 1 and etree.QName(inner[0]).localname == "AuthTokenRequest":
                return inner[0]
    raise XadesError(9105, "Podpis nie obejmuje dokumentu AuthTokenRequest (podpis detached nie jest akceptowany).")


def _validate(document: etree._Element) -> str:
    namespace = etree.QName(document).namespace or ""
    if namespace not in AUTH_NAMESPACES:
        raise XadesError(
            21401, f"Nieobsługiwana przestrzeń nazw '{namespace}'; obsługiwane: {', '.join(AUTH_NAMESPACES)}."
        )
    # The XSD knows nothing of ds:Signature (the real service validates the request without it).
    copy = etree.fromstring(etree.tostring(document), parser=_parser())
    for node in copy.findall(f".//{{{DS_NS}}}Signature"):
        parent = node.getparent()
        if parent is not None:
            parent.remove(node)
    schema = auth_schema(namespace)
    if not schema.validate(copy):
        errors: Iterable[Any] = schema.error_log  # type: ignore[assignment]
        raise XadesError(21401, *[f"Linia {e.line}: {e.message}" for e in errors])
    return namespace


def parse_signed_request(body: bytes, now: datetime) -> SignedAuthRequest:
    """Everything ``POST /auth/xades-signature`` checks before it answers 202; ``XadesError`` otherwise."""
    root = _parse(body)
    signatures = list(root.iter(f"{{{DS_NS}}}Signature"))
    if not signatures:
        raise XadesError(9102, "Dokument nie zawiera elementu ds:Signature.")
    if len(signatures) > 1:
        raise XadesError(9103, f"Dokument zawiera {len(signatures)} podpisy; dozwolony jest jeden.")
    signature = signatures[0]
    local = etree.QName(root).localname
    if local == "AuthTokenRequest":
        if signature.getparent() is not root:
            raise XadesError(9101, "Podpis enveloped musi być bezpośrednim dzieckiem AuthTokenRequest.")
    elif root is not signature:
        raise XadesError(9101, f"Nieoczekiwany element główny '{local}'; oczekiwano AuthTokenRequest.")
    document = _signed_document(signature, root, body, now)
    namespace = _validate(document)
    ns = {"a": namespace}
    challenge = (document.findtext("a:Challenge", namespaces=ns) or "").strip()
    context_node = document.find("a:ContextIdentifier/*", namespaces=ns)
    assert context_node is not None  # guaranteed by the XSD
    context = Identifier(etree.QName(context_node).localname, (context_node.text or "").strip())
    subject_type = (document.findtext("a:SubjectIdentifierType", namespaces=ns) or "").strip()
    allowed: list[str] = []
    for tag in ("Ip4Address", "Ip4Range", "Ip4Mask"):
        for node in document.findall(f"a:AuthorizationPolicy/a:AllowedIps/a:{tag}", namespaces=ns):
            allowed.append((node.text or "").strip())
    return SignedAuthRequest(
        namespace=namespace,
        challenge=challenge,
        context=context,
        subject_identifier_type=subject_type,
        allowed_ips=tuple(allowed),
        certificate=_signing_certificate(signature),
    )


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, uppercase hex (the ``Fingerprint`` identifier)."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def _attribute(name: x509.Name, oid: ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def is_seal(certificate: x509.Certificate) -> bool:
    org_id = _attribute(certificate.subject, ORGANIZATION_IDENTIFIER)
    return org_id is not None and _SEAL_ORG_ID.search(org_id) is not None


def subject_from_name(name: x509.Name) -> Identifier | None:
    """NIP or PESEL named by a certificate (or CSR) subject: a seal's organizationIdentifier, else serialNumber."""
    org_id = _attribute(name, ORGANIZATION_IDENTIFIER)
    if org_id is not None:
        match = _SEAL_ORG_ID.search(org_id)
        if match:
            return Identifier("Nip", match.group(1))
    serial = _attribute(name, NameOID.SERIAL_NUMBER)
    if serial is not None:
        person = _PERSON_SERIAL.search(serial)
        if person:
            return Identifier("Pesel", person.group(1))
        company = _NIP_SERIAL.search(serial)
        if company:
            return Identifier("Nip", company.group(1))
    return None


def subject_from_certificate(certificate: x509.Certificate, subject_identifier_type: str) -> Identifier | None:
    """Who signed (REFERENCE.md §3.3); ``None`` when a ``certificateSubject`` certificate names nobody we know."""
    if subject_identifier_type == CERTIFICATE_FINGERPRINT:
        return Identifier("Fingerprint", certificate_fingerprint(certificate))
    return subject_from_name(certificate.subject)


# --- client side (tests, seeding tools) ------------------------------------------------------------------------


def build_auth_request(
    challenge: str,
    context: Identifier,
    subject_identifier_type: str = CERTIFICATE_SUBJECT,
    *,
    namespace: str = "http://ksef.mf.gov.pl/auth/token/2.0",
    allowed_ips: dict[str, list[str]] | None = None,
) -> etree._Element:
    """An unsigned ``AuthTokenRequest``; ``allowed_ips`` maps Ip4Address/Ip4Range/Ip4Mask to values."""
    root = etree.Element(f"{{{namespace}}}AuthTokenRequest", nsmap={None: namespace})  # type: ignore[dict-item]
    etree.SubElement(root, f"{{{namespace}}}Challenge").text = challenge
    context_node = etree.SubElement(root, f"{{{namespace}}}ContextIdentifier")
    etree.SubElement(context_node, f"{{{namespace}}}{context.type}").text = context.value
    etree.SubElement(root, f"{{{namespace}}}SubjectIdentifierType").text = subject_identifier_type
    if allowed_ips:
        policy = etree.SubElement(root, f"{{{namespace}}}AuthorizationPolicy")
        ips = etree.SubElement(policy, f"{{{namespace}}}AllowedIps")
        for tag in ("Ip4Address", "Ip4Range", "Ip4Mask"):
            for value in allowed_ips.get(tag, []):
                etree.SubElement(ips, f"{{{namespace}}}{tag}").text = value
    return root


def sign_enveloped(
    document: etree._Element,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    *,
    xades: bool = True,
) -> bytes:
    """Sign ``document`` with an enveloped XAdES-BES (or plain XMLDSig) signature, as KSeF clients do."""
    algorithm = "ecdsa-sha256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-sha256"
    signer: XMLSigner
    if xades:
        signer = XAdESSigner(signature_algorithm=algorithm, digest_algorithm="sha256")
    else:
        signer = XMLSigner(method=methods.enveloped, signature_algorithm=algorithm, digest_algorithm="sha256")
    signed = signer.sign(document, key=key, cert=[certificate])
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="utf-8"))
