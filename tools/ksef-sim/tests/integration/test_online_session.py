"""Online sessions end to end with real client-side crypto (REFERENCE.md §4, §6, §7, §8)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography import x509
from lxml import etree
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier

from ksef_sim.crypto import aes_cbc_encrypt, b64, rsa_oaep_encrypt, sha256_b64
from ksef_sim.domain import upo
from ksef_sim.domain.limits import set_context_limits
from ksef_sim.domain.sessions import Session, SessionInvoice
from ksef_sim.records import StoredInvoice
from ksef_sim.refs import KSEF_NUMBER_RE, REFERENCE_NUMBER_RE
from ksef_sim.security import Identifier
from ksef_sim.state import Sim

SAMPLES = Path("/work/shared/ksef/samples/invoices")
WARSAW = ZoneInfo("Europe/Warsaw")
NIP = "5265877635"
FA3 = {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"}
MintAccess = Callable[..., str]
DS = "{http://www.w3.org/2000/09/xmldsig#}"
TRUST_URL = "https://ksef-sim.test/_sim/trust/upo-ca.pem"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def frozen_clock(sim: Sim) -> datetime:
    # Mid-morning in Warsaw so "today"/"yesterday" never straddle midnight during a run.
    morning = datetime.now(WARSAW).replace(hour=10, minute=0, second=0, microsecond=0)
    return sim.clock.set(morning, frozen=True)


def today(sim: Sim) -> str:
    return sim.clock.now().astimezone(WARSAW).date().isoformat()


def invoice_xml(number: str = "FV/1", issue_date: str | None = None, seller: str = NIP, *, p1: str = "") -> bytes:
    text = (SAMPLES / "fa3" / "csharp-invoice-template-fa-3.xml").read_text(encoding="utf-8")
    text = text.replace("#nip#", seller).replace("FA/GRQMB-#invoice_number#/05/2025", number)
    return re.sub(r"<P_1>[^<]*</P_1>", f"<P_1>{issue_date or p1}</P_1>", text).encode("utf-8")


class Client:
    """The client side of a session: AES key, IV, and the calls."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token
        self.key = os.urandom(32)
        self.iv = os.urandom(16)

    async def certificate(self) -> str:
        response = await self.http.get("/security/public-key-certificates")
        assert response.status_code == 200
        return str(next(c for c in response.json() if "SymmetricKeyEncryption" in c["usage"])["certificate"])

    async def open(self, *, wrapped_key: bytes | None = None, form: dict[str, str] = FA3) -> str:
        wrapped = wrapped_key if wrapped_key is not None else rsa_oaep_encrypt(await self.certificate(), self.key)
        response = await self.http.post(
            "/sessions/online",
            json={
                "formCode": form,
                "encryption": {"encryptedSymmetricKey": b64(wrapped), "initializationVector": b64(self.iv)},
            },
            headers=bearer(self.token),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert REFERENCE_NUMBER_RE.match(body["referenceNumber"]) and "-SO-" in body["referenceNumber"]
        return str(body["referenceNumber"])

    def body(self, xml: bytes, **overrides: Any) -> dict[str, Any]:
        encrypted = aes_cbc_encrypt(self.key, self.iv, xml)
        return {
            "invoiceHash": sha256_b64(xml),
            "invoiceSize": len(xml),
            "encryptedInvoiceHash": sha256_b64(encrypted),
            "encryptedInvoiceSize": len(encrypted),
            "encryptedInvoiceContent": b64(encrypted),
            "offlineMode": False,
            **overrides,
        }

    async def send_raw(self, ref: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(f"/sessions/online/{ref}/invoices", json=body, headers=bearer(self.token))

    async def send(self, ref: str, xml: bytes, **overrides: Any) -> str:
        response = await self.send_raw(ref, self.body(xml, **overrides))
        assert response.status_code == 202, response.text
        return str(response.json()["referenceNumber"])

    async def invoice(self, ref: str, invoice_ref: str) -> dict[str, Any]:
        response = await self.http.get(f"/sessions/{ref}/invoices/{invoice_ref}", headers=bearer(self.token))
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def session(self, ref: str) -> dict[str, Any]:
        response = await self.http.get(f"/sessions/{ref}", headers=bearer(self.token))
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def close(self, ref: str) -> httpx.Response:
        return await self.http.post(f"/sessions/online/{ref}/close", headers=bearer(self.token))


def error_codes(response: httpx.Response) -> list[int]:
    assert response.status_code == 400, response.text
    return [e["exceptionCode"] for e in response.json()["exception"]["exceptionDetailList"]]


@pytest.fixture
def ksef(client: httpx.AsyncClient, mint_access: MintAccess) -> Client:
    return Client(client, mint_access(NIP))


def assert_signed_by(xml: bytes, ca: x509.Certificate, at: datetime) -> None:
    """An enveloped XAdES signature over the whole UPO, by a certificate ``ca`` issued, valid at ``at``."""
    root = etree.fromstring(xml)
    assert root[-1].tag == upo.DS_SIGNATURE
    der = base64.b64decode(root.findtext(f"{DS}Signature/{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate") or "")
    certificate = x509.load_der_x509_certificate(der)
    certificate.verify_directly_issued_by(ca)
    config = XAdESSignatureConfiguration(location="./", verification_time=at)
    [whole, *_] = XAdESVerifier().verify(xml, x509_cert=certificate, expect_config=config)
    assert etree.QName(whole.signed_xml).localname == "Potwierdzenie"


async def test_happy_path_ksef_number_metadata_and_upo(ksef: Client, sim: Sim, client: httpx.AsyncClient) -> None:
    ref = await ksef.open()
    xml = invoice_xml(issue_date=today(sim))
    invoice_ref = await ksef.send(ref, xml)

    status = await ksef.invoice(ref, invoice_ref)
    assert status["status"] == {"code": 200, "description": "Sukces"}
    assert status["ordinalNumber"] == 1 and status["referenceNumber"] == invoice_ref
    assert status["invoiceNumber"] == "FV/1" and status["invoiceHash"] == sha256_b64(xml)
    assert status["invoicingMode"] == "Online"
    ksef_number = status["ksefNumber"]
    assert KSEF_NUMBER_RE.match(ksef_number) and ksef_number.startswith(NIP + "-")
    assert "acquisitionDate" in status and "permanentStorageDate" in status

    stored = sim.store.get(StoredInvoice, ksef_number)
    assert stored is not None
    assert (stored.buyer_identifier.value, str(stored.gross_amount), stored.seller_name) == (
        "1111111111",
        "53.63",
        "Elektrownia S.A.",
    )
    assert stored.session_reference_number == ref and stored.invoice_reference_number == invoice_ref

    # Invoice UPO: through the API and through the pre-signed link, without a token.
    by_ref = await client.get(f"/sessions/{ref}/invoices/{invoice_ref}/upo", headers=bearer(ksef.token))
    assert by_ref.status_code == 200 and by_ref.headers["content-type"].startswith("application/xml")
    assert by_ref.headers["x-ms-meta-hash"] == sha256_b64(by_ref.content)
    assert upo.validate_upo(by_ref.content) == []
    assert etree.fromstring(by_ref.content).findtext("{*}Dokument/{*}NumerKSeFDokumentu") == ksef_number
    by_number = await client.get(f"/sessions/{ref}/invoices/ksef/{ksef_number}/upo", headers=bearer(ksef.token))
    assert by_number.content == by_ref.content
    linked = await client.get(status["upoDownloadUrl"])
    assert linked.status_code == 200 and linked.content == by_ref.content
    assert linked.headers["x-ms-meta-hash"] == sha256_b64(linked.content)
    [ca] = x509.load_pem_x509_certificates((await client.get(TRUST_URL)).content)
    assert_signed_by(by_ref.content, ca, sim.clock.now())

    # Open session: no UPO yet; close → 200 with a session UPO valid against the XSD.
    assert (await ksef.session(ref))["status"]["code"] == 100
    assert (await ksef.close(ref)).status_code == 204
    session = await ksef.session(ref)
    assert session["status"] == {"code": 200, "description": "Sesja interaktywna przetworzona pomyślnie"}
    assert (session["invoiceCount"], session["successfulInvoiceCount"], session["failedInvoiceCount"]) == (1, 1, 0)
    [page] = session["upo"]["pages"]
    assert "-EU-" in page["referenceNumber"]
    api_upo = await client.get(f"/sessions/{ref}/upo/{page['referenceNumber']}", headers=bearer(ksef.token))
    assert api_upo.status_code == 200 and upo.validate_upo(api_upo.content) == []
    assert api_upo.headers["x-ms-meta-hash"] == sha256_b64(api_upo.content)
    linked_page = await client.get(page["downloadUrl"])
    assert linked_page.content == api_upo.content and linked_page.headers["x-ms-meta-hash"] == sha256_b64(
        api_upo.content
    )
    assert_signed_by(api_upo.content, ca, sim.clock.now())
    # Stored once, signed once: a second download is the same document, signature included.
    again = await client.get(f"/sessions/{ref}/upo/{page['referenceNumber']}", headers=bearer(ksef.token))
    assert again.content == api_upo.content
    root = etree.fromstring(api_upo.content)
    assert root.findtext("{*}OpisPotwierdzenia/{*}CalkowitaLiczbaDokumentow") == "1"

    # Closed: no more sends, no second close.
    assert error_codes(await ksef.send_raw(ref, ksef.body(invoice_xml("FV/2", today(sim))))) == [21180]
    assert error_codes(await ksef.close(ref)) == [21180]


async def test_size_and_hash_mismatch_are_400(ksef: Client, sim: Sim) -> None:
    ref = await ksef.open()
    xml = invoice_xml(issue_date=today(sim))
    assert error_codes(await ksef.send_raw(ref, ksef.body(xml, invoiceSize=len(xml) + 1))) == [21402]
    assert error_codes(await ksef.send_raw(ref, ksef.body(xml, invoiceHash=sha256_b64(b"other")))) == [21403]
    assert error_codes(await ksef.send_raw(ref, ksef.body(xml, encryptedInvoiceSize=17))) == [21402]
    assert error_codes(await ksef.send_raw(ref, ksef.body(xml, encryptedInvoiceHash=sha256_b64(b"x")))) == [21403]
    # Nothing was registered by the rejected sends.
    assert (await ksef.session(ref))["invoiceCount"] == 0


async def test_bom_is_430(ksef: Client, sim: Sim) -> None:
    ref = await ksef.open()
    invoice_ref = await ksef.send(ref, b"\xef\xbb\xbf" + invoice_xml(issue_date=today(sim)))
    status = await ksef.invoice(ref, invoice_ref)
    assert status["status"]["code"] == 430
    assert "ksefNumber" not in status


async def test_xsd_error_is_450_and_listed_as_failed(ksef: Client, sim: Sim, client: httpx.AsyncClient) -> None:
    ref = await ksef.open()
    good = await ksef.send(ref, invoice_xml("FV/ok", today(sim)))
    broken = invoice_xml("FV/bad", today(sim)).replace(b"<P_16>2</P_16>", b"")
    bad = await ksef.send(ref, broken)
    status = await ksef.invoice(ref, bad)
    assert status["status"]["code"] == 450
    assert status["status"]["description"] == "Błąd weryfikacji semantyki dokumentu faktury"
    assert any("'Adnotacje'" in detail and "'P_16'" in detail for detail in status["status"]["details"])

    failed = await client.get(f"/sessions/{ref}/invoices/failed", headers=bearer(ksef.token))
    assert [i["referenceNumber"] for i in failed.json()["invoices"]] == [bad]
    listed = await client.get(f"/sessions/{ref}/invoices", headers=bearer(ksef.token))
    assert [i["referenceNumber"] for i in listed.json()["invoices"]] == [good, bad]
    assert (await ksef.close(ref)).status_code == 204
    session = await ksef.session(ref)
    assert (session["status"]["code"], session["successfulInvoiceCount"], session["failedInvoiceCount"]) == (200, 1, 1)


async def test_duplicate_is_440_with_original(ksef: Client, sim: Sim) -> None:
    first_session = await ksef.open()
    first = await ksef.invoice(first_session, await ksef.send(first_session, invoice_xml("FV/dup", today(sim))))
    second_session = await ksef.open()
    duplicate = await ksef.invoice(second_session, await ksef.send(second_session, invoice_xml("FV/dup", today(sim))))
    assert duplicate["status"]["code"] == 440
    assert duplicate["status"]["extensions"] == {
        "originalSessionReferenceNumber": first_session,
        "originalKsefNumber": first["ksefNumber"],
    }
    assert "ksefNumber" not in duplicate


async def test_bad_session_key_gives_415(ksef: Client, client: httpx.AsyncClient) -> None:
    # A key wrapped under a foreign RSA key: not rejected at open (§4), the session shows 415 afterwards.
    from cryptography.hazmat.primitives.asymmetric import rsa

    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    from ksef_sim.crypto import OAEP

    ref = await ksef.open(wrapped_key=foreign.encrypt(ksef.key, OAEP))
    session = await ksef.session(ref)
    assert session["status"] == {"code": 415, "description": "Błąd odszyfrowania dostarczonego klucza"}
    assert error_codes(await ksef.send_raw(ref, ksef.body(invoice_xml(p1="2026-01-01")))) == [21180]
    assert error_codes(await ksef.close(ref)) == [21180]
    assert (await ksef.session(ref))["status"]["code"] == 415


async def test_wrong_content_key_is_435(ksef: Client, sim: Sim) -> None:
    ref = await ksef.open()
    other = Client(ksef.http, ksef.token)  # encrypts with a different AES key than the session's
    invoice_ref = await ksef.send(ref, invoice_xml(issue_date=today(sim)), **_encrypted_with(other, today(sim)))
    assert (await ksef.invoice(ref, invoice_ref))["status"]["code"] == 435


def _encrypted_with(other: Client, issue_date: str) -> dict[str, Any]:
    body = other.body(invoice_xml(issue_date=issue_date))
    return {k: body[k] for k in ("encryptedInvoiceHash", "encryptedInvoiceSize", "encryptedInvoiceContent")}


async def test_issue_date_yesterday_becomes_offline(ksef: Client, sim: Sim) -> None:
    ref = await ksef.open()
    yesterday = (sim.clock.now().astimezone(WARSAW).date() - timedelta(days=1)).isoformat()
    status = await ksef.invoice(ref, await ksef.send(ref, invoice_xml(issue_date=yesterday)))
    assert status["status"]["code"] == 200 and status["invoicingMode"] == "Offline"


async def test_close_without_invoices_is_440(ksef: Client) -> None:
    ref = await ksef.open()
    assert (await ksef.close(ref)).status_code == 204
    session = await ksef.session(ref)
    assert session["status"] == {"code": 440, "description": "Sesja anulowana", "details": ["Nie przesłano faktur"]}
    assert "upo" not in session


async def test_only_invalid_invoices_is_445(ksef: Client) -> None:
    ref = await ksef.open()
    await ksef.send(ref, b"<not-an-invoice/>")
    assert (await ksef.close(ref)).status_code == 204
    assert (await ksef.session(ref))["status"]["code"] == 445


async def test_processing_delay_and_auto_close(ksef: Client, sim: Sim, mint_access: MintAccess) -> None:
    sim.settings.invoice_processing_delay_s = 10
    ref = await ksef.open()
    invoice_ref = await ksef.send(ref, invoice_xml(issue_date=today(sim)))
    early = await ksef.invoice(ref, invoice_ref)
    assert early["status"]["code"] == 100 and "ksefNumber" not in early
    sim.clock.advance(6)
    assert (await ksef.invoice(ref, invoice_ref))["status"]["code"] == 150
    sim.clock.advance(4)
    done = await ksef.invoice(ref, invoice_ref)
    assert done["status"]["code"] == 200 and "ksefNumber" in done
    # 12 h later the session closed itself.
    sim.clock.advance(12 * 3600)
    ksef.token = mint_access(NIP)  # the first access token expired meanwhile
    assert (await ksef.session(ref))["status"]["code"] == 200
    assert error_codes(await ksef.send_raw(ref, ksef.body(invoice_xml("FV/late", today(sim))))) == [21180]


async def test_closed_session_is_170_while_invoices_process(ksef: Client, sim: Sim) -> None:
    sim.settings.invoice_processing_delay_s = 30
    ref = await ksef.open()
    await ksef.send(ref, invoice_xml(issue_date=today(sim)))
    assert (await ksef.close(ref)).status_code == 204
    assert (await ksef.session(ref))["status"]["code"] == 170
    sim.clock.advance(30)
    assert (await ksef.session(ref))["status"]["code"] == 200


async def test_open_validation(ksef: Client, client: httpx.AsyncClient) -> None:
    body = {
        "formCode": {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"},
        "encryption": {
            "encryptedSymmetricKey": b64(rsa_oaep_encrypt(await ksef.certificate(), ksef.key)),
            "initializationVector": b64(ksef.iv),
            "publicKeyId": b64(b"\x00" * 32),
        },
    }
    assert error_codes(await client.post("/sessions/online", json=body, headers=bearer(ksef.token))) == [21470]
    del body["encryption"]["publicKeyId"]
    body["formCode"] = {"systemCode": "PEF (3)", "schemaVersion": "2-1", "value": "PEF"}
    assert error_codes(await client.post("/sessions/online", json=body, headers=bearer(ksef.token))) == [21405]


async def test_other_context_and_visibility(
    ksef: Client, client: httpx.AsyncClient, mint_access: MintAccess, sim: Sim
) -> None:
    ref = await ksef.open()
    invoice_ref = await ksef.send(ref, invoice_xml(issue_date=today(sim)))
    stranger = mint_access("7352765225")
    response = await client.get(f"/sessions/{ref}", headers=bearer(stranger))
    assert error_codes(response) == [21173]
    assert error_codes(
        await client.post(f"/sessions/online/{ref}/invoices", json=ksef.body(b"<a/>"), headers=bearer(stranger))
    ) == [21173]

    # An employee with InvoiceWrite sees only own sessions; Introspection sees all of the context.
    employee = Identifier("Pesel", "90010112345")
    writer = mint_access(NIP, permissions={"InvoiceWrite"}, subject=employee)
    assert error_codes(await client.get(f"/sessions/{ref}", headers=bearer(writer))) == [21173]
    inspector = mint_access(NIP, permissions={"Introspection"}, subject=employee)
    seen = await client.get(f"/sessions/{ref}/invoices/{invoice_ref}", headers=bearer(inspector))
    assert seen.status_code == 200
    reader = mint_access(NIP, permissions={"InvoiceRead"})
    assert (await client.get(f"/sessions/{ref}", headers=bearer(reader))).status_code == 403


async def test_session_list_filters_and_continuation(ksef: Client, client: httpx.AsyncClient, sim: Sim) -> None:
    refs = []
    for _ in range(12):
        refs.append(await ksef.open())
        sim.clock.advance(1)
    assert (await ksef.close(refs[0])).status_code == 204
    first = await client.get("/sessions", params={"sessionType": "Online"}, headers=bearer(ksef.token))
    assert first.status_code == 200
    page = first.json()
    assert [s["referenceNumber"] for s in page["sessions"]] == refs[::-1][:10]  # dateCreated desc
    assert page["sessions"][0]["totalInvoiceCount"] == 0
    nxt = await client.get(
        "/sessions",
        params={"sessionType": "Online"},
        headers={**bearer(ksef.token), "x-continuation-token": page["continuationToken"]},
    )
    assert [s["referenceNumber"] for s in nxt.json()["sessions"]] == [refs[1], refs[0]]
    assert nxt.json().get("continuationToken") is None
    cancelled = await client.get(
        "/sessions", params={"sessionType": "Online", "statuses": ["Cancelled"]}, headers=bearer(ksef.token)
    )
    assert [s["referenceNumber"] for s in cancelled.json()["sessions"]] == [refs[0]]
    batch = await client.get("/sessions", params={"sessionType": "Batch"}, headers=bearer(ksef.token))
    assert batch.json()["sessions"] == []
    bad = await client.get(
        "/sessions", params={"sessionType": "Online"}, headers={**bearer(ksef.token), "x-continuation-token": "x"}
    )
    assert error_codes(bad) == [21418]


async def test_technical_correction(ksef: Client, sim: Sim) -> None:
    ref = await ksef.open()
    yesterday = (sim.clock.now().astimezone(WARSAW).date() - timedelta(days=1)).isoformat()
    rejected = invoice_xml("FV/off", yesterday).replace(b"<P_16>2</P_16>", b"")
    original = await ksef.send(ref, rejected, offlineMode=True)
    assert (await ksef.invoice(ref, original))["status"]["code"] == 450

    fixed = invoice_xml("FV/off", yesterday)
    no_offline = ksef.body(fixed, hashOfCorrectedInvoice=sha256_b64(rejected))
    assert error_codes(await ksef.send_raw(ref, no_offline)) == [21166]
    unknown = ksef.body(fixed, offlineMode=True, hashOfCorrectedInvoice=sha256_b64(b"nothing"))
    assert error_codes(await ksef.send_raw(ref, unknown)) == [21166]

    correction = await ksef.send(ref, fixed, offlineMode=True, hashOfCorrectedInvoice=sha256_b64(rejected))
    status = await ksef.invoice(ref, correction)
    assert status["status"]["code"] == 200 and status["invoicingMode"] == "Offline"
    stored = sim.store.get(StoredInvoice, status["ksefNumber"])
    assert stored is not None and stored.hash_of_corrected_invoice == sha256_b64(rejected)
    # §8: only one accepted correction.
    again = ksef.body(invoice_xml("FV/off2", yesterday), offlineMode=True, hashOfCorrectedInvoice=sha256_b64(rejected))
    assert error_codes(await ksef.send_raw(ref, again)) == [21167]


async def test_unknown_invoice_and_missing_upo(ksef: Client, client: httpx.AsyncClient, sim: Sim) -> None:
    ref = await ksef.open()
    bad = await ksef.send(ref, b"\xef\xbb\xbf<a/>")
    unknown = "20260101-EE-0000000000-0000000000-00"
    assert error_codes(await client.get(f"/sessions/{ref}/invoices/{unknown}", headers=bearer(ksef.token))) == [21164]
    upo_missing = await client.get(f"/sessions/{ref}/invoices/{bad}/upo", headers=bearer(ksef.token))
    assert error_codes(upo_missing) == [21178]
    by_number = await client.get(
        f"/sessions/{ref}/invoices/ksef/{NIP}-20260101-010000000001-00/upo", headers=bearer(ksef.token)
    )
    assert error_codes(by_number) == [21178]
    page = await client.get(f"/sessions/{ref}/upo/{unknown}", headers=bearer(ksef.token))
    assert error_codes(page) == [21178]
    assert sim.store.count(StoredInvoice) == 0


async def test_session_invoice_limit_is_21155(ksef: Client, sim: Sim) -> None:
    set_context_limits(sim.store, Identifier("Nip", NIP), {"onlineSession": {"maxInvoices": 1}})
    ref = await ksef.open()
    await ksef.send(ref, invoice_xml("FV/L1", today(sim)))
    assert error_codes(await ksef.send_raw(ref, ksef.body(invoice_xml("FV/L2", today(sim))))) == [21155]


async def test_upos_stored_unsigned_by_an_older_simulator_are_served_signed(
    ksef: Client, sim: Sim, client: httpx.AsyncClient
) -> None:
    ref = await ksef.open()
    invoice_ref = await ksef.send(ref, invoice_xml(issue_date=today(sim)))
    assert (await ksef.close(ref)).status_code == 204
    [page] = (await ksef.session(ref))["upo"]["pages"]
    invoice_upo_url = f"/sessions/{ref}/invoices/{invoice_ref}/upo"
    assert (await client.get(invoice_upo_url, headers=bearer(ksef.token))).status_code == 200
    # The state an older simulator left: the same documents, stored without a signature.
    session = sim.store.get(Session, ref)
    invoice = sim.store.get(SessionInvoice, invoice_ref)
    assert session is not None and invoice is not None
    for blob in (session.upo_pages[0].blob_name, invoice.upo_blob):
        stored = etree.fromstring(sim.store.get_blob(blob) or b"")
        stored.remove(stored[-1])
        sim.store.put_blob(blob, etree.tostring(stored, xml_declaration=True, encoding="utf-8"))
    session.upo_pages[0].signed = False
    invoice.upo_signed = False
    sim.store.put(session)
    sim.store.put(invoice)

    [again] = (await ksef.session(ref))["upo"]["pages"]
    assert again["referenceNumber"] == page["referenceNumber"]
    [ca] = x509.load_pem_x509_certificates((await client.get(TRUST_URL)).content)
    assert_signed_by((await client.get(again["downloadUrl"])).content, ca, sim.clock.now())
    assert_signed_by((await client.get(invoice_upo_url, headers=bearer(ksef.token))).content, ca, sim.clock.now())
