"""No usable invitation or password-reset link rests where a run leaves data (issue 11).

An office admin invites a user and a user asks for a password reset; the links' tokens are captured the only way
there is (notify-svc's key opens the sealed links; using each token then proves it was the real one). Then every
file of the data folder, -wal and -shm included, every log line, every Kafka record of the two topics and every
PostgreSQL row of auth-svc and notify-svc is searched for each token in the forms it could take.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select, text
from starlette.routing import Mount

import auth_svc.demo
import auth_svc.main
import notify_svc.main
from approval_svc.demo import DEMO_CLIENT_EMAIL, DEMO_RETURN_EMAIL
from auth_svc.demo import ACCOUNTANT, DEMO_PASSWORD, OFFICE_ADMIN
from auth_svc.settings import AuthSettings
from ksef_hub.embedded import NOTIFY_SEAL_KEY_FILE, create_embedded_app
from notify_svc.db import mail_message
from notify_svc.settings import NotifySettings
from platform_common.app import create_service_app
from platform_common.contracts import PasswordResetRequested, UserInvited
from platform_common.messaging.envelope import Envelope
from platform_common.runtime import ServiceRuntime
from platform_common.sealing import generate_keypair, read_private_key_file, unseal
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings
from platform_common.testing import wait_until
from platform_common.testing.auth import loopback_socket, serve_on_loopback

INVITEE = "nowa.ksiegowa@biuro.example.com"
NEW_PASSWORD = "a-new-password-for-2027"  # a test account's password
INFO = {"invitation": UserInvited.event_type.encode(), "password_reset": PasswordResetRequested.event_type.encode()}
TOPICS = (UserInvited.topic, PasswordResetRequested.topic)


def forms(secret: str) -> dict[str, bytes]:
    """The token as it could appear at rest: raw, percent-encoded, in base64 either alphabet."""
    raw = secret.encode()
    return {
        "raw": raw,
        "percent-encoded": quote(secret, safe="").encode(),
        "base64": base64.b64encode(raw).rstrip(b"="),
        "urlsafe base64": base64.urlsafe_b64encode(raw).rstrip(b"="),
    }


def leaks(haystack: bytes, secrets: Iterable[str]) -> list[str]:
    """Which secret (by position) is found in which form; never the secret itself, even in a failure."""
    return [
        f"secret #{n} ({name})"
        for n, secret in enumerate(secrets)
        for name, form in forms(secret).items()
        if form in haystack
    ]


def token_of(link: str) -> str:
    (token,) = parse_qs(urlsplit(link).query)["token"]
    return token


async def _login(client: httpx.AsyncClient, email: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
    response = await client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _invite_and_reset(auth: httpx.AsyncClient) -> None:
    admin = await _login(auth, OFFICE_ADMIN)
    office = (await auth.get("/me", headers=admin)).json()["context"]["org"]
    invited = await auth.post(
        f"/organisations/{office}/members", json={"email": INVITEE, "role": "office_accountant"}, headers=admin
    )
    assert invited.status_code == 201, invited.text
    assert (await auth.post("/password-reset", json={"email": ACCOUNTANT})).status_code == 202


async def _use_links(auth: httpx.AsyncClient, links: dict[str, str]) -> None:
    """The captured tokens are the real ones: each opens what it was made for (so the searches are not vacuous)."""
    accepted = await auth.post(
        "/invitations/accept", json={"token": token_of(links["invitation"]), "password": NEW_PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    reset = await auth.post(
        "/password-reset/confirm", json={"token": token_of(links["password_reset"]), "new_password": NEW_PASSWORD}
    )
    assert reset.status_code == 204, reset.text
    await _login(auth, ACCOUNTANT, NEW_PASSWORD)


async def _pending_mails(auth: ServiceRuntime, notify: ServiceRuntime) -> list[Any]:
    """The two e-mails notify-svc queued for this run's events; fails at once, with the reason, if it dead-lettered
    them. (On a shared broker notify-svc also meets older runs' events, sealed to other keys: those are not ours.)"""
    outbox = auth.definition.tables.outbox
    async with auth.db.sessionmaker() as session:
        ours = set((await session.scalars(select(outbox.c.event_id).where(outbox.c.topic.in_(TOPICS)))).all())
    assert len(ours) == 2, "auth-svc emitted one invitation and one reset event"
    dead = notify.definition.tables.dead_letter
    letters: list[Any] = []
    rows: list[Any] = []

    async def settled() -> bool:
        async with notify.db.sessionmaker() as session:
            letters[:] = (await session.execute(select(dead).where(dead.c.event_id.in_(ours)))).all()
            rows[:] = (await session.execute(select(mail_message).where(mail_message.c.id.in_(ours)))).all()
        return bool(letters) or len(rows) == 2

    await wait_until(settled, timeout=60, what="notify-svc to queue the invitation and reset e-mails")
    assert [letter.reason for letter in letters] == [], "notify-svc could not read the events"
    assert sorted(r.kind for r in rows) == ["invitation", "password_reset"]
    assert {r.recipient for r in rows} == {INVITEE, ACCOUNTANT}
    return rows


async def _caught_mails(url: str, count: int) -> list[dict[str, Any]]:
    """What the embedded SMTP catcher received, once it holds ``count`` mails."""
    caught: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def arrived() -> bool:
            response = await client.get(f"{url}/notify/dev/mail")
            assert response.status_code == 200, response.text
            caught[:] = response.json()
            return len(caught) >= count

        await wait_until(arrived, timeout=60, what="the e-mails to reach the embedded SMTP catcher")
    return caught


async def _consent_secrets(url: str) -> list[str]:
    """The demo's consent link is followed and agreed to; its token and the activation code that follows (in the
    forms a person could type it) are what must rest nowhere."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        (request,) = [m for m in await _caught_mails(url, 3) if DEMO_CLIENT_EMAIL in m["to"]]
        found = re.search(r"https?://\S+/approval/consent\?token=(\S+)", request["text"])
        assert found, "the consent mail holds its link"
        page = await client.get(f"/approval/consent?token={found.group(1)}")
        assert page.status_code == 200, page.text
        fields = dict(re.findall(r'name="(token|csrf)" value="([^"]+)"', page.text))
        agreed = await client.post("/approval/consent", data=fields | {"decision": "agree", "access_mode": "token"})
        assert agreed.status_code == 200, agreed.text
        # Two mails follow the consent, in either order: the code to the office and, since nobody of the client is
        # on the platform yet, an owner invitation to the person who consented.
        (code_mail,) = [m for m in await _caught_mails(url, 5) if DEMO_RETURN_EMAIL in m["to"]]
        code = re.search(r"\b([A-HJ-NP-Z2-9]{5})-([A-HJ-NP-Z2-9]{5})\b", code_mail["text"])
        assert code, "the code mail holds its code"
        return [found.group(1), code.group(0), code.group(1) + code.group(2)]


def _open_links(rows: list[Any], private_key: str) -> dict[str, str]:
    return {r.kind: unseal(private_key, r.sealed_link, info=INFO[r.kind]).decode() for r in rows}


def _mounted(app: FastAPI, prefix: str) -> FastAPI:
    found = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == prefix)
    assert isinstance(found, FastAPI)
    return found


def _scan_files(folder: Path, secrets: list[str], sealed: list[str]) -> list[str]:
    """Every file under ``folder``; also checks that the sealed links are found there (the scan sees the rows)."""
    found: list[str] = []
    everything = b""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files, "nothing to scan"
    for path in files:
        content = path.read_bytes()
        everything += content
        found += [f"{path.relative_to(folder)}: {leak}" for leak in leaks(content, secrets)]
    assert all(s.encode() in everything for s in sealed), "the scan does not see the rows it is meant to check"
    return found


# --- embedded: SQLite files and logs ---------------------------------------------------------------------------


async def test_embedded_run_leaves_no_link_token_in_its_data_files_or_logs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KSEF_HUB_LOG_LEVEL", "DEBUG")  # every log line any service writes is searched
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    sock = loopback_socket()
    app = create_embedded_app(data, public_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    async with (
        LifespanManager(app, startup_timeout=60),
        serve_on_loopback(app, sock) as url,
        httpx.AsyncClient(base_url=f"{url}/auth", timeout=30) as auth,
    ):
        key_file = data / NOTIFY_SEAL_KEY_FILE
        assert key_file.stat().st_mode & 0o077 == 0, "notify-svc's key must be readable by its owner only"
        await _invite_and_reset(auth)
        rows = await _pending_mails(_mounted(app, "/auth").state.runtime, _mounted(app, "/notify").state.runtime)
        links = _open_links(rows, read_private_key_file(key_file))
        secrets = [token_of(link) for link in links.values()] + list(links.values())
        sealed = [r.sealed_link for r in rows]
        # While running, the -wal files hold the latest writes (auth-svc's outbox rows among them).
        assert _scan_files(data, secrets, sealed) == []
        # The mails went out over SMTP to the embedded catcher, each with its link opened in the text (the third is
        # the demo's consent request).
        text_to = {m["to"][0]: m["text"] for m in await _caught_mails(url, 3)}
        assert links["invitation"] in text_to[INVITEE] and links["password_reset"] in text_to[ACCOUNTANT]
        await _use_links(auth, links)
        secrets += await _consent_secrets(url)
        assert _scan_files(data, secrets, sealed) == []

    assert _scan_files(data, secrets, sealed) == [], "after shutdown (databases checkpointed)"
    logged = caplog.text.encode() + "".join(capfd.readouterr()).encode()
    assert b"e-mail pending" in logged, "the services' logs are captured"
    assert leaks(logged, secrets) == []


# --- distributed: PostgreSQL rows and Kafka records ------------------------------------------------------------


async def _pg_rows(runtime: ServiceRuntime) -> bytes:
    """Every row of every table of the service's schema, as JSON text."""
    schema = runtime.definition.schema
    async with runtime.db.sessionmaker() as session:
        tables = (
            await session.scalars(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
            )
        ).all()
        dump = b""
        for table in tables:
            for (row,) in await session.execute(text(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t')):
                dump += row.encode() + b"\n"
    assert dump, f"schema {schema} is empty"
    return dump


async def _topic_records(bootstrap: str) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    """Every record of the two topics, from the beginning to the current end."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:  # a producer fetches a topic's partitions on demand; a consumer knows only what it subscribed to
        partitions = [TopicPartition(t, p) for t in TOPICS for p in sorted(await producer.partitions_for(t))]
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[tuple[bytes, list[tuple[str, bytes]]]] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            batch = await consumer.getmany(*partitions, timeout_ms=1000)
            for messages in batch.values():
                records += [(m.value or b"", list(m.headers or ())) for m in messages]
        return records
    finally:
        await consumer.stop()


@pytest.mark.postgres
@pytest.mark.kafka
async def test_distributed_run_leaves_no_link_token_in_topics_or_postgres(pg_url: str, kafka_bootstrap: str) -> None:
    private_key, public_key = generate_keypair()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_partitions=1)
    messaging = MessagingSettings(transport="kafka", relay_poll_interval_s=0.05)
    db = DatabaseSettings(url=SecretStr(pg_url))
    auth_settings = AuthSettings.model_validate(
        {"db": db, "kafka": kafka, "messaging": messaging, "notify_public_key": public_key}
    )
    # A consumer group of its own: a notify-svc of another run on the same broker must not take this one's events.
    notify_definition = dataclasses.replace(notify_svc.main.DEFINITION, name=f"notify-svc-{uuid.uuid4().hex[:8]}")
    notify_settings = NotifySettings(db=db, kafka=kafka, messaging=messaging, seal_private_key=SecretStr(private_key))
    auth_app = auth_svc.main.create_app(auth_settings, migrate_on_start=True)
    notify_app = create_service_app(notify_definition, notify_settings, migrate_on_start=True)

    async with LifespanManager(auth_app, startup_timeout=60), LifespanManager(notify_app, startup_timeout=60):
        await auth_svc.demo.ensure_demo_data(auth_app.state.runtime)
        transport = httpx.ASGITransport(app=auth_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://auth-svc") as auth:
            await _invite_and_reset(auth)
            notify: ServiceRuntime = notify_app.state.runtime
            rows = await _pending_mails(auth_app.state.runtime, notify)
            links = _open_links(rows, private_key)
            secrets = [token_of(link) for link in links.values()] + list(links.values())
            await _use_links(auth, links)

            records = await _topic_records(kafka_bootstrap)
            seen = {Envelope.from_bytes(value).id for value, _ in records}
            assert {r.id for r in rows} <= seen, "the run's own events are among the records searched"
            for value, headers in records:
                assert leaks(value, secrets) == [], "a topic record's value holds a link token"
                for name, header in headers:
                    assert leaks(name.encode() + header, secrets) == [], "a topic record's header holds a link token"

            auth_rows = await _pg_rows(auth_app.state.runtime)
            assert all(r.sealed_link.encode() in auth_rows for r in rows), "auth-svc's outbox rows are searched"
            assert leaks(auth_rows, secrets) == []
            assert leaks(await _pg_rows(notify), secrets) == []
