"""The signature on a UPO (REFERENCE.md §6): KSeF's receipt counts only once its XAdES signature is checked.

Pure: no I/O beyond the arguments. The caller supplies the trust anchors (the Ministry's CA for the real service,
``GET /_sim/trust/upo-ca.pem`` for the simulator) and keeps the UPO bytes as received, since the signature in them
is the evidence; the facts it reads out of a UPO come from what ``verify_upo`` returns, which is only what the
signature covers ("see what is signed").

What is accepted: exactly one ``ds:Signature``, a child of the ``Potwierdzenie`` root, that is XAdES (signed
properties with the signing certificate's digest) and has one reference covering the whole document (``URI=""``
with the enveloped-signature transform); its other references may point only inside the signature itself. The
signing certificate is the first ``X509Certificate`` of its ``KeyInfo``, directly issued by one of the anchors and
valid at the UPO's time: the signed ``xades:SigningTime``, or, without one, the latest ``DataNadaniaNumeruKSeF``.
Intermediate CAs are not followed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature as InvalidCertificateSignature
from lxml import etree
from signxml.algorithms import SignatureConstructionMethod
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature, SignXMLException
from signxml.verifier import VerifyResult
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier, XAdESVerifyResult

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
ROOT_NAME = "Potwierdzenie"
_DS = f"{{{DS_NS}}}"


class UpoSignatureError(Exception):
    """The UPO is not to be trusted; ``reason`` says why (certificate names and signxml's diagnosis, no secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_trust_anchors(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ``ValueError`` when there is none or one is unreadable."""
    try:
        anchors = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(f"no readable PEM certificate in the trust anchors: {exc}") from exc
    if not anchors:
        raise ValueError("no PEM certificate in the trust anchors")
    return anchors


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _parse(xml: bytes) -> etree._Element:
    try:
        root = etree.fromstring(xml, _parser())
    except etree.XMLSyntaxError as exc:
        raise UpoSignatureError(f"the UPO is not well-formed XML: {exc}") from None
    if etree.QName(root).localname != ROOT_NAME:
        raise UpoSignatureError(f"the document is a {etree.QName(root).localname}, not a UPO ({ROOT_NAME})")
    return root


def _signature(root: etree._Element) -> etree._Element:
    signatures = list(root.iter(f"{_DS}Signature"))
    if not signatures:
        raise UpoSignatureError("the UPO is not signed (no ds:Signature)")
    if len(signatures) > 1:
        raise UpoSignatureError(f"the UPO carries {len(signatures)} signatures; exactly one is expected")
    signature = signatures[0]
    if signature.getparent() is not root:
        raise UpoSignatureError("the signature is not enveloped in the UPO root (it must be a child of Potwierdzenie)")
    return signature


def _check_references(signature: etree._Element) -> None:
    """One reference covers the whole document; any other one stays inside the signature (SignedProperties,
    KeyInfo). Anything else would let a valid signature vouch for only part of what the caller reads."""
    references = signature.findall(f"{_DS}SignedInfo/{_DS}Reference")
    inside = {node.get("Id") for node in signature.iter() if node.get("Id")}
    whole = 0
    for reference in references:
        uri = reference.get("URI")
        if uri == "":
            transforms = {t.get("Algorithm") for t in reference.findall(f"{_DS}Transforms/{_DS}Transform")}
            if SignatureConstructionMethod.enveloped.value not in transforms:
                raise UpoSignatureError("the whole-document reference lacks the enveloped-signature transform")
            whole += 1
        elif uri is None or not uri.startswith("#") or uri[1:] not in inside:
            raise UpoSignatureError(
                f'the signature references {uri!r}, outside itself; only the whole document (URI="") may be signed'
            )
    if whole != 1:
        raise UpoSignatureError(
            'the signature does not cover the whole document (no reference with URI="")'
            if whole == 0
            else f"the signature has {whole} whole-document references; exactly one is expected"
        )


def _signing_certificate(signature: etree._Element) -> x509.Certificate:
    text = signature.findtext(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate")
    if not text or not text.strip():
        raise UpoSignatureError("the signature carries no signing certificate (KeyInfo/X509Data/X509Certificate)")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error):
        raise UpoSignatureError("the signing certificate in KeyInfo is unreadable") from None


def _check_issued(certificate: x509.Certificate, trusted: Sequence[x509.Certificate]) -> None:
    for anchor in trusted:
        if anchor.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidCertificateSignature):
            continue
        return
    raise UpoSignatureError(
        f"the signing certificate ({certificate.subject.rfc4514_string()}, issued by "
        f"{certificate.issuer.rfc4514_string()}) is not issued by a trusted CA"
    )


def _instant(text: str | None) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _upo_time(signed_properties: etree._Element | None, document: etree._Element) -> datetime:
    if signed_properties is not None:
        signing_time = signed_properties.find(f"{{{XADES_NS}}}SigningTime")
        if signing_time is not None:
            instant = _instant(signing_time.text)
            if instant is None:
                raise UpoSignatureError("the signed xades:SigningTime is not a date-time")
            return instant
    numbered = [_instant(node.text) for node in document.iter("{*}DataNadaniaNumeruKSeF")]
    instants = [instant for instant in numbered if instant is not None]
    if not instants:
        raise UpoSignatureError("the UPO has no time to judge its certificate by (no SigningTime, no dates)")
    return max(instants)


def _verify(xml: bytes, certificate: x509.Certificate) -> list[VerifyResult]:
    config = XAdESSignatureConfiguration(
        location="./",
        expect_references=True,
        # signxml checks the validity at this instant; any instant inside it will do, because the check that
        # counts (with its own reason) is made against the UPO's time, known only from the verified document.
        verification_time=certificate.not_valid_before_utc,
    )
    try:
        results = XAdESVerifier().verify(xml, x509_cert=certificate, parser=_parser(), expect_config=config)
    except InvalidDigest as exc:
        raise UpoSignatureError(f"a digest does not match: the UPO was changed after it was signed ({exc})") from None
    except InvalidSignature as exc:
        raise UpoSignatureError(f"the signature value does not verify with the signing certificate ({exc})") from None
    except InvalidCertificate as exc:
        raise UpoSignatureError(f"the signing certificate is not usable: {exc}") from None
    except InvalidInput as exc:
        raise UpoSignatureError(f"the signature is malformed or not XAdES: {exc}") from None
    except (SignXMLException, etree.DocumentInvalid, ValueError) as exc:
        raise UpoSignatureError(f"the signature is malformed: {exc}") from None
    return list(results)


def verify_upo(xml: bytes, trusted: Sequence[x509.Certificate]) -> bytes:
    """The UPO as its signature covers it (canonical XML of the document without the ``ds:Signature``), once the
    signature, the chain to ``trusted`` and the certificate's validity at the UPO's time all hold;
    ``UpoSignatureError`` otherwise."""
    if not trusted:
        raise UpoSignatureError("no trust anchors: a UPO signature cannot be trusted without one")
    root = _parse(xml)
    signature = _signature(root)
    _check_references(signature)
    certificate = _signing_certificate(signature)
    _check_issued(certificate, trusted)
    results = _verify(xml, certificate)
    # The references were judged above on the SignedInfo the signature value now vouches for; what the caller gets
    # is the result of the whole-document one, the only one rooted at Potwierdzenie.
    whole = [
        (r.signed_data, r.signed_xml) for r in results if r.signed_xml is not None and r.signed_xml.tag == root.tag
    ]
    if len(whole) != 1:
        raise UpoSignatureError("the signature does not cover the UPO document")
    [(signed_data, document)] = whole
    signed_properties = next((r.signed_properties for r in results if isinstance(r, XAdESVerifyResult)), None)
    at = _upo_time(signed_properties, document)
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise UpoSignatureError(
            f"the signing certificate is valid from {certificate.not_valid_before_utc.isoformat()} to "
            f"{certificate.not_valid_after_utc.isoformat()}, not at the UPO's time {at.isoformat()}"
        )
    return signed_data
