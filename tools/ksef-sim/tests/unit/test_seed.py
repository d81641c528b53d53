"""Seeded invoices: valid FA(3) (XSD), consistent amounts and metadata, real corrections, deterministic, fast."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import ksef_sim
from ksef_sim.crypto import sha256_b64
from ksef_sim.domain.seed import (
    NIP_PATTERN,
    WARSAW,
    SeedError,
    SeedOptions,
    nip_checksum_ok,
    random_nip,
    seed_invoices,
)
from ksef_sim.records import StoredInvoice
from ksef_sim.refs import KSEF_NUMBER_RE, REFERENCE_NUMBER_RE, has_valid_checksum
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim

NS = {"fa": "http://crd.gov.pl/wzor/2025/06/25/13775/"}
BUYER = "5265877635"
SUBJECT3 = "9795075130"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
_BASE_TYPES = "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/"


def _schema_dir() -> Path:
    for candidate in (Path(ksef_sim.__file__).parent / "schemas" / "fa3", Path("/work/shared/ksef/schemas/fa3")):
        if (candidate / "schemat_FA(3)_v1-0E.xsd").is_file():
            return candidate
    raise AssertionError("FA(3) XSD not found")


class _LocalImports(etree.Resolver):
    """Maps the XSD's crd.gov.pl imports to the local copies (no network)."""

    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:  # type: ignore[override]
        if system_url and system_url.startswith(_BASE_TYPES):
            local = str(self.base / "bazowe" / system_url[len(_BASE_TYPES) :])
            return self.resolve_filename(local, context)  # type: ignore[attr-defined]
        return None


@pytest.fixture(scope="module")
def fa3_schema() -> etree.XMLSchema:
    base = _schema_dir()
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_LocalImports(base))
    return etree.XMLSchema(etree.parse(str(base / "schemat_FA(3)_v1-0E.xsd"), parser))


def _open_sim(seed: int | None = 7, path: Path | None = None, **settings: float) -> Sim:
    sim = Sim.open(SimSettings(database_path=path, random_seed=seed, **settings))  # type: ignore[arg-type]
    sim.clock.set(NOW, frozen=True)
    return sim


@pytest.fixture
def sim() -> Iterator[Sim]:
    opened = _open_sim(permanent_storage_delay_s=2.0, permanent_storage_jitter_s=3.0)
    yield opened
    opened.close()


def _dec(doc: etree._Element, path: str) -> Decimal:
    return sum((Decimal(e.text or "") for e in doc.iterfind(path, NS)), Decimal("0"))


def test_two_hundred_seeded_invoices_are_valid_fa3_with_every_variety(sim: Sim, fa3_schema: etree.XMLSchema) -> None:
    options = SeedOptions(
        buyer_nip=BUYER, count=200, sellers=12, subject3_nip=SUBJECT3, corrections=0.2, foreign_currency_share=0.2
    )
    result = seed_invoices(sim, options)

    invoices = sim.store.all(StoredInvoice)
    assert result.created == len(invoices) == 200
    varieties: Counter[str] = Counter()
    for invoice in invoices:
        xml = sim.store.get_blob(invoice.blob_name)
        assert xml is not None and xml.startswith(b"<?xml") and not xml.startswith(b"\xef\xbb\xbf")
        doc = etree.fromstring(xml)
        assert fa3_schema.validate(doc), (invoice.invoice_number, str(fa3_schema.error_log))
        varieties[invoice.invoice_type] += 1
        varieties["foreign" if invoice.currency != "PLN" else "PLN"] += 1
        varieties["podmiot3"] += bool(doc.findall("fa:Podmiot3", NS))
        varieties["exempt"] += bool(doc.findall(".//fa:P_13_7", NS))
        varieties["vat8"] += bool(doc.findall(".//fa:P_13_2", NS))
        varieties["vat5"] += bool(doc.findall(".//fa:P_13_3", NS))
        varieties["zero"] += bool(doc.findall(".//fa:P_13_6_1", NS))
    # The sample really exercises what it claims to (corrections, currencies, third parties, every rate).
    for variety in ("Vat", "Kor", "foreign", "PLN", "podmiot3", "exempt", "vat8", "vat5", "zero"):
        assert varieties[variety] > 0, variety
    assert varieties["Kor"] == result.corrections
    assert varieties["foreign"] == result.foreign_currency


def test_metadata_matches_the_document_and_amounts_add_up(sim: Sim) -> None:
    seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=150, corrections=0.2, foreign_currency_share=0.3))

    for invoice in sim.store.all(StoredInvoice):
        xml = sim.store.get_blob(invoice.blob_name)
        assert xml is not None
        doc = etree.fromstring(xml)
        fa = doc.find("fa:Fa", NS)
        assert fa is not None
        seller = doc.findtext("fa:Podmiot1/fa:DaneIdentyfikacyjne/fa:NIP", namespaces=NS)
        assert seller == invoice.seller_nip == invoice.context_value and nip_checksum_ok(seller)
        assert doc.findtext("fa:Podmiot2/fa:DaneIdentyfikacyjne/fa:NIP", namespaces=NS) == BUYER
        assert invoice.buyer_identifier.type == "Nip" and invoice.buyer_identifier.value == BUYER
        assert fa.findtext("fa:P_2", namespaces=NS) == invoice.invoice_number
        assert fa.findtext("fa:P_1", namespaces=NS) == invoice.issue_date.isoformat()
        assert fa.findtext("fa:KodWaluty", namespaces=NS) == invoice.currency
        assert invoice.invoice_hash == sha256_b64(xml) and invoice.invoice_size == len(xml)

        net = _dec(fa, "fa:P_13_1") + _dec(fa, "fa:P_13_2") + _dec(fa, "fa:P_13_3")
        net += _dec(fa, "fa:P_13_6_1") + _dec(fa, "fa:P_13_7")
        vat = _dec(fa, "fa:P_14_1") + _dec(fa, "fa:P_14_2") + _dec(fa, "fa:P_14_3")
        vat_pln = _dec(fa, "fa:P_14_1W") + _dec(fa, "fa:P_14_2W") + _dec(fa, "fa:P_14_3W")
        gross = Decimal(fa.findtext("fa:P_15", namespaces=NS) or "")
        assert gross == net + vat
        assert (invoice.net_amount, invoice.gross_amount) == (net, gross)
        assert invoice.vat_amount == (vat if invoice.currency == "PLN" else vat_pln)  # vatAmount is in PLN
        if invoice.currency != "PLN":
            assert vat_pln != 0 or vat == 0
            assert all(line.findtext("fa:KursWaluty", namespaces=NS) for line in fa.iterfind("fa:FaWiersz", NS))
        # Lines carry the totals: P_13_x is the sum of P_11 at that rate (after - before for corrections).
        lines = list(fa.iterfind("fa:FaWiersz", NS))
        signed = [
            Decimal(line.findtext("fa:P_11", namespaces=NS) or "")
            * (-1 if line.find("fa:StanPrzed", NS) is not None else 1)
            for line in lines
        ]
        assert sum(signed, Decimal("0")) == net

        assert KSEF_NUMBER_RE.match(invoice.ksef_number) and has_valid_checksum(invoice.ksef_number)
        assert invoice.ksef_number.startswith(f"{invoice.seller_nip}-{invoice.issue_date:%Y%m%d}-")
        for reference in (invoice.session_reference_number, invoice.invoice_reference_number):
            assert REFERENCE_NUMBER_RE.match(reference) and has_valid_checksum(reference)
        assert "-SO-" in invoice.session_reference_number and "-EE-" in invoice.invoice_reference_number
        assert invoice.form_code.model_dump() == {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"}
        assert invoice.invoicing_mode == "Online" and invoice.blob_name == f"invoice/{invoice.ksef_number}"


def test_corrections_reference_an_earlier_seeded_invoice_of_the_same_seller(sim: Sim) -> None:
    seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=120, sellers=4, corrections=0.4))

    corrections = [i for i in sim.store.all(StoredInvoice) if i.invoice_type == "Kor"]
    assert corrections
    for correction in corrections:
        original = sim.store.get(StoredInvoice, correction.corrected_invoice_ksef_number or "")
        assert original is not None and original.invoice_type == "Vat"
        assert original.seller_nip == correction.seller_nip
        assert original.acquisition_date < correction.acquisition_date
        xml = sim.store.get_blob(correction.blob_name)
        assert xml is not None
        data = etree.fromstring(xml).find("fa:Fa/fa:DaneFaKorygowanej", NS)
        assert data is not None
        assert data.findtext("fa:NrKSeFFaKorygowanej", namespaces=NS) == original.ksef_number
        assert data.findtext("fa:NrFaKorygowanej", namespaces=NS) == original.invoice_number
        assert data.findtext("fa:DataWystFaKorygowanej", namespaces=NS) == original.issue_date.isoformat()
        assert correction.net_amount < 0 and correction.currency == original.currency


def test_dates_stay_in_the_window_and_follow_the_storage_lag(sim: Sim) -> None:
    start = NOW - timedelta(days=10)
    seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=300, start=start, spread_days=20))

    invoices = sim.store.all(StoredInvoice)
    acquisitions = [i.acquisition_date for i in invoices]
    assert acquisitions == sorted(acquisitions)  # KSeF numbers are handed out in time order
    assert start <= acquisitions[0] and acquisitions[-1] <= NOW  # the window is cut at now
    assert acquisitions[-1] - acquisitions[0] > timedelta(days=8)  # and actually spread over it
    for invoice in invoices:
        assert invoice.invoicing_date <= invoice.acquisition_date
        assert invoice.issue_date <= invoice.acquisition_date.date() + timedelta(days=1)  # Warsaw may be a day ahead
        assert invoice.permanent_storage_date == invoice.acquisition_date + timedelta(seconds=2)
        assert (
            invoice.permanent_storage_date
            <= invoice.indexed_at
            <= invoice.permanent_storage_date + timedelta(seconds=3)
        )
    keys = Counter((i.seller_nip, i.invoice_type, i.invoice_number) for i in invoices)  # the KSeF duplicate key
    assert max(keys.values()) == 1


def test_invoices_issued_days_before_they_are_sent_are_offline(sim: Sim) -> None:
    seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=20, spread_days=1, issued_days_before=8))
    for invoice in sim.store.all(StoredInvoice):
        sent_on = invoice.invoicing_date.astimezone(WARSAW).date()
        assert invoice.issue_date == sent_on - timedelta(days=8)
        assert invoice.invoicing_mode == "Offline"  # REFERENCE.md §8: P_1 before the sending day
        xml = sim.store.get_blob(invoice.blob_name)
        assert xml is not None
        assert f"<P_1>{invoice.issue_date.isoformat()}</P_1>".encode() in xml


def test_seeding_is_deterministic_for_a_random_seed() -> None:
    def run(seed: int) -> list[tuple[str, str]]:
        sim = _open_sim(seed)
        try:
            seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=40, subject3_nip=SUBJECT3))
            return [(i.ksef_number, i.invoice_hash) for i in sim.store.all(StoredInvoice)]
        finally:
            sim.close()

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_seeding_twice_adds_without_collisions(sim: Sim) -> None:
    first = seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=50, sellers=3))
    second = seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=50, sellers=3))

    invoices = sim.store.all(StoredInvoice)
    assert len(invoices) == 100
    assert not set(first.ksef_numbers) & set(second.ksef_numbers)
    assert len({(i.seller_nip, i.invoice_type, i.invoice_number) for i in invoices}) == 100


def test_third_subject_uses_the_requested_nip(sim: Sim) -> None:
    result = seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=60, subject3_nip=SUBJECT3, subject3_share=1.0))

    assert result.with_subject3 == 60
    for invoice in sim.store.all(StoredInvoice):
        [third] = invoice.third_subjects
        assert third.identifier.type == "Nip" and third.identifier.value == SUBJECT3 and third.role in (2, 4, 6)


@pytest.mark.parametrize(
    ("start", "message"),
    [(NOW + timedelta(minutes=1), "after the simulator's now"), (datetime(2025, 8, 1, tzinfo=UTC), "2025-09-01")],
)
def test_impossible_windows_are_refused(sim: Sim, start: datetime, message: str) -> None:
    with pytest.raises(SeedError, match=re.escape(message)):
        seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=1, start=start))
    assert sim.store.count(StoredInvoice) == 0


def test_generated_nips_have_valid_checksums() -> None:
    import random

    rng = random.Random(5)
    nips = [random_nip(rng) for _ in range(500)]
    assert all(nip_checksum_ok(nip) and re.match(NIP_PATTERN, nip) for nip in nips)
    assert nip_checksum_ok("5265877635") and not nip_checksum_ok("5265877636")


def test_ten_thousand_invoices_seed_quickly(tmp_path: Path) -> None:
    sim = _open_sim(3, tmp_path / "bench.sqlite3")
    try:
        began = time.perf_counter()
        result = seed_invoices(sim, SeedOptions(buyer_nip=BUYER, count=10_000, sellers=200))
        elapsed = time.perf_counter() - began
    finally:
        sim.close()
    assert result.created == 10_000
    assert elapsed < 20.0, f"seeding 10 000 invoices took {elapsed:.1f} s"
    reopened = _open_sim(3, tmp_path / "bench.sqlite3")
    try:
        assert reopened.store.count(StoredInvoice) == 10_000  # committed to the file, not just memory
    finally:
        reopened.close()
