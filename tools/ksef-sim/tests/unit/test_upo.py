"""UPO v4-3 documents validate against the official XSD and carry a verifiable XAdES signature (REFERENCE.md §6)."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from lxml import etree
from signxml.exceptions import InvalidDigest
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier

from ksef_sim.domain import upo
from ksef_sim.domain.certificates import SimCa
from ksef_sim.store import Store

SAMPLES = Path("/work/shared/ksef/samples/upo")
NS = {"u": upo.UPO_NAMESPACE}
DS = "{http://www.w3.org/2000/09/xmldsig#}"
XADES = "{http://uri.etsi.org/01903/v1.3.2#}"


def header(**overrides: str | None) -> upo.UpoHeader:
    values: dict[str, str | None] = {
        "session_reference_number": "20260310-SO-2C3E6C8000-B675CF5D68-07",
        "context_type": "Nip",
        "context_value": "5265877635",
        "structure_name": "Schemat_FA(3)_v1-0E.xsd",
        "form_system_code": "FA (3)",
        "ksef_token_reference": None,
        "auth_document_hash": "kyqH+QUgP8ATWd/95IY632mP4uqibwG66Oqclq9+qno=",
        **overrides,
    }
    return upo.UpoHeader(**values)  # type: ignore[arg-type]


def document(sequence: int) -> upo.UpoDocument:
    return upo.UpoDocument(
        seller_nip="5265877635",
        ksef_number=f"5265877635-20260310-01{sequence:010X}-00",
        invoice_number=f"FV/{sequence}",
        issue_date=date(2026, 3, 10),
        invoicing_date=datetime(2026, 3, 10, 9, 0, tzinfo=UTC),
        acquisition_date=datetime(2026, 3, 10, 9, 0, 1, tzinfo=UTC),
        invoice_hash="GZMGNVzs3krF6URKgvaw77OOeG3nJ+WGziT5xguliQ8=",
        invoicing_mode="Online",
    )


def test_invoice_upo_is_valid() -> None:
    xml = upo.invoice_upo(header(), document(1))
    assert upo.validate_upo(xml) == []
    root = etree.fromstring(xml)
    assert root.find("u:OpisPotwierdzenia", NS) is None
    assert root.findtext("u:Dokument/u:NumerKSeFDokumentu", namespaces=NS) == document(1).ksef_number
    assert root.findtext("u:Uwierzytelnienie/u:IdKontekstu/u:Nip", namespaces=NS) == "5265877635"


@pytest.mark.parametrize(
    ("context_type", "value", "element"),
    [
        ("InternalId", "5265877635-12345", "IdWewnetrzny"),
        ("NipVatUe", "5265877635-DE123456789", "IdZlozonyVatUE"),
        ("PeppolId", "PPL123456", "IdDostawcyUslugPeppol"),
    ],
)
def test_context_kinds_and_token_reference(context_type: str, value: str, element: str) -> None:
    xml = upo.invoice_upo(
        header(
            context_type=context_type, context_value=value, ksef_token_reference="20250819-EC-1ECDD12000-5EE71AE5E3-B7"
        ),
        document(1),
    )
    assert upo.validate_upo(xml) == []
    root = etree.fromstring(xml)
    assert root.findtext(f"u:Uwierzytelnienie/u:IdKontekstu/u:{element}", namespaces=NS) == value
    assert root.find("u:Uwierzytelnienie/u:NumerReferencyjnyTokenaKSeF", NS) is not None


def test_session_upo_pages_hold_at_most_10000_documents() -> None:
    documents = [document(i) for i in range(1, upo.PAGE_SIZE + 3)]
    pages = upo.session_upo_pages(header(), documents)
    assert len(pages) == 2
    for page in pages:
        assert upo.validate_upo(page) == []
    second = etree.fromstring(pages[1])
    described = [
        second.findtext(f"u:OpisPotwierdzenia/u:{name}", namespaces=NS)
        for name in ("Strona", "LiczbaStron", "ZakresDokumentowOd", "ZakresDokumentowDo", "CalkowitaLiczbaDokumentow")
    ]
    assert described == ["2", "2", "10001", "10002", "10002"]
    assert len(second.findall("u:Dokument", NS)) == 2
    assert len(etree.fromstring(pages[0]).findall("u:Dokument", NS)) == upo.PAGE_SIZE


def test_validator_rejects_broken_upo() -> None:
    xml = upo.invoice_upo(header(), document(1)).replace(b"<TrybWysylki>Online", b"<TrybWysylki>Email")
    assert upo.validate_upo(xml)


def v43_samples() -> list[Path]:
    return sorted(path for path in SAMPLES.glob("*.xml") if b"KSeF/v4-3" in path.read_bytes())


def test_v43_samples_found() -> None:
    assert len(v43_samples()) == 6


@pytest.mark.parametrize("path", v43_samples(), ids=lambda p: p.name)
def test_official_samples_validate(path: Path) -> None:
    # The TEST samples name the receiver "Ministerstwo Finansów - środowisko testowe (TE)", which breaks the XSD's
    # fixed value (REFERENCE.md §21); everything else in them is valid.
    messages = upo.validate_upo(path.read_bytes())
    assert len(messages) == 1 and "fixed value constraint 'Ministerstwo Finansów'" in messages[0]
    fixed = path.read_bytes().replace(" - środowisko testowe (TE)".encode(), b"")
    assert upo.validate_upo(fixed) == []


# --- signature ---------------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 9, 0, 5, tzinfo=UTC)
XADES_CONFIG = XAdESSignatureConfiguration(location="./", expect_references=3)


@pytest.fixture
def store() -> Store:
    return Store(None)


def signing_key(store: Store, now: datetime = NOW) -> upo.UpoSigningKey:
    return upo.UpoSigningKey.load_or_create(store, SimCa.load_or_create(store, now), now)


def signing_certificate(xml: bytes) -> x509.Certificate:
    text = etree.fromstring(xml).findtext(f"{DS}Signature/{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert text
    return x509.load_der_x509_certificate(base64.b64decode(text))


def test_signed_upo_keeps_the_document_and_appends_an_enveloped_signature(store: Store) -> None:
    unsigned = upo.invoice_upo(header(), document(1))
    signed = upo.sign_upo(unsigned, signing_key(store), NOW)
    root = etree.fromstring(signed)
    assert etree.QName(root).localname == "Potwierdzenie" and etree.QName(root).namespace == upo.UPO_NAMESPACE
    assert root[-1].tag == upo.DS_SIGNATURE and len(root.findall(upo.DS_SIGNATURE)) == 1
    references = root.findall(f"{DS}Signature/{DS}SignedInfo/{DS}Reference")
    assert references[0].get("URI") == "" and len(references) == 3  # the whole document, SignedProperties, KeyInfo
    assert root.findtext(f".//{XADES}SigningTime") == "2026-03-10T09:00:05+00:00"  # the simulator's clock
    # Everything but the signature is the unsigned document, and still valid against the XSD.
    root.remove(root[-1])
    assert etree.tostring(root, method="c14n") == etree.tostring(etree.fromstring(unsigned), method="c14n")
    assert upo.validate_upo(signed) == []


def test_signature_verifies_and_chains_to_the_simulator_ca(store: Store) -> None:
    ca = SimCa.load_or_create(store, NOW)
    signed = upo.sign_upo(upo.session_upo_pages(header(), [document(1), document(2)])[0], signing_key(store), NOW)
    certificate = signing_certificate(signed)
    assert ca.issued(certificate)
    assert certificate.subject.rfc4514_string().startswith(f"CN={upo.UPO_SIGNING_COMMON_NAME}")
    config = replace(XADES_CONFIG, verification_time=NOW)
    results = XAdESVerifier().verify(signed, x509_cert=certificate, expect_config=config)
    assert etree.QName(results[0].signed_xml).localname == "Potwierdzenie"

    tampered = signed.replace(b"<NumerFaktury>FV/2<", b"<NumerFaktury>FV/3<")
    with pytest.raises(InvalidDigest):
        XAdESVerifier().verify(tampered, x509_cert=certificate, expect_config=config)


def test_signing_key_is_kept_and_reissued_only_outside_its_validity(store: Store) -> None:
    first = signing_key(store)
    assert signing_key(store, NOW + timedelta(days=300)).certificate == first.certificate
    later = NOW + upo.UPO_SIGNING_VALIDITY + timedelta(days=1)
    renewed = signing_key(store, later)
    assert renewed.certificate != first.certificate
    assert renewed.certificate.not_valid_before_utc <= later <= renewed.certificate.not_valid_after_utc
    assert SimCa.load_or_create(store, later).issued(renewed.certificate)


def test_signing_key_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sim.sqlite3"
    before = Store(path)
    first = signing_key(before)
    before.close()
    after = Store(path)
    try:
        assert signing_key(after).certificate == first.certificate
    finally:
        after.close()
