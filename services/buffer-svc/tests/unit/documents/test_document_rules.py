"""The documents' rules without I/O: the hash check, the preview read from an official FA(3) sample (escaped in
the page), and the ERP bundle (every XML byte for byte, the manifest as JSON and CSV)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from buffer_svc.documents.domain import (
    MAX_XML_BYTES,
    BundledInvoice,
    DocumentError,
    build_bundle,
    check_copy,
    read_preview,
    render_preview,
    sha256_b64,
)

# An official sample of the Ministry of Finance (CIRFMF/ksef-docs), as KSeF would store it.
SAMPLE = (Path(__file__).parent / "fixtures" / "fa3-official-sample.xml").read_bytes()


def test_a_copy_must_match_ksefs_hash() -> None:
    check_copy(SAMPLE, sha256_b64(SAMPLE))
    with pytest.raises(DocumentError) as mismatch:
        check_copy(SAMPLE.replace(b"33569.50", b"33569.51"), sha256_b64(SAMPLE))
    assert mismatch.value.code == "document-mismatch" and mismatch.value.status == 502
    huge = b"x" * (MAX_XML_BYTES + 1)
    with pytest.raises(DocumentError) as too_large:
        check_copy(huge, sha256_b64(huge))
    assert too_large.value.code == "document-too-large"


def test_the_preview_reads_parties_lines_and_totals_of_fa3() -> None:
    preview = read_preview(SAMPLE)
    assert (preview.number, preview.issue_date, preview.currency) == (
        "FA/YUCFO-4342344706/03/2026",
        "2025-10-31",
        "PLN",
    )
    assert (preview.seller.nip, preview.seller.name) == ("5265877635", "Bartkowiak, Dróżdż and Górecki")
    assert (preview.buyer.nip, preview.buyer.name) == ("6808208874", "Strzelczyk LLC")
    assert len(preview.lines) == 13
    first = preview.lines[0]
    assert (first.quantity, first.unit_net_price, first.net, first.rate) == ("1", "20.41", "20.41", "23")
    assert preview.net_by_rate == (("23% / 22%", "27292.28", "6277.22"),) and preview.gross == "33569.50"


def test_the_page_escapes_what_the_invoice_says() -> None:
    hostile = SAMPLE.replace(b"Strzelczyk LLC", b"&lt;script&gt;alert(1)&lt;/script&gt;")
    page = render_preview(read_preview(hostile), ksef_number="K", invoice_hash="H", language="en")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Invoice preview: FA/YUCFO-4342344706/03/2026" in page and 'lang="en"' in page
    polish = render_preview(read_preview(SAMPLE), ksef_number="K", invoice_hash="H", language="pl")
    assert "Sprzedawca" in polish and "Do zapłaty (brutto)" in polish and "33569.50 PLN" in polish


def test_an_unreadable_document_is_an_error_not_a_page() -> None:
    for broken in (
        b"<Faktura><Fa>",
        b"<Faktura/>",
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
    ):
        with pytest.raises(DocumentError) as refused:
            read_preview(broken)
        assert refused.value.code == "document-unreadable"


def test_the_bundle_holds_every_xml_byte_for_byte_and_a_manifest_in_json_and_csv() -> None:
    other = SAMPLE.replace(b"FA/YUCFO-4342344706/03/2026", b"FA/2")
    invoices = [
        BundledInvoice(
            ksef_number=f"5265877635-20251031-00000000000{n}-0{n}",
            invoice_number=number,
            issue_date="2025-10-31",
            seller_nip="5265877635",
            seller_name="Bartkowiak; Dróżdż",
            currency="PLN",
            net_amount="27292.28",
            vat_amount="6277.22",
            gross_amount="33569.50",
            invoice_type="VAT",
            decision="book",
            description='Towar; do "magazynu"' if n == 1 else None,
            invoice_hash=sha256_b64(xml),
            xml=xml,
        )
        for n, (number, xml) in enumerate((("FA/YUCFO-4342344706/03/2026", SAMPLE), ("FA/2", other)), start=1)
    ]
    archive = zipfile.ZipFile(
        io.BytesIO(build_bundle("6808208874", "2025-10", invoices, generated_at=datetime.now(UTC)))
    )
    assert sorted(archive.namelist()) == sorted(["manifest.json", "manifest.csv", *(i.file_name for i in invoices)])
    for invoice in invoices:
        content = archive.read(invoice.file_name)
        assert content == invoice.xml and sha256_b64(content) == invoice.invoice_hash
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["client_nip"] == "6808208874" and manifest["period"] == "2025-10" and manifest["count"] == 2
    assert [e["sha256"] for e in manifest["invoices"]] == [i.invoice_hash for i in invoices]
    text = archive.read("manifest.csv").decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=";"))
    assert rows[0]["description"] == 'Towar; do "magazynu"' and rows[1]["description"] == ""
    assert rows[0]["seller_name"] == "Bartkowiak; Dróżdż" and rows[1]["file"] == invoices[1].file_name
