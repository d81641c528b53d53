"""The capabilities of auth-svc, built once per app (or per CLI run) and wired to each other.

Dependencies point one way: organisations <- relations <- members <- sessions <- accounts, and api_keys,
audit and signing_keys on top of what they need; the one exception is set here (see ``Organisations``).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_svc.accounts.service import Accounts
from auth_svc.api_keys.service import ApiKeys
from auth_svc.audit.service import AuditLog
from auth_svc.clock import Clock
from auth_svc.crypto import DEVELOPMENT_SECRETS_KEY, Passwords, SecretBox
from auth_svc.members.service import Members
from auth_svc.organisations.service import Organisations
from auth_svc.relations.service import Relations
from auth_svc.sessions.service import Sessions
from auth_svc.settings import AuthSettings
from auth_svc.signing_keys.service import KeyStore, SigningKeys
from auth_svc.unit_of_work import UnitOfWork
from platform_common.messaging.outbox import Outbox


class AuthService:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        settings: AuthSettings,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self._uow = UnitOfWork(sessionmaker, clock)
        key = settings.secrets_key.get_secret_value() if settings.secrets_key else DEVELOPMENT_SECRETS_KEY
        box = SecretBox(key)
        passwords = Passwords(settings.password_hash)
        self.keys = KeyStore(sessionmaker, box, settings, clock)
        self.organisations = Organisations(self._uow)
        self.relations = Relations(self._uow, self.organisations)
        self.organisations.relations = self.relations
        self.members = Members(self._uow, outbox, settings, passwords, self.organisations, self.relations)
        self.sessions = Sessions(self._uow, settings, passwords, box, self.keys, self.members)
        self.accounts = Accounts(self._uow, outbox, settings, passwords, box, self.members, self.sessions)
        self.api_keys = ApiKeys(self._uow, settings, self.keys, self.organisations, self.members)
        self.audit = AuditLog(self._uow, self.organisations)
        self.signing_keys = SigningKeys(self._uow, self.keys)

    @property
    def clock(self) -> Clock:
        return self._uow.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """Tests advance time instead of sleeping: every capability reads the clock through here."""
        self._uow.clock = clock
        self.keys.clock = clock
