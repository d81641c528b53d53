"""Receiving-side rules without HTTP: HWM, date window, visibility, filters, paging and truncation, export package
building and export status transitions."""

from __future__ import annotations

import io
import json
import random
import zipfile
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from ksef_sim.domain import exports as ex
from ksef_sim.domain.query import (
    DateRange,
    DateType,
    InvoiceQueryFilters,
    SubjectType,
    Window,
    invoice_metadata,
    is_party,
    is_subject,
    is_visible,
    matches,
    normalize_ksef_number,
    paginate,
    permanent_storage_hwm,
    resolve_window,
    select,
    within_range_limit,
)
from ksef_sim.errors import KsefError
from ksef_sim.records import (
    AuthorizedSubject,
    FormCode,
    PartyIdentifier,
    StoredInvoice,
    ThirdSubject,
    storage_times,
)
from ksef_sim.refs import ksef_number
from ksef_sim.security import Identifier

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SELLER = "5265877635"
BUYER = "7352765225"
OTHER = "3225081610"
SUBUNIT = "5265877635-00013"


def make_invoice(seq: int, acquired: datetime = NOW - timedelta(hours=1), **overrides: Any) -> StoredInvoice:
    fields: dict[str, Any] = {
        "ksef_number": ksef_number(SELLER, acquired, seq),
        "invoice_number": f"FV/{seq}",
        "issue_date": acquired.date(),
        "invoicing_date": acquired - timedelta(seconds=5),
        "acquisition_date": acquired,
        "permanent_storage_date": acquired,
        "indexed_at": acquired,
        "seller_nip": SELLER,
        "seller_name": "Sprzedawca",
        "buyer_identifier": PartyIdentifier(type="Nip", value=BUYER),
        "buyer_name": "Nabywca",
        "net_amount": Decimal("100.00"),
        "vat_amount": Decimal("23.00"),
        "gross_amount": Decimal("123.00"),
        "currency": "PLN",
        "invoicing_mode": "Online",
        "invoice_type": "Vat",
        "form_code": FormCode(systemCode="FA (3)", schemaVersion="1-0E", value="FA"),
        "invoice_hash": "mkht+3m5trnfxlTYhq3QFn74LkEO69MFNlsMAkCDSPA=",
        "invoice_size": 100,
        "session_reference_number": "20260310-SO-0000000000-0000000000-00",
        "invoice_reference_number": f"20260310-EE-{seq:010X}-0000000000-00",
        "context_type": "Nip",
        "context_value": SELLER,
    }
    fields.update(overrides)
    return StoredInvoice(**fields)


def filters(subject: str = "Subject1", date_type: str = "PermanentStorage", **extra: Any) -> InvoiceQueryFilters:
    body: dict[str, Any] = {
        "subjectType": subject,
        "dateRange": {"dateType": date_type, "from": (NOW - timedelta(days=30)).isoformat()},
    }
    body.update(extra)
    return InvoiceQueryFilters.model_validate(body)


def window(date_type: DateType = DateType.PERMANENT_STORAGE, days: int = 30) -> Window:
    return Window(date_type, NOW - timedelta(days=days), NOW, None)


# --- HWM and the date window ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rng_value", [0.0, 0.25, 0.5, 0.999])
def test_everything_at_or_below_the_hwm_is_already_indexed(rng_value: float) -> None:
    jitter = 30.0
    for offset in range(0, 120, 7):
        acquired = NOW - timedelta(seconds=offset)
        permanent, indexed = storage_times(acquired, 2.0, jitter, rng_value)
        if permanent <= permanent_storage_hwm(NOW, jitter):
            assert indexed <= NOW


def test_permanent_storage_query_hides_a_late_indexed_invoice_that_other_date_types_show() -> None:
    late = make_invoice(1, permanent_storage_date=NOW - timedelta(seconds=5), indexed_at=NOW + timedelta(seconds=5))
    assert not is_visible(late, DateType.PERMANENT_STORAGE, NOW)
    assert is_visible(late, DateType.INVOICING, NOW)
    assert is_visible(late, DateType.PERMANENT_STORAGE, NOW + timedelta(seconds=5))
    not_acquired = make_invoice(2, acquired=NOW + timedelta(seconds=1))
    assert not is_visible(not_acquired, DateType.ISSUE, NOW)


def test_to_defaults_to_now_and_the_hwm_is_reported_for_permanent_storage_only() -> None:
    hwm = NOW - timedelta(seconds=30)
    start = NOW - timedelta(days=1)
    resolved = resolve_window(DateRange.model_validate({"dateType": "PermanentStorage", "from": start}), NOW, hwm)
    assert (resolved.start, resolved.end, resolved.hwm) == (start, NOW, hwm)
    issue = resolve_window(DateRange.model_validate({"dateType": "Issue", "from": start}), NOW, hwm)
    assert issue.hwm is None
    # For an older window the reported HWM is the window's own end ("zgodne z warunkami zapytania").
    old_end = NOW - timedelta(hours=2)
    old = resolve_window(
        DateRange.model_validate({"dateType": "PermanentStorage", "from": start, "to": old_end}), NOW, hwm
    )
    assert old.hwm == old_end


def test_restrict_to_hwm_clamps_to_and_rejects_from_beyond_it() -> None:
    hwm = NOW - timedelta(seconds=30)
    body = {"dateType": "PermanentStorage", "from": NOW - timedelta(hours=1), "restrictToPermanentStorageHwmDate": True}
    assert resolve_window(DateRange.model_validate(body), NOW, hwm).end == hwm
    beyond = {**body, "from": NOW - timedelta(seconds=10)}
    with pytest.raises(KsefError) as raised:
        resolve_window(DateRange.model_validate(beyond), NOW, hwm)
    assert raised.value.errors[0][0] == 21183
    # The flag concerns PermanentStorage only.
    issue = {**beyond, "dateType": "Issue"}
    assert resolve_window(DateRange.model_validate(issue), NOW, hwm).end == NOW


def test_a_datetime_without_offset_is_warsaw_local_time() -> None:
    resolved = resolve_window(
        DateRange.model_validate({"dateType": "Invoicing", "from": "2026-03-01T00:00:00", "to": "2026-03-02T00:00:00"}),
        NOW,
        NOW,
    )
    assert resolved.start == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)  # CET = UTC+1


def test_three_month_limit_in_utc_or_warsaw() -> None:
    start = datetime(2025, 1, 31, 10, 0, tzinfo=UTC)
    assert within_range_limit(start, datetime(2025, 4, 30, 10, 0, tzinfo=UTC))  # month end clamps
    assert not within_range_limit(start, datetime(2025, 4, 30, 10, 0, 1, tzinfo=UTC))
    # 2025-02-28T23:30Z is already 1 March in Warsaw: three Warsaw months reach 1 June, three UTC months 28 May.
    late_february = datetime(2025, 2, 28, 23, 30, tzinfo=UTC)
    assert within_range_limit(late_february, datetime(2025, 5, 30, tzinfo=UTC))
    assert not within_range_limit(late_february, datetime(2025, 6, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (NOW - timedelta(days=93), None),  # "to" defaults to now, so the range is measured up to now
        (NOW - timedelta(days=1), NOW - timedelta(days=2)),  # inverted
        (datetime(9999, 12, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)),  # +3 months overflows
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), NOW),  # before year 1 in UTC
    ],
)
def test_invalid_ranges_answer_21405(start: datetime, end: datetime | None) -> None:
    with pytest.raises(KsefError) as raised:
        resolve_window(DateRange.model_validate({"dateType": "Issue", "from": start, "to": end}), NOW, NOW)
    assert raised.value.errors[0][0] == 21405


# --- who sees what -------------------------------------------------------------------------------------------------


def test_each_subject_type_matches_its_role() -> None:
    invoice = make_invoice(
        1,
        third_subjects=[
            ThirdSubject(identifier=PartyIdentifier(type="InternalId", value=SUBUNIT), role=4),
            ThirdSubject(identifier=PartyIdentifier(type="Nip", value=OTHER), role=2),
        ],
        authorized_subject=AuthorizedSubject(nip="9999999999", role=1),
    )
    nip = Identifier("Nip", SELLER)
    assert is_subject(invoice, nip, SubjectType.SUBJECT1)
    assert not is_subject(invoice, nip, SubjectType.SUBJECT2)
    assert is_subject(invoice, Identifier("Nip", BUYER), SubjectType.SUBJECT2)
    assert is_subject(invoice, Identifier("InternalId", SUBUNIT), SubjectType.SUBJECT3)
    assert is_subject(invoice, Identifier("Nip", OTHER), SubjectType.SUBJECT3)
    assert not is_subject(invoice, Identifier("Nip", SUBUNIT), SubjectType.SUBJECT3)  # type matters
    assert is_subject(invoice, Identifier("Nip", "9999999999"), SubjectType.SUBJECT_AUTHORIZED)
    assert not is_party(invoice, Identifier("Nip", "1111111111"))


def test_a_buyer_identified_by_vat_ue_is_not_a_polish_nip_context() -> None:
    invoice = make_invoice(1, buyer_identifier=PartyIdentifier(type="VatUe", value=BUYER))
    assert not is_subject(invoice, Identifier("Nip", BUYER), SubjectType.SUBJECT2)


# --- filters ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "hit", "miss"),
    [
        ({"invoiceNumber": "FV/A"}, {"invoice_number": "FV/A"}, {}),
        ({"amount": {"type": "Brutto", "from": 100, "to": 200}}, {}, {"gross_amount": Decimal("200.01")}),
        ({"amount": {"type": "Netto", "from": -50, "to": 0}}, {"net_amount": Decimal(-50)}, {}),
        ({"amount": {"type": "Vat", "from": 23}}, {}, {"vat_amount": Decimal("22.99")}),
        ({"sellerNip": SELLER}, {}, {"seller_nip": OTHER}),
        ({"buyerIdentifier": {"type": "Nip", "value": BUYER}}, {}, {"buyer_identifier": PartyIdentifier(type="Nip")}),
        ({"buyerIdentifier": {"type": "None"}}, {"buyer_identifier": PartyIdentifier(type="None")}, {}),
        ({"currencyCodes": ["EUR", "PLN"]}, {}, {"currency": "USD"}),
        ({"invoicingMode": "Offline"}, {"invoicing_mode": "Offline"}, {}),
        ({"isSelfInvoicing": True}, {"is_self_invoicing": True}, {}),
        ({"formType": "PEF"}, {"form_code": FormCode(systemCode="PEF (3)", schemaVersion="2-1", value="PEF")}, {}),
        ({"invoiceTypes": ["Kor", "KorZal"]}, {"invoice_type": "KorZal"}, {}),
        ({"hasAttachment": False}, {}, {"has_attachment": True}),
    ],
)
def test_filter(extra: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any]) -> None:
    query = filters(**extra)
    assert matches(make_invoice(1, **hit), query)
    assert not matches(make_invoice(1, **miss), query)


def test_ksef_number_filter_accepts_the_dashed_form() -> None:
    invoice = make_invoice(7)
    nip, day, technical, check = invoice.ksef_number.split("-")
    dashed = f"{nip}-{day}-{technical[:6]}-{technical[6:]}-{check}"
    assert normalize_ksef_number(dashed) == invoice.ksef_number
    assert matches(invoice, filters(ksefNumber=dashed))
    assert not matches(make_invoice(8), filters(ksefNumber=dashed))


def test_unknown_currency_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="ZZZ"):
        filters(currencyCodes=["ZZZ"])


def test_nan_amount_is_a_validation_error() -> None:
    with pytest.raises(ValueError, match="amount"):
        InvoiceQueryFilters.model_validate_json(
            '{"subjectType": "Subject1", "dateRange": {"dateType": "Issue", "from": "2026-01-01T00:00:00Z"},'
            ' "amount": {"type": "Brutto", "from": "NaN"}}'
        )


def test_issue_window_compares_warsaw_calendar_dates() -> None:
    # 2026-03-09T23:30Z is already 10 March in Warsaw, so an invoice issued on 10 March is inside.
    w = Window(DateType.ISSUE, datetime(2026, 3, 9, 23, 30, tzinfo=UTC), NOW, None)
    assert w.contains(make_invoice(1, issue_date=date(2026, 3, 10)))
    assert not w.contains(make_invoice(2, issue_date=date(2026, 3, 9)))


def test_select_sorts_by_the_date_types_field() -> None:
    a = make_invoice(1, acquired=NOW - timedelta(hours=3), issue_date=date(2026, 3, 9))
    b = make_invoice(2, acquired=NOW - timedelta(hours=2), issue_date=date(2026, 3, 1))
    c = make_invoice(3, acquired=NOW - timedelta(hours=1), issue_date=date(2026, 3, 5))
    ctx = Identifier("Nip", SELLER)
    by_storage = select([c, a, b], filters(), ctx, window(), NOW)
    assert [i.ksef_number for i in by_storage] == [a.ksef_number, b.ksef_number, c.ksef_number]
    by_issue = select([c, a, b], filters(date_type="Issue"), ctx, window(DateType.ISSUE), NOW, descending=True)
    assert [i.ksef_number for i in by_issue] == [a.ksef_number, c.ksef_number, b.ksef_number]


# --- paging and truncation -----------------------------------------------------------------------------------------


def test_paging_is_by_page_index() -> None:
    results = [make_invoice(i) for i in range(25)]
    pages = [paginate(results, offset, 10) for offset in range(3)]
    assert [len(p.invoices) for p in pages] == [10, 10, 5]
    assert [p.has_more for p in pages] == [True, True, False]
    assert pages[1].invoices[0] is results[10]
    assert not any(p.is_truncated for p in pages)


def test_truncation_flags_the_page_that_reaches_the_cap() -> None:
    results = [make_invoice(i) for i in range(25)]
    first, second = paginate(results, 0, 10, cap=20), paginate(results, 1, 10, cap=20)
    assert (first.has_more, first.is_truncated) == (True, False)
    assert (len(second.invoices), second.has_more, second.is_truncated) == (10, True, True)
    # A page size that does not divide the cap: the page is cut at the cap.
    cut = paginate(results, 1, 15, cap=20)
    assert (len(cut.invoices), cut.has_more, cut.is_truncated) == (5, True, True)
    # Exactly at the cap nothing is truncated.
    exact = paginate(results[:20], 1, 10, cap=20)
    assert (exact.has_more, exact.is_truncated) == (False, False)


def test_continuing_from_the_last_date_after_truncation_returns_everything_once_deduplicated() -> None:
    base = NOW - timedelta(days=2)
    # Five invoices share the permanent-storage instant at the truncation boundary.
    dates = [base + timedelta(minutes=i) for i in range(18)] + [base + timedelta(minutes=18)] * 5
    dates += [base + timedelta(minutes=19 + i) for i in range(7)]
    invoices = [make_invoice(i, acquired=d) for i, d in enumerate(dates)]
    ctx = Identifier("Nip", SELLER)
    seen: dict[str, StoredInvoice] = {}
    start, rounds = base - timedelta(minutes=1), 0
    while True:
        rounds += 1
        w = Window(DateType.PERMANENT_STORAGE, start, NOW, NOW)
        found = select(invoices, filters(), ctx, w, NOW)
        offset = 0
        while True:
            page = paginate(found, offset, 10, cap=20)
            seen.update((i.ksef_number, i) for i in page.invoices)
            if not page.has_more or page.is_truncated:
                break
            offset += 1
        if not page.is_truncated:
            break
        start = page.invoices[-1].permanent_storage_date
    assert rounds == 2
    assert sorted(seen) == sorted(i.ksef_number for i in invoices)


# --- rendering -----------------------------------------------------------------------------------------------------


def test_metadata_renders_amounts_as_numbers_and_omits_absent_optionals() -> None:
    body = invoice_metadata(make_invoice(1, net_amount=Decimal("35260.63")))
    assert body["netAmount"] == 35260.63
    assert isinstance(body["grossAmount"], float)
    assert "hashOfCorrectedInvoice" not in body
    assert "authorizedSubject" not in body
    assert body["thirdSubjects"] == []
    assert body["buyer"] == {"identifier": {"type": "Nip", "value": BUYER}, "name": "Nabywca"}
    assert json.loads(json.dumps(body)) == body


# --- export packages and states ------------------------------------------------------------------------------------


def test_archive_stops_at_the_invoice_cap_and_lists_exactly_what_it_holds() -> None:
    invoices = [make_invoice(i, acquired=NOW - timedelta(minutes=10 - i)) for i in range(5)]
    built = ex.build_archive(
        invoices, lambda i: f"<x>{i.ksef_number}</x>".encode(), only_metadata=False, max_invoices=3
    )
    assert built.is_truncated
    with zipfile.ZipFile(io.BytesIO(built.data)) as archive:
        names = sorted(archive.namelist())
        metadata = json.loads(archive.read(ex.METADATA_FILE))
    assert names == sorted([ex.METADATA_FILE] + [f"{i.ksef_number}.xml" for i in invoices[:3]])
    assert [m["ksefNumber"] for m in metadata["invoices"]] == [i.ksef_number for i in invoices[:3]]
    assert ex.last_date(built.invoices[-1], DateType.PERMANENT_STORAGE) == (
        "lastPermanentStorageDate",
        invoices[2].permanent_storage_date.isoformat(),
    )
    assert ex.last_date(built.invoices[-1], DateType.ISSUE)[0] == "lastIssueDate"


def test_archive_stops_at_the_compressed_size_cap_but_metadata_only_ignores_it() -> None:
    invoices = [make_invoice(i) for i in range(4)]
    noise = [random.Random(i).randbytes(2000) for i in range(len(invoices))]  # incompressible
    by_number = {i.ksef_number: data for i, data in zip(invoices, noise, strict=True)}
    built = ex.build_archive(invoices, lambda i: by_number[i.ksef_number], only_metadata=False, max_bytes=3000)
    assert (len(built.invoices), built.is_truncated) == (1, True)
    metadata_only = ex.build_archive(invoices, lambda i: by_number[i.ksef_number], only_metadata=True, max_bytes=3000)
    assert (len(metadata_only.invoices), metadata_only.is_truncated) == (4, False)


def test_parts_split_and_encrypt_independently() -> None:
    data = bytes(range(256)) * 5
    parts = ex.encrypt_parts("20260310-EH-0000000000-0000000000-00", data, 500, b"k" * 32, b"i" * 16, "Zip")
    assert [p.part_size for p, _ in parts] == [500, 500, 280]
    assert parts[0][0].part_name == "20260310-EH-0000000000-0000000000-00-001.zip.aes"
    assert all(p.encrypted_part_size == len(blob) and p.encrypted_part_size % 16 == 0 for p, blob in parts)


def _export(**overrides: Any) -> ex.InvoiceExport:
    fields: dict[str, Any] = {
        "reference_number": "20260310-EH-0000000000-0000000000-00",
        "context_type": "Nip",
        "context_value": SELLER,
        "created_at": NOW,
        "ready_at": NOW + timedelta(seconds=10),
    }
    fields.update(overrides)
    return ex.InvoiceExport(**fields)


def test_export_state_runs_completes_expires_and_goes() -> None:
    retention = timedelta(days=7)
    export = _export()
    assert ex.export_state(export, NOW, False, retention).code == ex.RUNNING
    done = ex.export_state(export, NOW + timedelta(seconds=10), False, retention)
    assert (done.code, done.completed_at) == (ex.DONE, NOW + timedelta(seconds=10))
    assert done.package_expiration == NOW + timedelta(seconds=10) + ex.PACKAGE_LIFETIME
    expired_at = NOW + timedelta(seconds=10) + ex.PACKAGE_LIFETIME
    assert ex.export_state(export, expired_at, False, retention).code == ex.EXPIRED
    assert ex.export_state(export, expired_at, False, retention).gone_at == expired_at + retention


def test_stuck_export_stays_running_until_released() -> None:
    retention = timedelta(days=7)
    export = _export(stuck=True)
    later = NOW + timedelta(hours=1)
    assert ex.is_running(export, later, True, retention)
    assert not ex.release_if_unstuck(export, True, later)
    assert ex.release_if_unstuck(export, False, later)
    assert ex.export_state(export, later, False, retention).completed_at == later


def test_failed_export_is_final_and_goes_after_retention() -> None:
    export = _export(failure_code=ex.KEY_ERROR)
    state = ex.export_state(export, NOW, False, timedelta(seconds=60))
    assert (state.code, state.gone_at) == (ex.KEY_ERROR, NOW + timedelta(seconds=60))
    assert not ex.is_running(export, NOW, False, timedelta(seconds=60))


@pytest.mark.parametrize(
    ("context_type", "subject_type", "allowed"),
    [
        ("Nip", SubjectType.SUBJECT2, True),
        ("Nip", SubjectType.SUBJECT_AUTHORIZED, True),
        ("InternalId", SubjectType.SUBJECT3, True),
        ("InternalId", SubjectType.SUBJECT1, False),
        ("NipVatUe", SubjectType.SUBJECT1, False),
        ("PeppolId", SubjectType.SUBJECT2, False),
    ],
)
def test_export_subject_and_context_combinations(context_type: str, subject_type: SubjectType, allowed: bool) -> None:
    assert ex.export_allowed(context_type, subject_type) is allowed
