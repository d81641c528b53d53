"""POST /invoices/exports and GET /invoices/exports/{referenceNumber} over HTTP (REFERENCE.md §9): the client's
whole path, from the wrapped key to decrypting, joining and unpacking the parts."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from ksef_sim.crypto import (
    KSEF_TOKEN_ENCRYPTION,
    SYMMETRIC_KEY_ENCRYPTION,
    aes_cbc_decrypt,
    b64,
    rsa_oaep_encrypt,
    sha256_b64,
)
from ksef_sim.records import FormCode, PartyIdentifier, StoredInvoice
from ksef_sim.refs import REFERENCE_NUMBER_RE, ksef_number
from ksef_sim.security import Identifier
from ksef_sim.settings import RateLimitMode, SimSettings
from ksef_sim.state import Sim

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SELLER = "5265877635"
BUYER = "7352765225"
OTHER = "3225081610"
JITTER_S = 60.0
DELAY_S = 30.0
RETENTION_S = 3600
STATUS_FIELDS = {"status", "completedDate", "packageExpirationDate", "package"}
PART_FIELDS = {
    "ordinalNumber",
    "partName",
    "method",
    "url",
    "partSize",
    "partHash",
    "encryptedPartSize",
    "encryptedPartHash",
    "expirationDate",
}


@pytest.fixture
def sim_settings() -> SimSettings:
    return SimSettings(
        database_path=None,
        public_base_url="https://ksef-sim.test",
        rate_limits=RateLimitMode.OFF,
        permanent_storage_delay_s=0,
        permanent_storage_jitter_s=JITTER_S,
        export_processing_delay_s=DELAY_S,
        async_status_retention_s=RETENTION_S,
        random_seed=1234,
    )


@pytest.fixture(autouse=True)
def frozen(sim: Sim) -> None:
    sim.clock.set(NOW, frozen=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_sequence = iter(range(1, 1_000_000))


def add_invoice(sim: Sim, acquired: datetime = NOW - timedelta(hours=1), **overrides: Any) -> StoredInvoice:
    seq = next(_sequence)
    xml = f'<?xml version="1.0" encoding="UTF-8"?><Faktura><P_2>FV/{seq}</P_2></Faktura>'.encode()
    fields: dict[str, Any] = {
        "ksef_number": ksef_number(SELLER, acquired, seq),
        "invoice_number": f"FV/{seq}",
        "issue_date": acquired.date(),
        "invoicing_date": acquired - timedelta(seconds=5),
        "acquisition_date": acquired,
        "permanent_storage_date": acquired,
        "indexed_at": acquired,
        "seller_nip": SELLER,
        "buyer_identifier": PartyIdentifier(type="Nip", value=BUYER),
        "net_amount": Decimal("100.00"),
        "vat_amount": Decimal("23.00"),
        "gross_amount": Decimal("123.00"),
        "currency": "PLN",
        "invoicing_mode": "Online",
        "invoice_type": "Vat",
        "form_code": FormCode(systemCode="FA (3)", schemaVersion="1-0E", value="FA"),
        "invoice_hash": sha256_b64(xml),
        "invoice_size": len(xml),
        "session_reference_number": "20260310-SO-0000000000-0000000000-00",
        "invoice_reference_number": f"20260310-EE-{seq:010X}-0000000000-00",
        "context_type": "Nip",
        "context_value": SELLER,
    }
    fields.update(overrides)
    invoice = StoredInvoice(**fields)
    sim.store.put(invoice)
    sim.store.put_blob(invoice.blob_name, xml)
    return invoice


class ClientKey:
    """The client's side of the export cipher: a random AES key wrapped with the Ministry's public key."""

    def __init__(self, sim: Sim, usage: str = SYMMETRIC_KEY_ENCRYPTION) -> None:
        self.key, self.iv = os.urandom(32), os.urandom(16)
        certificate = sim.keys.for_usage(usage).certificate_der_b64
        self.encryption = {
            "encryptedSymmetricKey": b64(rsa_oaep_encrypt(certificate, self.key)),
            "initializationVector": b64(self.iv),
        }


def export_body(key: ClientKey, subject: str = "Subject1", date_type: str = "PermanentStorage", **extra: Any) -> Any:
    date_range: dict[str, Any] = {"dateType": date_type, "from": (NOW - timedelta(days=30)).isoformat()}
    date_range.update(extra.pop("dateRange", {}))
    return {"encryption": key.encryption, "filters": {"subjectType": subject, "dateRange": date_range}, **extra}


def error_code(body: dict[str, Any]) -> int:
    code: int = body["exception"]["exceptionDetailList"][0]["exceptionCode"]
    return code


class Api:
    def __init__(self, sim: Sim, client: httpx.AsyncClient, mint: Callable[..., str]) -> None:
        self.sim, self.client, self.mint = sim, client, mint

    async def create(self, body: dict[str, Any], nip: str = SELLER, expect: int = 201) -> Any:
        response = await self.client.post("/invoices/exports", json=body, headers=bearer(self.mint(nip)))
        assert response.status_code == expect, response.text
        return response.json()

    async def status(self, reference: str, nip: str = SELLER, expect: int = 200) -> Any:
        response = await self.client.get(f"/invoices/exports/{reference}", headers=bearer(self.mint(nip)))
        assert response.status_code == expect, response.text
        return response.json()

    async def finish(self, body: dict[str, Any]) -> Any:
        """Create, let the processing delay pass, return the final status."""
        reference = (await self.create(body))["referenceNumber"]
        self.sim.clock.advance(DELAY_S)
        return await self.status(reference)

    async def download(self, package: dict[str, Any], key: ClientKey) -> bytes:
        """What a client does: GET each part without a token, check hashes, decrypt each, concatenate."""
        joined = b""
        for part in sorted(package["parts"], key=lambda p: p["ordinalNumber"]):
            response = await self.client.get(part["url"])
            assert response.status_code == 200
            encrypted = response.content
            assert (len(encrypted), sha256_b64(encrypted)) == (part["encryptedPartSize"], part["encryptedPartHash"])
            plain = aes_cbc_decrypt(key.key, key.iv, encrypted)
            assert (len(plain), sha256_b64(plain)) == (part["partSize"], part["partHash"])
            joined += plain
        assert len(joined) == package["size"]
        return joined


@pytest.fixture
def api(sim: Sim, client: httpx.AsyncClient, mint_access: Callable[..., str]) -> Api:
    return Api(sim, client, mint_access)


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


# --- the happy path ------------------------------------------------------------------------------------------------


async def test_export_round_trip_decrypts_to_the_invoices_and_their_metadata(
    sim: Sim, api: Api, client: httpx.AsyncClient, mint_access: Callable[..., str]
) -> None:
    invoices = [add_invoice(sim, acquired=NOW - timedelta(hours=5 - i)) for i in range(3)]
    add_invoice(sim, seller_nip=OTHER)  # not ours as Subject1
    key = ClientKey(sim)
    created = await api.create(export_body(key))
    reference = created["referenceNumber"]
    assert REFERENCE_NUMBER_RE.match(reference) and "-EH-" in reference

    running = await api.status(reference)
    assert running == {"status": {"code": 100, "description": "Eksport faktur w toku"}}
    sim.clock.advance(DELAY_S)
    done = await api.status(reference)
    assert set(done) == STATUS_FIELDS
    assert done["status"]["code"] == 200
    assert datetime.fromisoformat(done["completedDate"]) == NOW + timedelta(seconds=DELAY_S)
    assert datetime.fromisoformat(done["packageExpirationDate"]) == NOW + timedelta(seconds=DELAY_S, days=7)
    package = done["package"]
    assert (package["invoiceCount"], package["isTruncated"]) == (3, False)
    assert "lastPermanentStorageDate" not in package
    assert datetime.fromisoformat(package["permanentStorageHwmDate"]) == NOW - timedelta(seconds=JITTER_S)
    (part,) = package["parts"]
    assert set(part) == PART_FIELDS
    assert (part["ordinalNumber"], part["partName"], part["method"]) == (1, f"{reference}-001.zip.aes", "GET")
    assert part["url"].startswith("https://ksef-sim.test/storage/")

    files = unzip(await api.download(package, key))
    assert set(files) == {"_metadata.json"} | {f"{i.ksef_number}.xml" for i in invoices}
    for invoice in invoices:
        assert files[f"{invoice.ksef_number}.xml"] == sim.store.get_blob(invoice.blob_name)
    metadata = json.loads(files["_metadata.json"])
    assert [m["ksefNumber"] for m in metadata["invoices"]] == [i.ksef_number for i in invoices]
    # _metadata.json holds the same InvoiceMetadata the query endpoint returns.
    queried = await client.post(
        "/invoices/query/metadata",
        json=export_body(key)["filters"],
        headers=bearer(mint_access(SELLER)),
    )
    assert metadata["invoices"] == queried.json()["invoices"]


async def test_package_is_split_into_independently_encrypted_parts(sim: Sim, api: Api) -> None:
    sim.settings.export_part_size = 300
    invoices = [add_invoice(sim, acquired=NOW - timedelta(hours=5 - i)) for i in range(6)]
    key = ClientKey(sim)
    package = (await api.finish(export_body(key)))["package"]
    parts = package["parts"]
    assert len(parts) > 2
    assert [p["ordinalNumber"] for p in parts] == list(range(1, len(parts) + 1))
    assert all(p["partSize"] <= 300 for p in parts)
    assert parts[1]["partName"].endswith("-002.zip.aes")
    files = unzip(await api.download(package, key))
    assert len(files) == len(invoices) + 1


async def test_only_metadata_and_tar_gz(sim: Sim, api: Api) -> None:
    invoice = add_invoice(sim)
    key = ClientKey(sim)
    package = (await api.finish(export_body(key, onlyMetadata=True)))["package"]
    files = unzip(await api.download(package, key))
    assert list(files) == ["_metadata.json"]
    assert json.loads(files["_metadata.json"])["invoices"][0]["ksefNumber"] == invoice.ksef_number

    package = (await api.finish(export_body(key, compressionType="TarGz")))["package"]
    assert package["parts"][0]["partName"].endswith("-001.tar.gz.aes")
    with tarfile.open(fileobj=io.BytesIO(await api.download(package, key)), mode="r:gz") as archive:
        assert sorted(archive.getnames()) == sorted(["_metadata.json", f"{invoice.ksef_number}.xml"])


async def test_package_is_a_snapshot_taken_at_creation(sim: Sim, api: Api) -> None:
    add_invoice(sim)
    key = ClientKey(sim)
    reference = (await api.create(export_body(key)))["referenceNumber"]
    add_invoice(sim, acquired=NOW - timedelta(minutes=30))  # lands while the export is processing
    sim.clock.advance(DELAY_S)
    assert (await api.status(reference))["package"]["invoiceCount"] == 1


async def test_hwm_restricted_export_leaves_late_indexed_invoices_for_the_next_window(sim: Sim, api: Api) -> None:
    early = add_invoice(sim, acquired=NOW - timedelta(minutes=10))
    late = add_invoice(sim, acquired=NOW - timedelta(seconds=30), indexed_at=NOW + timedelta(seconds=20))
    key = ClientKey(sim)
    restricted = {"restrictToPermanentStorageHwmDate": True}
    first = (await api.finish(export_body(key, dateRange=restricted)))["package"]
    files = unzip(await api.download(first, key))
    assert f"{early.ksef_number}.xml" in files and f"{late.ksef_number}.xml" not in files
    hwm = datetime.fromisoformat(first["permanentStorageHwmDate"])
    assert hwm == NOW - timedelta(seconds=JITTER_S) < late.permanent_storage_date
    sim.clock.advance(JITTER_S)  # the HWM passes the late invoice's storage date
    second = (await api.finish(export_body(key, dateRange={**restricted, "from": hwm.isoformat()})))["package"]
    names = json.loads(unzip(await api.download(second, key))["_metadata.json"])["invoices"]
    assert [m["ksefNumber"] for m in names] == [late.ksef_number]


async def test_ten_thousand_cap_truncates_and_the_next_export_continues_from_the_last_date(sim: Sim, api: Api) -> None:
    base = NOW - timedelta(days=10)
    stamps = [base + timedelta(minutes=i) for i in range(9_995)]
    stamps += [base + timedelta(minutes=9_995)] * 10  # ten share the instant where the package is cut
    stamps += [base + timedelta(minutes=9_996 + i) for i in range(45)]
    with sim.store.batch():
        created = [add_invoice(sim, acquired=stamp) for stamp in stamps]
    assert len(created) == 10_050
    key = ClientKey(sim)
    first = (await api.finish(export_body(key)))["package"]
    assert (first["invoiceCount"], first["isTruncated"]) == (10_000, True)
    last = datetime.fromisoformat(first["lastPermanentStorageDate"])
    assert last == base + timedelta(minutes=9_995)
    assert "lastIssueDate" not in first and "lastInvoicingDate" not in first
    first_numbers = [
        m["ksefNumber"] for m in json.loads(unzip(await api.download(first, key))["_metadata.json"])["invoices"]
    ]

    second = (await api.finish(export_body(key, dateRange={"from": last.isoformat()})))["package"]
    assert second["isTruncated"] is False
    second_numbers = [
        m["ksefNumber"] for m in json.loads(unzip(await api.download(second, key))["_metadata.json"])["invoices"]
    ]
    overlap = set(first_numbers) & set(second_numbers)
    assert len(overlap) == 5  # the five at the cut instant that made it into the first package
    assert set(first_numbers) | set(second_numbers) == {c.ksef_number for c in created}


async def test_truncated_issue_date_export_reports_last_issue_date(
    sim: Sim, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ksef_sim.domain import exports as ex

    original = ex.build_archive
    monkeypatch.setattr(ex, "build_archive", lambda *a, **kw: original(*a, **{**kw, "max_invoices": 2}))
    invoices = [add_invoice(sim, acquired=NOW - timedelta(days=3 - i)) for i in range(3)]
    package = (await api.finish(export_body(ClientKey(sim), date_type="Issue")))["package"]
    assert (package["invoiceCount"], package["isTruncated"]) == (2, True)
    assert package["lastIssueDate"] == invoices[1].issue_date.isoformat()
    assert "permanentStorageHwmDate" not in package


# --- errors and statuses -------------------------------------------------------------------------------------------


async def test_unknown_public_key_id_is_21470(sim: Sim, api: Api) -> None:
    key = ClientKey(sim)
    body = export_body(key)
    body["encryption"]["publicKeyId"] = sim.keys.for_usage(KSEF_TOKEN_ENCRYPTION).public_key_id  # wrong usage
    assert error_code(await api.create(body, expect=400)) == 21470
    body["encryption"]["publicKeyId"] = sim.keys.for_usage(SYMMETRIC_KEY_ENCRYPTION).public_key_id
    await api.create(body)


async def test_key_that_cannot_be_unwrapped_ends_with_415(sim: Sim, api: Api) -> None:
    key = ClientKey(sim, usage=KSEF_TOKEN_ENCRYPTION)  # wrapped for the wrong Ministry key
    reference = (await api.create(export_body(key)))["referenceNumber"]
    status = await api.status(reference)
    assert status == {"status": {"code": 415, "description": "Błąd odszyfrowania dostarczonego klucza"}}


async def test_from_beyond_the_hwm_is_accepted_and_ends_with_420(api: Api, sim: Sim) -> None:
    window = {"from": (NOW - timedelta(seconds=10)).isoformat(), "restrictToPermanentStorageHwmDate": True}
    reference = (await api.create(export_body(ClientKey(sim), dateRange=window)))["referenceNumber"]
    status = (await api.status(reference))["status"]
    assert status["code"] == 420
    assert "restrictToPermanentStorageHwmDate" in status["details"][0]


async def test_range_longer_than_three_months_is_21405(api: Api, sim: Sim) -> None:
    body = export_body(ClientKey(sim), dateRange={"from": (NOW - timedelta(days=100)).isoformat()})
    assert error_code(await api.create(body, expect=400)) == 21405


async def test_subject_not_available_to_the_context_type_is_21181(sim: Sim, client: httpx.AsyncClient) -> None:
    token, _ = sim.tokens.issue_access(
        now=sim.clock.now(),
        ttl=timedelta(minutes=15),
        auth_reference_number="20260310-AU-0000000000-0000000000-00",
        context=Identifier("InternalId", "5265877635-00013"),
        subject=Identifier("Nip", SELLER),
        auth_method="Token",
        permissions={"InvoiceRead"},
    )
    key = ClientKey(sim)
    refused = await client.post("/invoices/exports", json=export_body(key, "Subject1"), headers=bearer(token))
    assert (refused.status_code, error_code(refused.json())) == (400, 21181)
    accepted = await client.post("/invoices/exports", json=export_body(key, "Subject3"), headers=bearer(token))
    assert accepted.status_code == 201


async def test_eleventh_running_export_is_21182_until_one_finishes(sim: Sim, api: Api) -> None:
    key = ClientKey(sim)
    for _ in range(10):
        await api.create(export_body(key))
    assert error_code(await api.create(export_body(key), expect=400)) == 21182
    await api.create(export_body(key), nip=BUYER)  # the limit is per context
    sim.clock.advance(DELAY_S)
    await api.create(export_body(key))


async def test_stuck_export_stays_at_100_until_the_fault_is_cleared(sim: Sim, api: Api) -> None:
    add_invoice(sim)
    key = ClientKey(sim)
    sim.faults.stuck_exports = True
    reference = (await api.create(export_body(key)))["referenceNumber"]
    sim.clock.advance(DELAY_S * 10)
    assert (await api.status(reference))["status"]["code"] == 100
    sim.faults.stuck_exports = False
    released_at = sim.clock.now()
    done = await api.status(reference)
    assert done["status"]["code"] == 200
    assert datetime.fromisoformat(done["completedDate"]) == released_at
    assert unzip(await api.download(done["package"], key))


async def test_package_expires_with_210_and_the_status_goes_410_after_retention(
    sim: Sim, api: Api, client: httpx.AsyncClient
) -> None:
    add_invoice(sim)
    key = ClientKey(sim)
    reference = (await api.create(export_body(key)))["referenceNumber"]
    sim.clock.advance(DELAY_S)
    done = await api.status(reference)
    url = done["package"]["parts"][0]["url"]
    # Part links are valid for the pre-signed TTL only.
    expires = datetime.fromisoformat(done["package"]["parts"][0]["expirationDate"])
    assert expires == sim.clock.now() + timedelta(seconds=sim.settings.presigned_url_ttl_s)
    sim.clock.advance(sim.settings.presigned_url_ttl_s)
    assert (await client.get(url)).status_code == 403

    sim.clock.advance(timedelta(days=7).total_seconds() - sim.settings.presigned_url_ttl_s)  # expiry instant
    expired = await api.status(reference)
    assert expired["status"]["code"] == 210
    assert "package" not in expired
    assert sim.store.get_blob(f"export/{reference}/{reference}-001.zip.aes") is None
    sim.clock.advance(RETENTION_S)
    gone = await api.status(reference, expect=410)
    assert gone["status"] == 410


async def test_failed_export_status_goes_410_after_retention(sim: Sim, api: Api) -> None:
    reference = (await api.create(export_body(ClientKey(sim, usage=KSEF_TOKEN_ENCRYPTION))))["referenceNumber"]
    sim.clock.advance(RETENTION_S - 1)
    assert (await api.status(reference))["status"]["code"] == 415
    sim.clock.advance(1)
    await api.status(reference, expect=410)


async def test_unknown_or_foreign_reference_is_21175(sim: Sim, api: Api) -> None:
    reference = (await api.create(export_body(ClientKey(sim))))["referenceNumber"]
    assert error_code(await api.status(reference, nip=BUYER, expect=400)) == 21175
    assert error_code(await api.status("20260310-EH-0000000000-0000000000-00", expect=400)) == 21175
    assert error_code(await api.status("short", expect=400)) == 21405


async def test_exports_need_invoice_read(sim: Sim, client: httpx.AsyncClient, mint_access: Callable[..., str]) -> None:
    token = mint_access(SELLER, permissions={"InvoiceWrite"})
    response = await client.post("/invoices/exports", json=export_body(ClientKey(sim)), headers=bearer(token))
    assert (response.status_code, response.json()["reasonCode"]) == (403, "missing-permissions")
    status = await client.get("/invoices/exports/20260310-EH-0000000000-0000000000-00", headers=bearer(token))
    assert status.status_code == 403


async def test_invalid_base64_key_is_21405(sim: Sim, api: Api) -> None:
    body = export_body(ClientKey(sim))
    body["encryption"]["initializationVector"] = "not base64!"
    assert error_code(await api.create(body, expect=400)) == 21405
