"""Verification and acceptance of single invoices (REFERENCE.md §7, §8, §19)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ksef_sim.crypto import sha256_b64
from ksef_sim.domain import fa
from ksef_sim.domain.acceptance import Submission, Verdict, accept_invoice, check_file, find_duplicate
from ksef_sim.records import StoredInvoice
from ksef_sim.refs import KSEF_NUMBER_RE, has_valid_checksum
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

SAMPLES = Path("/work/shared/ksef/samples/invoices")
SELLER = "5265877635"
# 2026-03-10 09:00 in Warsaw (CET, UTC+1).
RECEIVED = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[Sim]:
    state = Sim.open(
        SimSettings(
            database_path=None,
            rate_limits=RateLimitMode.OFF,
            permanent_storage_delay_s=2,
            permanent_storage_jitter_s=0,
            random_seed=7,
        )
    )
    yield state
    state.close()


def invoice(number: str = "FV/1/2026", issue_date: str = "2026-03-10", seller: str = SELLER) -> bytes:
    text = (SAMPLES / "fa3" / "csharp-invoice-template-fa-3.xml").read_text(encoding="utf-8")
    text = text.replace("#nip#", seller).replace("FA/GRQMB-#invoice_number#/05/2025", number)
    text = re.sub(r"<P_1>[^<]*</P_1>", f"<P_1>{issue_date}</P_1>", text)
    return text.encode("utf-8")


def submit(sim: Sim, content: bytes, *, context: str = SELLER, **kwargs: Any) -> Verdict:
    base = Submission(
        content=content,
        form=fa.FA3,
        context=Identifier("Nip", context),
        session_reference_number="20260310-SO-0000000000-0000000000-00",
        invoice_reference_number="20260310-EE-0000000000-0000000001-00",
        invoicing_date=RECEIVED,
        acquisition_date=RECEIVED + timedelta(seconds=1),
    )
    return accept_invoice(sim, replace(base, **kwargs))


def stored_of(verdict: Verdict) -> StoredInvoice:
    assert verdict.invoice is not None, verdict
    return verdict.invoice


def details_of(verdict: Verdict) -> list[str]:
    assert verdict.details, verdict
    return verdict.details


def test_accepts_and_extracts_metadata(sim: Sim) -> None:
    content = invoice()
    verdict = submit(sim, content)
    assert verdict.code == 200
    stored = verdict.invoice
    assert isinstance(stored, StoredInvoice)
    assert KSEF_NUMBER_RE.match(stored.ksef_number) and has_valid_checksum(stored.ksef_number)
    assert stored.ksef_number.startswith(f"{SELLER}-20260310-")
    assert stored.invoice_number == "FV/1/2026"
    assert stored.issue_date == date(2026, 3, 10)
    assert stored.seller_name == "Elektrownia S.A."
    assert (stored.buyer_identifier.type, stored.buyer_identifier.value) == ("Nip", "1111111111")
    assert (stored.net_amount, stored.vat_amount, stored.gross_amount) == (
        Decimal("43.60"),
        Decimal("10.03"),
        Decimal("53.63"),
    )
    assert stored.currency == "PLN" and stored.invoice_type == "Vat" and stored.invoicing_mode == "Online"
    assert stored.invoice_hash == sha256_b64(content) and stored.invoice_size == len(content)
    assert stored.acquisition_date == RECEIVED + timedelta(seconds=1)
    assert stored.permanent_storage_date == stored.acquisition_date + timedelta(seconds=2)
    assert sim.store.get_blob(stored.blob_name) == content
    assert sim.store.get(StoredInvoice, stored.ksef_number) == stored


def test_duplicate_is_440_with_original_numbers(sim: Sim) -> None:
    first = stored_of(submit(sim, invoice()))
    # Same seller, type and P_2, different bytes (another issue date): still a duplicate (§8: hash not used).
    verdict = submit(
        sim, invoice(issue_date="2026-03-09"), session_reference_number="20260310-SO-1111111111-0000000000-00"
    )
    assert verdict.code == 440
    assert verdict.extensions == {
        "originalSessionReferenceNumber": first.session_reference_number,
        "originalKsefNumber": first.ksef_number,
    }
    assert first.ksef_number in details_of(verdict)[0]
    assert sim.store.count(StoredInvoice) == 1
    # Another number is no duplicate.
    assert submit(sim, invoice(number="FV/2/2026")).code == 200


def test_duplicate_index_sees_invoices_written_directly(sim: Sim) -> None:
    # Seeding writes StoredInvoice records itself; the duplicate check must see them too.
    stored = stored_of(submit(sim, invoice()))
    assert find_duplicate(sim.store, SELLER, "Vat", "FV/1/2026") == stored
    seeded = stored.model_copy(update={"ksef_number": stored.ksef_number[:-2] + "00", "invoice_number": "SEED/1"})
    sim.store.put(seeded)
    assert find_duplicate(sim.store, SELLER, "Vat", "SEED/1") == seeded
    assert find_duplicate(sim.store, SELLER, "Kor", "SEED/1") is None


def test_issue_date_before_acceptance_day_becomes_offline(sim: Sim) -> None:
    verdict = submit(sim, invoice(issue_date="2026-03-09"))
    assert verdict.code == 200 and verdict.invoicing_mode == "Offline"


def test_day_boundary_is_warsaw_time(sim: Sim) -> None:
    # 23:30 UTC on 9 March is already 10 March in Warsaw: an invoice issued on the 9th is Offline.
    late = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)
    verdict = submit(sim, invoice(issue_date="2026-03-09"), invoicing_date=late, acquisition_date=late)
    assert verdict.invoicing_mode == "Offline"
    assert stored_of(verdict).ksef_number.startswith(f"{SELLER}-20260310-")


def test_declared_offline_stays_offline(sim: Sim) -> None:
    verdict = submit(sim, invoice(), offline_mode=True)
    assert verdict.invoicing_mode == "Offline"


def test_issue_date_in_the_future_is_450(sim: Sim) -> None:
    verdict = submit(sim, invoice(issue_date="2026-03-11"))
    assert verdict.code == 450 and "P_1" in details_of(verdict)[0]


def test_bom_is_430(sim: Sim) -> None:
    verdict = submit(sim, b"\xef\xbb\xbf" + invoice())
    assert verdict.code == 430
    assert "BOM" in details_of(verdict)[0]


@pytest.mark.parametrize(
    "content",
    [
        b'<?xml version="1.0" encoding="windows-1250"?><a/>',
        b"<a>\xff\xfe</a>",
        b'<?xml version="1.0"?><?xml-stylesheet href="x.xsl"?><a/>',
    ],
    ids=["declared-encoding", "not-utf8", "processing-instruction"],
)
def test_file_rules(content: bytes) -> None:
    assert check_file(content)


def test_plain_prolog_passes_file_rules() -> None:
    assert check_file(invoice()) == []


def test_xsd_error_is_450_with_messages(sim: Sim) -> None:
    broken = invoice().replace(b"<P_2>", b"<P_2X>").replace(b"</P_2>", b"</P_2X>")
    verdict = submit(sim, broken)
    assert verdict.code == 450
    assert any("P_2X" in detail for detail in details_of(verdict))


def test_malformed_is_450_invalid_xml(sim: Sim) -> None:
    verdict = submit(sim, b"<Faktura>")
    assert (verdict.code, verdict.details) == (450, ["Nieprawidłowy XML"])


def test_foreign_seller_is_410(sim: Sim) -> None:
    verdict = submit(sim, invoice(seller="7352765225"))
    assert verdict.code == 410


def test_self_invoicing_buyer_may_send(sim: Sim) -> None:
    text = (SAMPLES / "fa3" / "java-invoice_template_v3_self_invoicing.xml").read_text(encoding="utf-8")
    content = (
        text.replace("#nip#", "7352765225")
        .replace("#selfInvocingNip#", SELLER)
        .replace("#invoice_number#", "9")
        .replace("#invoicing_date#", "2026-03-10")
        .encode()
    )
    verdict = submit(sim, content)
    assert verdict.code == 200
    assert stored_of(verdict).is_self_invoicing and stored_of(verdict).seller_nip == "7352765225"


def test_attachment_needs_permission(sim: Sim) -> None:
    text = (SAMPLES / "fa3" / "csharp-invoice-template-fa-3-with-attachment.xml").read_text(encoding="utf-8")
    content = text.replace("#nip#", SELLER).replace("#invoice_number#", "A1").encode()
    assert submit(sim, content).code == 415
    accepted = submit(sim, content, attachments_allowed=True)
    assert accepted.code == 200 and stored_of(accepted).has_attachment


def test_size_limit(sim: Sim) -> None:
    content = invoice()
    assert submit(sim, content, max_size=len(content) - 1, max_size_with_attachment=10**6).code == 430


def test_foreign_currency_uses_vat_in_pln() -> None:
    content = invoice().replace(b"<KodWaluty>PLN</KodWaluty>", b"<KodWaluty>EUR</KodWaluty>")
    content = content.replace(b"</P_14_1>", b"</P_14_1><P_14_1W>43.00</P_14_1W>", 1)
    root = fa.parse_xml(content)
    assert fa.validate(root, fa.FA3) == []
    facts = fa.extract_facts(root)
    assert facts.currency == "EUR" and facts.vat_amount == Decimal("43.00")


def test_correction_metadata() -> None:
    content = invoice().replace(b"<RodzajFaktury>VAT</RodzajFaktury>", b"<RodzajFaktury>KOR</RodzajFaktury>")
    content = content.replace(
        b"</RodzajFaktury>",
        b"</RodzajFaktury><PrzyczynaKorekty>x</PrzyczynaKorekty><TypKorekty>1</TypKorekty><DaneFaKorygowanej>"
        b"<DataWystFaKorygowanej>2026-03-01</DataWystFaKorygowanej><NrFaKorygowanej>FV/0</NrFaKorygowanej>"
        b"<NrKSeF>1</NrKSeF><NrKSeFFaKorygowanej>5265877635-20260301-010000000001-E1</NrKSeFFaKorygowanej>"
        b"</DaneFaKorygowanej>",
        1,
    )
    root = fa.parse_xml(content)
    assert fa.validate(root, fa.FA3) == []
    facts = fa.extract_facts(root)
    assert facts.invoice_type == "Kor"
    assert facts.corrected_invoice_ksef_number == "5265877635-20260301-010000000001-E1"
