"""Batch sessions end to end: package, split, encrypt, upload to pre-signed URLs, close (REFERENCE.md §5)."""

from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from ksef_sim.crypto import aes_cbc_encrypt, b64, rsa_oaep_encrypt, sha256_b64
from ksef_sim.domain import upo
from ksef_sim.records import StoredInvoice
from ksef_sim.settings import SimSettings
from ksef_sim.state import Sim
from platform_common.testing import wait_until

SAMPLES = Path("/work/shared/ksef/samples/invoices")
WARSAW = ZoneInfo("Europe/Warsaw")
NIP = "5265877635"
FA3 = {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"}
MintAccess = Callable[..., str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def frozen_clock(sim: Sim) -> datetime:
    morning = datetime.now(WARSAW).replace(hour=10, minute=0, second=0, microsecond=0)
    return sim.clock.set(morning, frozen=True)


def invoice_xml(number: str, issue_date: str) -> bytes:
    text = (SAMPLES / "fa3" / "csharp-invoice-template-fa-3.xml").read_text(encoding="utf-8")
    text = text.replace("#nip#", NIP).replace("FA/GRQMB-#invoice_number#/05/2025", number)
    return re.sub(r"<P_1>[^<]*</P_1>", f"<P_1>{issue_date}</P_1>", text).encode("utf-8")


def zip_package(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name, content in files.items():
            package.writestr(name, content)
    return buffer.getvalue()


def tar_package(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as package:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            package.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class Batch:
    def __init__(self, http: httpx.AsyncClient, token: str, archive: bytes, parts: int) -> None:
        self.http = http
        self.token = token
        self.key = os.urandom(32)
        self.iv = os.urandom(16)
        self.archive = archive
        size = -(-len(archive) // parts)
        self.parts = [aes_cbc_encrypt(self.key, self.iv, archive[i : i + size]) for i in range(0, len(archive), size)]
        assert len(self.parts) == parts

    async def open(self, *, compression: str | None = None, wrapped_key: bytes | None = None, **file: Any) -> Any:
        certificates = (await self.http.get("/security/public-key-certificates")).json()
        cert = next(c for c in certificates if "SymmetricKeyEncryption" in c["usage"])["certificate"]
        batch_file: dict[str, Any] = {
            "fileSize": len(self.archive),
            "fileHash": sha256_b64(self.archive),
            "fileParts": [
                {"ordinalNumber": n, "fileSize": len(p), "fileHash": sha256_b64(p)}
                for n, p in enumerate(self.parts, start=1)
            ],
            **file,
        }
        if compression:
            batch_file["compressionType"] = compression
        return await self.http.post(
            "/sessions/batch",
            json={
                "formCode": FA3,
                "batchFile": batch_file,
                "encryption": {
                    "encryptedSymmetricKey": b64(wrapped_key or rsa_oaep_encrypt(cert, self.key)),
                    "initializationVector": b64(self.iv),
                },
            },
            headers=bearer(self.token),
        )

    async def upload(self, requests: list[dict[str, Any]], skip: frozenset[int] = frozenset()) -> None:
        for request in requests:
            if request["ordinalNumber"] in skip:
                continue
            assert request["method"] == "PUT" and request["headers"] == {"x-ms-blob-type": "BlockBlob"}
            # No Authorization header: the URL is pre-signed (§5).
            response = await self.http.put(
                request["url"], content=self.parts[request["ordinalNumber"] - 1], headers=request["headers"]
            )
            assert response.status_code == 201, response.text

    async def close(self, ref: str) -> httpx.Response:
        return await self.http.post(f"/sessions/batch/{ref}/close", headers=bearer(self.token))

    async def status(self, ref: str) -> dict[str, Any]:
        response = await self.http.get(f"/sessions/{ref}", headers=bearer(self.token))
        assert response.status_code == 200, response.text
        return dict(response.json())


def error_codes(response: httpx.Response) -> list[int]:
    assert response.status_code == 400, response.text
    return [e["exceptionCode"] for e in response.json()["exception"]["exceptionDetailList"]]


def today(sim: Sim) -> str:
    return sim.clock.now().astimezone(WARSAW).date().isoformat()


async def test_three_invoices_in_two_parts(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    token = mint_access(NIP)
    files = {f"faktura-{n}.xml": invoice_xml(f"B/{n}", today(sim)) for n in (1, 2, 3)}
    batch = Batch(client, token, zip_package(files), parts=2)
    opened = await batch.open()
    assert opened.status_code == 201, opened.text
    ref = opened.json()["referenceNumber"]
    assert "-SB-" in ref
    requests = opened.json()["partUploadRequests"]
    assert [r["ordinalNumber"] for r in requests] == [1, 2]
    assert all(r["url"].startswith("https://ksef-sim.test/storage/batch/") for r in requests)
    assert (await batch.status(ref))["status"] == {"code": 100, "description": "Sesja wsadowa rozpoczęta"}

    await batch.upload(requests)
    assert (await batch.close(ref)).status_code == 204

    status = await batch.status(ref)
    assert status["status"] == {"code": 200, "description": "Sesja wsadowa przetworzona pomyślnie"}
    assert (status["invoiceCount"], status["successfulInvoiceCount"], status["failedInvoiceCount"]) == (3, 3, 0)
    [page] = status["upo"]["pages"]
    session_upo = await client.get(page["downloadUrl"])
    assert session_upo.status_code == 200 and upo.validate_upo(session_upo.content) == []
    assert session_upo.content.count(b"<Dokument>") == 3

    listed = (await client.get(f"/sessions/{ref}/invoices", headers=bearer(token))).json()["invoices"]
    assert [i["invoiceFileName"] for i in listed] == list(files)
    assert {i["invoicingDate"] for i in listed} == {status["dateCreated"]}  # §5: session open time
    assert all(i["status"]["code"] == 200 and i["invoicingMode"] == "Online" for i in listed)
    for item in listed:
        stored = sim.store.get(StoredInvoice, item["ksefNumber"])
        assert stored is not None and stored.invoice_hash == sha256_b64(files[item["invoiceFileName"]])

    # Closed: a second close is refused and the parts cannot be re-closed.
    assert error_codes(await batch.close(ref)) == [21180]
    listing = await client.get("/sessions", params={"sessionType": "Batch"}, headers=bearer(token))
    assert [s["referenceNumber"] for s in listing.json()["sessions"]] == [ref]


async def test_missing_part_is_21205(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    token = mint_access(NIP)
    batch = Batch(client, token, zip_package({"a.xml": invoice_xml("M/1", today(sim))}), parts=2)
    opened = await batch.open()
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"], skip=frozenset({2}))
    assert error_codes(await batch.close(ref)) == [21205]
    assert (await batch.status(ref))["status"]["code"] == 100  # still open; the client may upload and retry
    await batch.upload(opened.json()["partUploadRequests"], skip=frozenset({1}))
    assert (await batch.close(ref)).status_code == 204
    assert (await batch.status(ref))["status"]["code"] == 200


async def test_targz_with_one_invalid_invoice(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    token = mint_access(NIP)
    files = {"ok.xml": invoice_xml("T/1", today(sim)), "bad.xml": b"\xef\xbb\xbf" + invoice_xml("T/2", today(sim))}
    batch = Batch(client, token, tar_package(files), parts=1)
    opened = await batch.open(compression="TarGz")
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"])
    assert (await batch.close(ref)).status_code == 204
    status = await batch.status(ref)
    assert (status["status"]["code"], status["successfulInvoiceCount"], status["failedInvoiceCount"]) == (200, 1, 1)
    failed = (await client.get(f"/sessions/{ref}/invoices/failed", headers=bearer(token))).json()["invoices"]
    assert [(i["invoiceFileName"], i["status"]["code"]) for i in failed] == [("bad.xml", 430)]


async def test_wrong_archive_hash_is_405(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    batch = Batch(client, mint_access(NIP), zip_package({"a.xml": invoice_xml("H/1", today(sim))}), parts=1)
    opened = await batch.open(fileHash=sha256_b64(b"something else"))
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"])
    assert (await batch.close(ref)).status_code == 204
    assert (await batch.status(ref))["status"]["code"] == 405


async def test_not_an_archive_is_430(client: httpx.AsyncClient, mint_access: MintAccess) -> None:
    batch = Batch(client, mint_access(NIP), b"this is not a zip file at all", parts=1)
    opened = await batch.open()
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"])
    assert (await batch.close(ref)).status_code == 204
    assert (await batch.status(ref))["status"]["code"] == 430


async def test_undecryptable_key_is_415(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    batch = Batch(client, mint_access(NIP), zip_package({"a.xml": invoice_xml("K/1", today(sim))}), parts=1)
    opened = await batch.open(wrapped_key=os.urandom(256))
    assert opened.status_code == 201
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"])
    assert (await batch.close(ref)).status_code == 204
    assert (await batch.status(ref))["status"]["code"] == 415


async def test_open_limits(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    batch = Batch(client, mint_access(NIP), zip_package({"a.xml": invoice_xml("L/1", today(sim))}), parts=1)
    part = {"ordinalNumber": 1, "fileSize": 100 * 1024 * 1024 + 32, "fileHash": sha256_b64(b"p")}
    assert error_codes(await batch.open(fileParts=[part])) == [21157]
    many = [{"ordinalNumber": n, "fileSize": 16, "fileHash": sha256_b64(b"p")} for n in range(1, 52)]
    assert error_codes(await batch.open(fileParts=many)) == [21161]


async def test_never_closed_is_cancelled(client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim) -> None:
    batch = Batch(client, mint_access(NIP), zip_package({"a.xml": invoice_xml("C/1", today(sim))}), parts=1)
    ref = (await batch.open()).json()["referenceNumber"]
    sim.clock.advance(12 * 3600 + 1)
    batch.token = mint_access(NIP)
    status = await batch.status(ref)
    assert status["status"] == {"code": 440, "description": "Sesja anulowana", "details": ["Przekroczono czas wysyłki"]}
    assert error_codes(await batch.close(ref)) == [21180]


async def test_processing_takes_the_configured_delay(
    client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim
) -> None:
    sim.settings.batch_processing_delay_s = 20
    token = mint_access(NIP)
    batch = Batch(client, token, zip_package({"a.xml": invoice_xml("D/1", today(sim))}), parts=1)
    opened = await batch.open()
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"])
    assert (await batch.close(ref)).status_code == 204
    processing = await batch.status(ref)
    assert processing["status"] == {"code": 150, "description": "Trwa przetwarzanie"}
    assert "upo" not in processing and processing["successfulInvoiceCount"] == 0
    [pending] = (await client.get(f"/sessions/{ref}/invoices", headers=bearer(token))).json()["invoices"]
    assert pending["status"]["code"] in (100, 150) and "ksefNumber" not in pending
    sim.clock.advance(19)
    assert (await batch.status(ref))["status"]["code"] == 150
    sim.clock.advance(1)
    done = await batch.status(ref)
    assert (done["status"]["code"], done["successfulInvoiceCount"]) == (200, 1) and done["upo"]["pages"]


async def test_default_delay_shows_processing_before_success(
    client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim
) -> None:
    # The default (TEST-like) delay, then the clock let run: what a client polling the real service sees.
    sim.settings.batch_processing_delay_s = SimSettings.model_fields["batch_processing_delay_s"].default
    assert sim.settings.batch_processing_delay_s > 0
    token = mint_access(NIP)
    batch = Batch(client, token, zip_package({"a.xml": invoice_xml("P/1", today(sim))}), parts=1)
    opened = await batch.open()
    ref = opened.json()["referenceNumber"]
    await batch.upload(opened.json()["partUploadRequests"])
    assert (await batch.close(ref)).status_code == 204
    seen: list[int] = [(await batch.status(ref))["status"]["code"]]  # at the close: the clock is frozen
    sim.clock.set(sim.clock.now())

    async def processed() -> bool:
        seen.append((await batch.status(ref))["status"]["code"])
        return seen[-1] != 150

    await wait_until(processed, timeout=30, what="the batch session to be processed")
    assert seen[0] == 150 and seen[-1] == 200 and set(seen) == {150, 200}
