"""Test support: a fake clock, test settings, and a running auth-svc with a seeded world of tenants.

Used by auth-svc's own tests and by other tests that need real tokens (e.g. JWKS verification from another
service's test client).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import httpx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from auth_svc.db import messaging_tables
from auth_svc.dependencies import auth_service
from auth_svc.main import create_app
from auth_svc.roles import OrgKind, RelationState, Role
from auth_svc.settings import AuthSettings, PasswordHashSettings
from auth_svc.wiring import AuthService
from platform_common.contracts import CONTRACTS
from platform_common.contracts.users import SealedLinkEvent
from platform_common.sealing import generate_keypair
from platform_common.settings import DatabaseSettings, KafkaSettings, MessagingSettings

PASSWORD = "correct horse battery staple"  # noqa: S105  # test users' password
SERVICE_CLIENT = "approval-svc"
SERVICE_SECRET = "approval-svc-test-secret"  # noqa: S105  # test service credential
# Stands in for notify-svc's key pair: tests open the sealed links of auth-svc's events with the private half.
NOTIFY_PRIVATE_KEY, NOTIFY_PUBLIC_KEY = generate_keypair()


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kwargs: float) -> None:
        self.now += timedelta(seconds=seconds, **kwargs)


def settings_for_tests(url: str, **overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "db": DatabaseSettings(url=SecretStr(url)),
        "messaging": MessagingSettings(transport="inprocess"),
        "kafka": KafkaSettings(bootstrap_servers="127.0.0.1:1"),
        "environment": "test",
        # Cheap hashing: the tests check behaviour, not argon2's cost.
        "password_hash": PasswordHashSettings(time_cost=1, memory_cost_kib=8, parallelism=1),
        "service_credentials": {SERVICE_CLIENT: SecretStr(SERVICE_SECRET)},
        "notify_public_key": NOTIFY_PUBLIC_KEY,
    }
    values.update(overrides)
    return AuthSettings(**values)


NIPS = {"A": "5260250216", "B": "5251234502", "C": "7777777702", "D": "1112223303", "E": "6791234506"}


@dataclass
class World:
    """Office A (clients C active, E pending), office B (client D active), and one user per role."""

    orgs: dict[str, uuid.UUID] = field(default_factory=dict)
    users: dict[str, uuid.UUID] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)


USERS: dict[str, tuple[str | None, Role]] = {
    "ops": (None, Role.OPS),
    "a_admin": ("A", Role.OFFICE_ADMIN),
    "a_accountant": ("A", Role.OFFICE_ACCOUNTANT),
    "b_admin": ("B", Role.OFFICE_ADMIN),
    "c_owner": ("C", Role.CLIENT_OWNER),
    "c_member": ("C", Role.CLIENT_MEMBER),
    "d_owner": ("D", Role.CLIENT_OWNER),
}


async def seed_world(service: AuthService) -> World:
    world = World()
    for name in ("A", "B"):
        world.orgs[name] = await service.organisations.ensure(OrgKind.OFFICE, f"Office {name}", NIPS[name])
    for name in ("C", "D", "E"):
        world.orgs[name] = await service.organisations.ensure(OrgKind.CLIENT, f"Client {name}", NIPS[name])
    await service.relations.ensure(world.orgs["A"], world.orgs["C"], RelationState.ACTIVE)
    await service.relations.ensure(world.orgs["A"], world.orgs["E"], RelationState.PENDING)
    await service.relations.ensure(world.orgs["B"], world.orgs["D"], RelationState.ACTIVE)
    for name, (org, role) in USERS.items():
        email = f"{name.replace('_', '.')}@example.com"
        world.emails[name] = email
        world.users[name], _ = await service.members.ensure_user(
            email, PASSWORD, world.orgs[org] if org else None, role, display_name=name
        )
    return world


@dataclass
class AuthHarness:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FakeClock
    service: AuthService
    world: World

    async def login(self, name: str, *, password: str = PASSWORD, **extra: Any) -> httpx.Response:
        return await self.client.post("/login", json={"email": self.world.emails[name], "password": password, **extra})

    async def token(self, name: str, **extra: Any) -> str:
        response = await self.login(name, **extra)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(name)}"}

    async def events(self, topic: str) -> list[dict[str, Any]]:
        """The envelopes auth-svc put into its outbox for ``topic``, oldest first."""
        outbox = messaging_tables.outbox
        async with self.service.sessionmaker() as session:
            stmt = select(outbox.c.payload).where(outbox.c.topic == topic).order_by(outbox.c.seq)
            rows = (await session.execute(stmt)).all()
        return [json.loads(r.payload) for r in rows]

    @staticmethod
    def link_token(envelope: dict[str, Any]) -> str:
        """Open an event's sealed link as notify-svc would (with the test key pair) and take its token."""
        contract = CONTRACTS[(envelope["type"], envelope["version"])]
        assert issubclass(contract, SealedLinkEvent)
        link = contract.model_validate(envelope["payload"]).open_link(NOTIFY_PRIVATE_KEY)
        return parse_qs(urlparse(link).query)["token"][0]

    async def service_headers(self) -> dict[str, str]:
        response = await self.client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": SERVICE_CLIENT, "client_secret": SERVICE_SECRET},
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@asynccontextmanager
async def open_harness(url: str, *, seed: bool = True, **overrides: Any) -> AsyncIterator[AuthHarness]:
    from asgi_lifespan import LifespanManager

    app = create_app(settings_for_tests(url, **overrides), migrate_on_start=True)
    clock = FakeClock()
    async with LifespanManager(app) as manager:
        service = auth_service(app)
        service.clock = clock
        world = await seed_world(service) if seed else World()
        transport = httpx.ASGITransport(app=manager.app, client=("203.0.113.10", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://auth") as client:
            yield AuthHarness(app=app, client=client, clock=clock, service=service, world=world)


def harness_fixture(name: str = "h", *, databases: Literal["postgres", "both"] = "postgres") -> Any:
    """A pytest fixture yielding an ``AuthHarness``; assign it in a test module: ``h = harness_fixture()``.

    (No conftest.py: mypy sees every conftest of a dashed folder as the same module ``conftest``.)
    ``databases="both"`` runs each test on SQLite (the embedded mode) and on PostgreSQL.
    """
    import pytest

    if databases == "postgres":

        @pytest.fixture(name=name)
        async def on_postgres(pg_url: str) -> AsyncIterator[AuthHarness]:
            async with open_harness(pg_url) as harness:
                yield harness

        return on_postgres

    @pytest.fixture(name=name)
    async def on_both(db_url: str) -> AsyncIterator[AuthHarness]:
        async with open_harness(db_url) as harness:
            yield harness

    return on_both
