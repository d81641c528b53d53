"""The UPO signature check (REFERENCE.md §6): a receipt counts only when KSeF's trusted certificate signed all of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import methods
from signxml.signer import SignatureReference, XMLSigner
from signxml.xades.xades import XAdESSigner

from ksef_gateway.sales.upo import UpoSignatureError, load_trust_anchors, verify_upo
from ksef_sim.domain import upo as sim_upo
from ksef_sim.domain.certificates import SimCa
from ksef_sim.store import Store

SAMPLE = Path("/work/shared/ksef/samples/upo/upo-faktura-kontekst-id-nip.xml")
KSEF_NUMBER = "5265877635-20250916-0200A0D6723E-C2"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
NOW = datetime.now(UTC)


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "PL"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(common_name: str = "UPO test CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def issue(ca: Issued, *, valid_from: datetime | None = None, valid_to: datetime | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("UPO signing"))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from or NOW - timedelta(days=1))
        .not_valid_after(valid_to or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, certificate)


def xades_signer() -> XAdESSigner:
    return XAdESSigner(signature_algorithm="ecdsa-sha256", digest_algorithm="sha256")


def sign(xml: bytes, signer: Issued, *, with_signer: XMLSigner | None = None, **options: object) -> bytes:
    document = etree.fromstring(xml)
    signed = (with_signer or xades_signer()).sign(
        document,
        key=signer.key,
        cert=[signer.certificate],
        **options,  # type: ignore[arg-type]
    )
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="utf-8"))


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


@pytest.fixture(scope="module")
def signer(ca: Issued) -> Issued:
    return issue(ca)


def refusal(xml: bytes, trusted: list[x509.Certificate]) -> str:
    with pytest.raises(UpoSignatureError) as caught:
        verify_upo(xml, trusted)
    return caught.value.reason


def test_a_signed_upo_verifies_and_what_is_signed_is_returned(ca: Issued, signer: Issued) -> None:
    signed = sign(SAMPLE.read_bytes(), signer)
    verified = verify_upo(signed, [make_ca("Another CA").certificate, ca.certificate])
    root = etree.fromstring(verified)
    assert etree.QName(root).localname == "Potwierdzenie"
    assert root.find(f"{DS}Signature") is None  # the signature itself is not part of what it signs
    assert root.findtext("{*}Dokument/{*}NumerKSeFDokumentu") == KSEF_NUMBER
    original = etree.fromstring(SAMPLE.read_bytes())
    assert verified == etree.tostring(original, method="c14n2")


def test_a_changed_document_is_refused(ca: Issued, signer: Issued) -> None:
    signed = sign(SAMPLE.read_bytes(), signer)
    tampered = signed.replace(KSEF_NUMBER.encode(), b"5265877635-20250916-0200A0D6723E-C3")
    assert tampered != signed
    assert "changed after it was signed" in refusal(tampered, [ca.certificate])


def test_a_forged_signature_value_is_refused(ca: Issued, signer: Issued) -> None:
    root = etree.fromstring(sign(SAMPLE.read_bytes(), signer))
    value = root.find(f"{DS}Signature/{DS}SignatureValue")
    assert value is not None and value.text
    other = sign(SAMPLE.read_bytes().replace(b"FA/XVQUD", b"FA/OTHER"), signer)
    other_value = etree.fromstring(other).findtext(f"{DS}Signature/{DS}SignatureValue")
    value.text = other_value
    forged = bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
    assert "signature value does not verify" in refusal(forged, [ca.certificate])


def test_an_unsigned_upo_is_refused(ca: Issued) -> None:
    assert refusal(SAMPLE.read_bytes(), [ca.certificate]) == "the UPO is not signed (no ds:Signature)"


def test_a_certificate_of_another_ca_is_refused(signer: Issued) -> None:
    signed = sign(SAMPLE.read_bytes(), signer)
    assert "not issued by a trusted CA" in refusal(signed, [make_ca("Another CA").certificate])


def test_a_ca_that_only_bears_the_trusted_name_is_refused(ca: Issued) -> None:
    impostor = make_ca("UPO test CA")  # same subject as the trusted CA, another key
    signed = sign(SAMPLE.read_bytes(), issue(impostor))
    assert "not issued by a trusted CA" in refusal(signed, [ca.certificate])


def test_an_expired_certificate_is_refused(ca: Issued) -> None:
    expired = issue(ca, valid_from=NOW - timedelta(days=30), valid_to=NOW - timedelta(days=1))
    reason = refusal(sign(SAMPLE.read_bytes(), expired), [ca.certificate])
    assert "not at the UPO's time" in reason


def test_a_signature_over_part_of_the_document_is_refused(ca: Issued, signer: Issued) -> None:
    xml = SAMPLE.read_bytes().replace(b"<Dokument>", b'<Dokument Id="d1">')
    partial = sign(xml, signer, reference_uri=[SignatureReference(URI="#d1")])
    assert refusal(partial, [ca.certificate]) == (
        "the signature references '#d1', outside itself; only the whole document (URI=\"\") may be signed"
    )


def test_a_signature_inside_the_document_is_refused(ca: Issued, signer: Issued) -> None:
    root = etree.fromstring(sign(SAMPLE.read_bytes(), signer))
    signature = root[-1]
    document = root.find("{*}Dokument")
    assert document is not None and signature.tag == f"{DS}Signature"
    document.append(signature)
    moved = bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))
    assert "not enveloped in the UPO root" in refusal(moved, [ca.certificate])


def test_a_plain_xmldsig_signature_is_refused(ca: Issued, signer: Issued) -> None:
    plain = XMLSigner(method=methods.enveloped, signature_algorithm="ecdsa-sha256", digest_algorithm="sha256")
    reason = refusal(sign(SAMPLE.read_bytes(), signer, with_signer=plain), [ca.certificate])
    assert "not XAdES" in reason or "SignedProperties" in reason


def test_without_signing_time_the_ksef_number_date_is_the_upo_time(ca: Issued) -> None:
    # The sample's DataNadaniaNumeruKSeF is 2025-09-16T11:05:41.045+02:00.
    no_time = xades_signer()
    no_time.signed_signature_properties_annotators.remove(no_time.add_signing_time)
    valid_then = issue(ca, valid_from=datetime(2025, 9, 1, tzinfo=UTC), valid_to=datetime(2025, 10, 1, tzinfo=UTC))
    verify_upo(sign(SAMPLE.read_bytes(), valid_then, with_signer=no_time), [ca.certificate])
    later = issue(ca, valid_from=datetime(2025, 9, 17, tzinfo=UTC))
    assert "not at the UPO's time" in refusal(sign(SAMPLE.read_bytes(), later, with_signer=no_time), [ca.certificate])


def test_no_trust_anchors_trusts_nothing(signer: Issued) -> None:
    assert "no trust anchors" in refusal(sign(SAMPLE.read_bytes(), signer), [])


def test_not_a_upo_is_refused(ca: Issued, signer: Issued) -> None:
    assert "not a UPO" in refusal(sign(b"<Faktura><P_1>2026-01-01</P_1></Faktura>", signer), [ca.certificate])
    assert "not well-formed" in refusal(b"<Potwierdzenie>", [ca.certificate])


def test_a_upo_signed_by_the_simulator_verifies_against_its_published_ca() -> None:
    store = Store(None)
    now = datetime.now(UTC)
    sim_ca = SimCa.load_or_create(store, now)
    signing_key = sim_upo.UpoSigningKey.load_or_create(store, sim_ca, now)
    signed = sim_upo.sign_upo(SAMPLE.read_bytes(), signing_key, now)
    trusted = load_trust_anchors(sim_ca.certificate.public_bytes(serialization.Encoding.PEM))
    assert etree.fromstring(verify_upo(signed, trusted)).findtext("{*}Dokument/{*}NumerKSeFDokumentu") == KSEF_NUMBER


def test_trust_anchors_load_from_a_pem_bundle(ca: Issued) -> None:
    other = make_ca("Another CA")
    bundle = b"".join(c.certificate.public_bytes(serialization.Encoding.PEM) for c in (ca, other))
    assert load_trust_anchors(bundle) == [ca.certificate, other.certificate]
    with pytest.raises(ValueError, match="PEM"):
        load_trust_anchors(b"not a certificate")
