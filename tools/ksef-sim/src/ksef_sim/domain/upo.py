"""UPO (Urzędowe Poświadczenie Odbioru) v4-3 documents (REFERENCE.md §6), and their signature.

Two shapes, both rooted at ``Potwierdzenie``: one invoice (no ``OpisPotwierdzenia``) and a session page
(``OpisPotwierdzenia`` with page numbers and the document range; ≤10 000 ``Dokument`` per page).
``NazwaPodmiotuPrzyjmujacego`` keeps the XSD's fixed value ("Ministerstwo Finansów"): the TEST samples append
the environment name and so fail the schema (REFERENCE.md §21).

The real UPO carries the Ministry's XAdES signature (the published samples are unsigned). Every UPO the simulator
serves is signed the same way (``sign_upo``): an enveloped XAdES-BES signature over the whole document
(``Reference URI=""``), made with a "UPO signing" certificate that the simulator's test CA (``SimCa``, the one that
issues KSeF certificates) issues and ``GET /_sim/trust/upo-ca.pem`` publishes, so a client can verify it as it
would the Ministry's. The v4-3 XSD has no place for ``ds:Signature`` (``Potwierdzenie`` is a closed sequence, no
``xsd:any``), so the signature is the last child of the root, and ``validate_upo`` checks the document without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.util import SigningSettings, namespaces
from signxml.xades.xades import XAdESDataObjectFormat, XAdESSigner

from ksef_sim.domain.certificates import SimCa
from ksef_sim.domain.fa import load_schema
from ksef_sim.store import Store

UPO_NAMESPACE = "http://upo.schematy.mf.gov.pl/KSeF/v4-3"
UPO_XSD = "upo/upo-v4-3.xsd"
RECEIVER_NAME = "Ministerstwo Finansów"
PAGE_SIZE = 10_000
DS_SIGNATURE = "{http://www.w3.org/2000/09/xmldsig#}Signature"

# Context identifier type → UPO IdKontekstu element.
_CONTEXT_ELEMENTS = {
    "Nip": "Nip",
    "InternalId": "IdWewnetrzny",
    "NipVatUe": "IdZlozonyVatUE",
    "PeppolId": "IdDostawcyUslugPeppol",
}


@dataclass(frozen=True)
class UpoHeader:
    session_reference_number: str
    context_type: str
    context_value: str
    structure_name: str  # Schemat_FA(3)_v1-0E.xsd
    form_system_code: str  # FA (3)
    ksef_token_reference: str | None = None
    # Stand-in for the hash of the signed authentication document when no KSeF token was used.
    auth_document_hash: str | None = None


@dataclass(frozen=True)
class UpoDocument:
    seller_nip: str
    ksef_number: str
    invoice_number: str
    issue_date: date
    invoicing_date: datetime  # DataPrzeslaniaDokumentu
    acquisition_date: datetime  # DataNadaniaNumeruKSeF
    invoice_hash: str
    invoicing_mode: str  # Online | Offline


def _ts(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="milliseconds")


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{UPO_NAMESPACE}}}{name}")
    if text is not None:
        element.text = text
    return element


def _document(
    header: UpoHeader, documents: Sequence[UpoDocument], page: tuple[int, int, int, int, int] | None
) -> bytes:
    root = etree.Element(f"{{{UPO_NAMESPACE}}}Potwierdzenie", nsmap={None: UPO_NAMESPACE})  # type: ignore[dict-item]
    _sub(root, "NazwaPodmiotuPrzyjmujacego", RECEIVER_NAME)
    _sub(root, "NumerReferencyjnySesji", header.session_reference_number)
    auth = _sub(root, "Uwierzytelnienie")
    context = _sub(auth, "IdKontekstu")
    _sub(context, _CONTEXT_ELEMENTS.get(header.context_type, "Nip"), header.context_value)
    if header.ksef_token_reference:
        _sub(auth, "NumerReferencyjnyTokenaKSeF", header.ksef_token_reference)
    else:
        _sub(auth, "SkrotDokumentuUwierzytelniajacego", header.auth_document_hash or "A" * 43 + "=")
    if page is not None:
        description = _sub(root, "OpisPotwierdzenia")
        for name, value in zip(
            ("Strona", "LiczbaStron", "ZakresDokumentowOd", "ZakresDokumentowDo", "CalkowitaLiczbaDokumentow"),
            page,
            strict=True,
        ):
            _sub(description, name, str(value))
    _sub(root, "NazwaStrukturyLogicznej", header.structure_name)
    _sub(root, "KodFormularza", header.form_system_code)
    for doc in documents:
        element = _sub(root, "Dokument")
        _sub(element, "NipSprzedawcy", doc.seller_nip)
        _sub(element, "NumerKSeFDokumentu", doc.ksef_number)
        _sub(element, "NumerFaktury", doc.invoice_number)
        _sub(element, "DataWystawieniaFaktury", doc.issue_date.isoformat())
        _sub(element, "DataPrzeslaniaDokumentu", _ts(doc.invoicing_date))
        _sub(element, "DataNadaniaNumeruKSeF", _ts(doc.acquisition_date))
        _sub(element, "SkrotDokumentu", doc.invoice_hash)
        _sub(element, "TrybWysylki", doc.invoicing_mode)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


def invoice_upo(header: UpoHeader, document: UpoDocument) -> bytes:
    return _document(header, [document], None)


def session_upo_pages(header: UpoHeader, documents: Sequence[UpoDocument]) -> list[bytes]:
    """One XML per page of ≤ ``PAGE_SIZE`` documents (a session with no accepted invoice has no UPO)."""
    total = len(documents)
    pages = max(1, -(-total // PAGE_SIZE))
    result = []
    for index in range(pages):
        chunk = documents[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
        first = index * PAGE_SIZE + 1
        result.append(_document(header, chunk, (index + 1, pages, first, first + len(chunk) - 1, total)))
    return result


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True)


def validate_upo(xml: bytes) -> list[str]:
    """XSD messages for a UPO document, signed or not (empty when valid): the root's ``ds:Signature`` is left out,
    the XSD knowing nothing of it."""
    schema = load_schema(UPO_XSD)
    document = etree.fromstring(xml, _parser())
    for signature in document.findall(DS_SIGNATURE):
        document.remove(signature)
    if schema.validate(document):
        return []
    return [entry.message for entry in cast(Iterable[Any], schema.error_log)]


# --- signature -------------------------------------------------------------------------------------------------

UPO_SIGNING_COMMON_NAME = "KSeF simulator UPO signing"
UPO_SIGNING_VALIDITY = timedelta(days=2 * 365)
_UPO_SIGNING_META = "upo_signing_key"


@dataclass(frozen=True)
class UpoSigningKey:
    """The key and certificate UPOs are signed with; the certificate is issued by the simulator CA."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def load_or_create(cls, store: Store, ca: SimCa, now: datetime) -> UpoSigningKey:
        """The stored one while it chains to ``ca`` and is valid at ``now``; else a new one, stored.

        The clock can be moved past (or before) any validity period; a UPO signed outside its certificate's
        validity would fail every verifier, so the certificate is re-issued instead. UPOs signed earlier keep
        the certificate they carry, which still chains to the same CA.
        """
        saved = store.get_meta(_UPO_SIGNING_META)
        if saved:
            key = serialization.load_pem_private_key(saved["key"].encode(), password=None)
            certificate = x509.load_pem_x509_certificate(saved["cert"].encode())
            valid = certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc
            if isinstance(key, ec.EllipticCurvePrivateKey) and valid and ca.issued(certificate):
                return cls(key, certificate)
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _issue_upo_signing_certificate(ca, key.public_key(), now)
        store.set_meta(
            _UPO_SIGNING_META,
            {
                "key": key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ).decode(),
                "cert": certificate.public_bytes(serialization.Encoding.PEM).decode(),
            },
        )
        return cls(key, certificate)


def _issue_upo_signing_certificate(ca: SimCa, public_key: ec.EllipticCurvePublicKey, now: datetime) -> x509.Certificate:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "KSeF simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, UPO_SIGNING_COMMON_NAME),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A day of slack before now, like the CA: a clock moved back a little still signs inside the validity.
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + UPO_SIGNING_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )


class _UpoSigner(XAdESSigner):
    """XAdES-BES whose ``SigningTime`` is the simulator's time: signxml stamps the host's real time, which would
    put the signature outside the certificate's validity whenever the simulator clock is moved."""

    def __init__(self, signing_time: datetime) -> None:
        super().__init__(
            signature_algorithm=SignatureMethod.ECDSA_SHA256,
            digest_algorithm=DigestAlgorithm.SHA256,
            data_object_format=XAdESDataObjectFormat(Description="UPO", MimeType="text/xml"),
        )
        self._signing_time = signing_time

    def add_signing_time(
        self, signed_signature_properties: etree._Element, sig_root: etree._Element, signing_settings: SigningSettings
    ) -> None:
        node = etree.SubElement(
            signed_signature_properties, etree.QName(namespaces["xades"], "SigningTime"), nsmap=self.namespaces
        )
        node.text = self._signing_time.astimezone(UTC).isoformat(timespec="seconds")


def sign_upo(xml: bytes, signing_key: UpoSigningKey, now: datetime) -> bytes:
    """``xml`` with an enveloped XAdES signature as the root's last child, covering the whole document."""
    document = etree.fromstring(xml, _parser())
    # KeyValue next to the certificate would only be a second, ambiguous statement of the same public key.
    signed = _UpoSigner(now).sign(
        document, key=signing_key.key, cert=[signing_key.certificate], always_add_key_value=False
    )
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="utf-8"))
