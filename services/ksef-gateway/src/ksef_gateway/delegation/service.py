"""Delegated access use cases: the office certificate (sealed like every vault secret), the per-client record
fed by approval-svc's integration events, the live check in KSeF and the credential source that hands the office
certificate to the session manager for delegated clients.

The check authenticates afresh with the office certificate in the client's context (an access token keeps the
permissions it was minted with until it expires, REFERENCE.md §3.7, so a cached one cannot tell) and reads the
permissions KSeF granted; every call goes through the KSeF client and so through the rate budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretBytes, SecretStr
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.budget.service import BudgetUnavailable
from ksef_gateway.delegation import repository
from ksef_gateway.delegation.domain import (
    API_REVISION,
    GRANT,
    AccessState,
    CheckAnswer,
    DelegatedAccess,
    after_check,
    decide_integration,
    judge_permissions,
    next_check,
    refusal,
)
from ksef_gateway.delegation.repository import StoredOfficeCertificate
from ksef_gateway.ksef import KsefClients
from ksef_gateway.ksef.credentials import CertificateCredential, Credential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.ksef.errors import KsefAuthFailed, KsefError, KsefRateLimited, KsefUnavailable
from ksef_gateway.ownership.service import ContextLeases
from ksef_gateway.sessions.service import NoCredential
from ksef_gateway.settings import DelegationSettings
from ksef_gateway.vault.domain import (
    CertificateInfo,
    CredentialError,
    CredentialModel,
    Scope,
    auth_failure,
    certificate_credential,
    certificate_info,
    unreachable,
)
from ksef_gateway.vault.envelope import EnvelopeError, Keyring, open_envelope, seal
from ksef_gateway.vault.service import ActiveContext, Vault
from platform_common.auth.clock import Clock, system_clock
from platform_common.contracts.integrations import (
    CredentialAccessLost,
    CredentialAccessVerified,
    IntegrationChange,
)
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox, wake_after_commit

log = logging.getLogger(__name__)


def _aad(certificate_id: uuid.UUID, office_nip: str) -> bytes:
    return f"office_certificate={certificate_id}|nip={office_nip}".encode()


@dataclass(frozen=True)
class OfficeCertificateView:
    """Everything about the office certificate except its key."""

    office_nip: str
    environment: Environment
    certificate: CertificateInfo
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


def _certificate_view(row: StoredOfficeCertificate) -> OfficeCertificateView:
    return OfficeCertificateView(
        office_nip=row.office_nip,
        environment=Environment(row.environment),
        certificate=certificate_info(row.certificate_pem.encode()),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


class UnknownDelegation(Exception):
    def __init__(self, client_nip: str) -> None:
        super().__init__(f"no delegated access is recorded for {client_nip}")
        self.client_nip = client_nip


class Delegation:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        keyring: Keyring,
        clients: KsefClients,
        leases: ContextLeases | None,
        settings: DelegationSettings,
        *,
        default_environment: Environment = Environment.SIM,
        validation_timeout_s: float = 150.0,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._keyring = keyring
        self._clients = clients
        self._leases = leases
        self.settings = settings
        self._default_environment = default_environment
        self._validation_timeout_s = validation_timeout_s
        self._clock = clock
        self.wake_event = asyncio.Event()
        self._listeners: list[Callable[[str], Awaitable[None]]] = []
        self._pending: set[str] = set()

    def on_access_changed(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """``listener(client_nip)`` after a client's delegated access started, stopped or was found lost."""
        self._listeners.append(listener)

    async def _changed(self, client_nip: str) -> None:
        for listener in self._listeners:
            try:
                await listener(client_nip)
            except Exception:
                log.exception("delegated-access listener failed for %s", client_nip)

    # -- the office certificate -----------------------------------------------------------------------------------

    async def office_certificate(self, office_nip: str) -> OfficeCertificateView | None:
        async with self._db.sessionmaker() as session:
            row = await repository.office_certificate_of(session, office_nip)
        return _certificate_view(row) if row is not None else None

    async def register_office_certificate(
        self,
        office_nip: str,
        certificate: str,
        private_key: SecretStr,
        password: SecretStr | None,
        actor: str,
        environment: Environment | None = None,
    ) -> tuple[OfficeCertificateView, bool]:
        """Check the certificate and key locally, then authenticate with it in the office's own context: KSeF
        reads the subject from the certificate, so only a certificate of that office passes. Stored only then."""
        now = self._clock()
        environment = environment or self._default_environment
        credential, info = certificate_credential(certificate, private_key, password, now)
        await self._check_own_context(office_nip, environment, credential)
        values: dict[str, Any] = {
            "environment": environment.value,
            "certificate_pem": credential.certificate_pem.decode(),
            "certificate_fingerprint": info.fingerprint_sha256,
            "certificate_subject": info.subject,
            "valid_until": info.not_after,
            "created_by": actor,
            "created_at": now,
            "updated_by": actor,
            "updated_at": now,
        }
        secret = credential.private_key_pem.get_secret_value()
        for _attempt in range(2):
            async with self._db.sessionmaker() as session, session.begin():
                existing = await repository.office_certificate_id(session, office_nip)
                certificate_id = existing or uuid.uuid4()
                envelope = seal(self._keyring, secret, _aad(certificate_id, office_nip))
                if existing is not None:
                    await repository.replace_office_certificate(session, existing, envelope, values)
                else:
                    try:
                        async with session.begin_nested():
                            await repository.insert_office_certificate(
                                session, certificate_id, office_nip, envelope, values
                            )
                    except IntegrityError:
                        continue  # registered concurrently: replace it in the second round
                row = await repository.office_certificate_of(session, office_nip)
            assert row is not None
            log.info("office certificate %s for office %s", "replaced" if existing else "registered", office_nip)
            await self._recheck_office(office_nip)
            return _certificate_view(row), existing is None
        raise CredentialError(
            "credential-conflict",
            "The certificate changed meanwhile",
            f"The certificate of office {office_nip} was changed by other requests meanwhile; try again.",
            status=409,
        )

    async def _check_own_context(self, office_nip: str, environment: Environment, credential: Credential) -> None:
        client = self._clients.for_environment(environment)
        try:
            async with asyncio.timeout(self._validation_timeout_s):
                session = await client.authenticate(office_nip, credential)
        except KsefAuthFailed as exc:
            raise auth_failure(exc, office_nip, CredentialModel.CLIENT) from None
        except (KsefUnavailable, KsefRateLimited, BudgetUnavailable, httpx.TransportError, TimeoutError) as exc:
            raise unreachable(exc, environment) from None
        except KsefError as exc:
            raise CredentialError(
                "ksef-rejected",
                "KSeF rejected the certificate",
                f"KSeF rejected the authentication in the context of office NIP {office_nip}: {exc.description}.",
                ksef_codes=exc.codes,
            ) from None
        with contextlib.suppress(Exception):  # best effort: the refresh token expires on its own
            await client.revoke_current_session(session.access_token, context_nip=office_nip)

    async def remove_office_certificate(self, office_nip: str) -> bool:
        async with self._db.sessionmaker() as session, session.begin():
            removed = await repository.delete_office_certificate(session, office_nip)
        if removed:
            log.info("office certificate of office %s removed", office_nip)
            await self._recheck_office(office_nip)
        return removed

    async def _recheck_office(self, office_nip: str) -> None:
        """The office's certificate changed: every client it serves is checked again at once."""
        served: list[str] = []
        async with self._db.sessionmaker() as session, session.begin():
            for access in await repository.active_accesses(session):
                if access.office_nip == office_nip:
                    await repository.update_access(session, access.client_nip, {"next_check_at": None})
                    served.append(access.client_nip)
        for client_nip in served:
            await self._changed(client_nip)
        self.wake_event.set()

    async def _office_credential(self, office_nip: str) -> tuple[Environment, CertificateCredential]:
        async with self._db.sessionmaker() as session:
            row = await repository.office_certificate_of(session, office_nip)
        if row is None:
            raise NoCredential(office_nip, f"no certificate is registered for office {office_nip}")
        if self._clock() >= row.valid_until:
            raise NoCredential(office_nip, f"the certificate of office {office_nip} has expired")
        try:
            key = open_envelope(self._keyring, row.envelope, _aad(row.id, office_nip))
        except EnvelopeError as exc:
            log.error("office certificate of %s cannot be decrypted: %s", office_nip, exc)
            raise NoCredential(office_nip, f"the office certificate cannot be decrypted ({exc})") from None
        credential = CertificateCredential(
            certificate_pem=row.certificate_pem.encode(), private_key_pem=SecretBytes(key)
        )
        return Environment(row.environment), credential

    # -- the per-client record ------------------------------------------------------------------------------------

    async def access(self, client_nip: str) -> DelegatedAccess | None:
        async with self._db.sessionmaker() as session:
            return await repository.access_of(session, client_nip)

    async def client_nips(self, *, after: str | None, limit: int) -> list[str]:
        """Client NIPs with a delegated-access record (active or not), in NIP order after ``after``."""
        async with self._db.sessionmaker() as session:
            return await repository.client_nips_after(session, after, limit)

    async def usable_access(self, client_nip: str) -> DelegatedAccess | None:
        access = await self.access(client_nip)
        return access if access is not None and access.usable else None

    async def apply_integration(self, session: AsyncSession, change: IntegrationChange) -> None:
        """An ``integration.changed`` event, inside the consumer's transaction (its inbox row commits with it)."""
        await self._set(
            session,
            change.client_nip,
            revision=change.revision,
            state=change.state,
            access_mode=change.access_mode,
            office_nip=change.office_nip,
            send_sales=change.send_sales,
            actor=f"event:{change.event_type}",
        )

    async def set_access(
        self, client_nip: str, office_nip: str, *, active: bool, send_sales: bool, actor: str
    ) -> DelegatedAccess:
        """The HTTP equivalent of the integration events (tests, operations). It applies at once but keeps the
        stored revision, so approval-svc's next event still applies after it."""
        async with self._db.sessionmaker() as session, session.begin():
            current = await repository.access_of(session, client_nip, lock=True)
            await self._set(
                session,
                client_nip,
                revision=(current.revision if current is not None else API_REVISION) + 1,
                state="active" if active else "suspended",
                access_mode=GRANT,
                office_nip=office_nip,
                send_sales=send_sales,
                actor=actor,
                api=True,
            )
            stored = await repository.access_of(session, client_nip)
        assert stored is not None
        return stored

    async def _set(
        self,
        session: AsyncSession,
        client_nip: str,
        *,
        revision: int,
        state: str,
        access_mode: str | None,
        office_nip: str,
        send_sales: bool,
        actor: str,
        api: bool = False,
    ) -> None:
        current = await repository.access_of(session, client_nip, lock=True)
        decision = decide_integration(
            current,
            revision=revision,
            state=state,
            access_mode=access_mode,
            office_nip=office_nip,
            send_sales=send_sales,
        )
        if not decision.apply:
            return
        now = self._clock()
        values: dict[str, Any] = {
            "office_nip": decision.office_nip,
            "active": decision.active,
            "send_sales": decision.send_sales,
            "revision": (current.revision if current is not None else API_REVISION) if api else revision,
            "updated_by": actor[:200],
            "updated_at": now,
        }
        if decision.active:
            values["next_check_at"] = None  # checked at once: the scheduler takes unscheduled records first
        if decision.reset_check:
            values.update(state=AccessState.UNVERIFIED.value, lost_reason=None, ksef_code=None, check_error=None)
        if current is None:
            await repository.insert_access(
                session,
                client_nip,
                {"mode": GRANT, "permissions": [], "state": AccessState.UNVERIFIED.value, **values},
            )
        else:
            await repository.update_access(session, client_nip, values)
        log.info(
            "delegated access of %s via office %s %s (%s)",
            client_nip,
            decision.office_nip,
            "active" if decision.active else "stopped",
            actor,
        )
        # The checker tells the listeners (sessions, sync) once woken after the commit; a rolled-back change only
        # makes them look again, which is harmless.
        self._pending.add(client_nip)
        wake_after_commit(session, self.wake_event)

    async def announce_pending(self) -> None:
        pending, self._pending = self._pending, set()
        for client_nip in pending:
            await self._changed(client_nip)

    async def remove_access(self, client_nip: str) -> bool:
        async with self._db.sessionmaker() as session, session.begin():
            removed = await repository.delete_access(session, client_nip)
        if removed:
            await self._changed(client_nip)
        return removed

    # -- the live check ------------------------------------------------------------------------------------------

    async def request_check(self, client_nip: str) -> None:
        """Check at the next opportunity (a KSeF refusal was seen for this client)."""
        async with self._db.sessionmaker() as session, session.begin():
            access = await repository.access_of(session, client_nip, lock=True)
            if access is None or not access.active:
                return
            await repository.update_access(session, client_nip, {"next_check_at": None})
        self.wake_event.set()

    async def due(self, limit: int = 50) -> list[DelegatedAccess]:
        async with self._db.sessionmaker() as session:
            return await repository.due_accesses(session, self._clock(), limit)

    async def earliest_check(self) -> datetime | None:
        async with self._db.sessionmaker() as session:
            return await repository.earliest_check(session)

    async def check(self, client_nip: str) -> DelegatedAccess:
        """Verify the grant live and record the answer; publishes an event only when the answer changed."""
        access = await self.access(client_nip)
        if access is None:
            raise UnknownDelegation(client_nip)
        if not access.active:
            return access
        if self._leases is not None and not await self._leases.try_acquire(client_nip):
            return access  # the replica holding the context checks it
        answer: CheckAnswer | None
        error_text: str | None = None
        try:
            environment, credential = await self._office_credential(access.office_nip)
        except NoCredential as exc:
            answer = CheckAnswer(False, reason=exc.reason)
        else:
            answer, error_text = await self._ask_ksef(client_nip, environment, credential, access.send_sales)
        return await self._record(access, answer, error_text)

    async def _ask_ksef(
        self, client_nip: str, environment: Environment, credential: Credential, send_sales: bool
    ) -> tuple[CheckAnswer | None, str | None]:
        client = self._clients.for_environment(environment)
        try:
            session = await client.authenticate(client_nip, credential)
            try:
                permissions = await client.own_permissions(session.access_token, context_nip=client_nip)
            finally:
                with contextlib.suppress(Exception):
                    await client.revoke_current_session(session.access_token, context_nip=client_nip)
        except (KsefError, BudgetUnavailable, httpx.TransportError) as exc:
            answer = refusal(exc)
            if answer is None:
                log.info("delegated access check of %s got no answer: %s", client_nip, exc)
                return None, str(exc)[:2000]
            return answer, None
        return judge_permissions(frozenset(permissions), send_sales), None

    async def _record(
        self, read: DelegatedAccess, answer: CheckAnswer | None, error_text: str | None
    ) -> DelegatedAccess:
        now = self._clock()
        client_nip = read.client_nip
        lost = False
        async with self._db.sessionmaker() as session, session.begin():
            current = await repository.access_of(session, client_nip, lock=True)
            if current is None or not current.active or current.office_nip != read.office_nip:
                return current or read  # the integration changed while KSeF was asked: its own check follows
            if answer is None:
                await repository.update_access(
                    session,
                    client_nip,
                    {"check_error": error_text, "next_check_at": next_check(now, self.settings.retry_after_s)},
                )
            else:
                transition = after_check(current, answer, now)
                await repository.update_access(
                    session,
                    client_nip,
                    {
                        "state": transition.state.value,
                        "verified_at": transition.verified_at,
                        "lost_at": transition.lost_at,
                        "lost_reason": transition.lost_reason,
                        "ksef_code": transition.ksef_code,
                        "permissions": sorted(answer.permissions),
                        "checked_at": now,
                        "check_error": None,
                        "next_check_at": next_check(now, self.settings.check_interval_s),
                    },
                )
                if transition.event is not None:
                    contract = (
                        CredentialAccessVerified if transition.event is AccessState.VERIFIED else CredentialAccessLost
                    )
                    await self._outbox.emit(
                        session,
                        contract(
                            client_nip=client_nip,
                            access_mode=GRANT,
                            office_nip=current.office_nip,
                            checked_at=now,
                            reason=transition.lost_reason,
                            ksef_code=transition.ksef_code,
                        ),
                        client_nip=client_nip,
                    )
                    lost = transition.event is AccessState.LOST
                    log.info(
                        "delegated access of %s via office %s: %s",
                        client_nip,
                        current.office_nip,
                        transition.state.value,
                    )
            stored = await repository.access_of(session, client_nip)
        if answer is not None and (lost or answer.granted):
            await self._changed(client_nip)
        assert stored is not None
        return stored

    # -- what the session manager and the sync scheduler need ------------------------------------------------------

    async def credential_for(self, client_nip: str) -> tuple[Environment, Credential] | None:
        """The office certificate for a delegated client, ``None`` when the client is not served by delegation."""
        access = await self.usable_access(client_nip)
        if access is None:
            return None
        return await self._office_credential(access.office_nip)

    async def active_contexts(self) -> list[ActiveContext]:
        """Delegated clients whose access was verified, for the sync scheduler."""
        async with self._db.sessionmaker() as session:
            accesses = await repository.active_accesses(session)
        return [
            ActiveContext(
                nip=access.client_nip,
                environment=self._default_environment,
                scope=Scope.READ_SEND if access.send_sales else Scope.READ,
                subject3=False,
                subject_authorized=False,
            )
            for access in accesses
            if access.state is AccessState.VERIFIED
        ]

    async def refused(self, client_nip: str, error: BaseException) -> None:
        """A KSeF refusal seen while working for ``client_nip``: re-check a delegated client at once."""
        if refusal(error) is None:
            return
        access = await self.usable_access(client_nip)
        if access is not None:
            log.info("KSeF refused the delegated access of %s; checking the grant now", client_nip)
            await self.request_check(client_nip)


class DelegatingCredentials:
    """The session manager's credential source: the office certificate for a client served by delegation, the
    vault's credential of the client's own context otherwise. Feedback about delegated contexts does not touch
    the vault (its row, if any, is not what was used)."""

    def __init__(self, vault: Vault, delegation: Delegation) -> None:
        self._vault = vault
        self._delegation = delegation

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        delegated = await self._delegation.credential_for(context_nip)
        if delegated is not None:
            return delegated
        return await self._vault.credential_for(context_nip)

    async def mark_failed(self, context_nip: str, error: KsefError) -> None:
        if await self._delegation.usable_access(context_nip) is not None:
            await self._delegation.refused(context_nip, error)
            return
        await self._vault.mark_failed(context_nip, error)

    async def mark_authenticated(self, context_nip: str, permissions: frozenset[str], valid_until: datetime) -> None:
        if await self._delegation.usable_access(context_nip) is None:
            await self._vault.mark_authenticated(context_nip, permissions, valid_until)


class SyncContexts:
    """The clients the sync scheduler works on: the vault's, and the verified delegated ones (delegation wins)."""

    def __init__(self, vault: Vault, delegation: Delegation) -> None:
        self._vault = vault
        self._delegation = delegation

    async def active_contexts(self) -> list[ActiveContext]:
        delegated = await self._delegation.active_contexts()
        taken = {context.nip for context in delegated}
        return delegated + [c for c in await self._vault.active_contexts() if c.nip not in taken]
