from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pydantic
import pytest

from platform_common.contracts import CONTRACTS, TOPICS, InvoiceFetched, MonthApproved, Party, StatusChanged
from platform_common.messaging.envelope import Envelope, UnsupportedEvent


def _invoice(**overrides: object) -> InvoiceFetched:
    fields: dict[str, object] = dict(
        ksef_number="5154965572-20260202-010020FC1565-02",
        client_nip="5260250274",
        seller=Party(nip="5154965572", name="Dostawca Sp. z o.o."),
        buyer=Party(nip="5260250274", name="Klient S.A."),
        p_1=date(2026, 2, 1),
        p_2="FV/2026/02/001",
        net_amount=Decimal("100.00"),
        vat_amount=Decimal("23.00"),
        gross_amount=Decimal("123.00"),
        currency="PLN",
        invoice_type="VAT",
        acquisition_date=datetime(2026, 2, 2, 10, 0, tzinfo=UTC),
        invoice_hash="n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
        xml_ref="gw:xml:1",
    )
    fields.update(overrides)
    return InvoiceFetched.model_validate(fields)


class TestEnvelope:
    def test_round_trips_through_bytes_with_its_contract(self) -> None:
        contract = _invoice()
        env = Envelope.wrap(
            contract,
            producer="ksef-gateway",
            client_nip="5260250274",
            tenant="office-1",
            trace={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        )

        back = Envelope.from_bytes(env.to_bytes())

        assert back == env
        assert back.parse(InvoiceFetched) == contract
        assert back.parse(InvoiceFetched).gross_amount == Decimal("123.00")
        assert back.key == "5260250274"

    def test_key_falls_back_to_tenant_then_event_id(self) -> None:
        base = dict(type="x", version=1, producer="p", payload={})
        assert Envelope(tenant="office-1", **base).key == "office-1"
        env = Envelope(**base)
        assert env.key == str(env.id)

    def test_parsing_as_another_contract_or_version_is_refused(self) -> None:
        env = Envelope.wrap(_invoice(), producer="ksef-gateway")
        with pytest.raises(UnsupportedEvent, match=r"expected status\.changed v1, got invoice\.fetched v1"):
            env.parse(StatusChanged)
        newer = env.model_copy(update={"version": 2})
        with pytest.raises(UnsupportedEvent):
            newer.parse(InvoiceFetched)

    def test_garbage_is_a_validation_error(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            Envelope.from_bytes(b'{"type": "invoice.fetched"}')


class TestContracts:
    def test_every_architecture_event_is_registered_under_its_topic(self) -> None:
        assert set(TOPICS) == {
            "invoice.fetched",
            "invoice.sent",
            "status.changed",
            "month.approved",
            "user.invited",
            "user.password_reset_requested",
            "integration.changed",
            "credential.access",
            "ksef.outage",
            "sales.deadline.alerted",
            "webhook.changed",
        }
        # One topic per event type, except a lifecycle whose events must stay in order together.
        shared = {"integration.changed", "credential.access", "month.approved", "ksef.outage", "webhook.changed"}
        assert all(c.topic == t or c.topic in shared for (t, _v), c in CONTRACTS.items())
        assert {c.topic for (t, _v), c in CONTRACTS.items() if t.startswith("integration.")} == {"integration.changed"}
        # A month's approval, unlock and late arrivals share one topic, keyed by the client: they stay in order.
        assert {c.topic for (t, _v), c in CONTRACTS.items() if t.startswith("month.")} == {"month.approved"}

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("ksef_number", "5154965572-20260202-010020FC1565"),
            ("client_nip", "0123456789"),
            ("currency", "zł"),
        ],
    )
    def test_invoice_fetched_rejects_malformed_identifiers(self, field: str, value: str) -> None:
        with pytest.raises(pydantic.ValidationError):
            _invoice(**{field: value})

    def test_unknown_fields_are_rejected_so_typos_do_not_pass_silently(self) -> None:
        with pytest.raises(pydantic.ValidationError):
            _invoice(gross=Decimal(1))

    def test_month_approved_period_format(self) -> None:
        ok = MonthApproved(
            client_nip="5260250274",
            period="2026-02",
            approved_by=str(uuid.uuid4()),
            approved_at=datetime.now(UTC),
            book_count=3,
            dont_book_count=1,
        )
        assert ok.period == "2026-02"
        with pytest.raises(pydantic.ValidationError):
            MonthApproved.model_validate({**ok.model_dump(), "period": "2026-13"})
