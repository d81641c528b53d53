"""The credential vault: one KSeF credential per context NIP, encrypted at rest, validated in KSeF before it is
kept, and the ``CredentialSource`` the session manager authenticates with.

Setup (like mKsiegowa): the candidate is checked locally (token shape, certificate and key), then authenticated
in that NIP context through the KSeF client and asked for its own permissions; only a credential holding what the
scope needs is stored. A replaced or removed credential tells the listeners (the session manager) to forget the
tokens it holds for that context.

Secrets (the token, the certificate's unencrypted private key) exist in clear only in memory, inside
``SecretStr``/``SecretBytes``; at rest they are envelopes (vault/envelope.py) bound to (credential id, NIP).
Nothing here logs a secret, and the status views carry none.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import httpx
from pydantic import SecretBytes, SecretStr
from sqlalchemy.exc import IntegrityError

from ksef_gateway.budget.service import BudgetUnavailable
from ksef_gateway.ksef.credentials import CertificateCredential, Credential, KsefTokenCredential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.ksef.errors import KsefAuthFailed, KsefError, KsefForbidden, KsefRateLimited, KsefUnavailable
from ksef_gateway.ksef.models import KsefAuthSession
from ksef_gateway.sessions.service import NoCredential
from ksef_gateway.settings import VaultSettings
from ksef_gateway.vault import repository
from ksef_gateway.vault.domain import (
    CertificateInfo,
    CredentialError,
    CredentialKind,
    CredentialModel,
    CredentialStatus,
    Scope,
    auth_failure,
    certificate_credential,
    certificate_info,
    check_permissions,
    failure_status,
    status_for_permissions,
    token_credential,
    unreachable,
)
from ksef_gateway.vault.envelope import EnvelopeError, Keyring, open_envelope, rewrap, seal
from ksef_gateway.vault.repository import StoredCredential
from platform_common.auth.clock import Clock, system_clock
from platform_common.db import Database

log = logging.getLogger(__name__)

# Every context needs InvoiceRead to sync; a credential that lost only InvoiceWrite still reads.
READ_PERMISSION = "InvoiceRead"


class KsefAuthenticator(Protocol):
    """What setup needs of ``ksef_gateway.ksef.client.KsefClient``."""

    async def authenticate(self, context_nip: str, credential: Credential) -> KsefAuthSession: ...

    async def own_permissions(self, access_token: str, *, context_nip: str | None = None) -> frozenset[str]: ...

    async def revoke_current_session(self, token: str, *, context_nip: str | None = None) -> None: ...


class KsefClientsLike(Protocol):
    def for_environment(self, environment: Environment) -> KsefAuthenticator: ...


# --- views --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveContext:
    """A context the sync scheduler works on."""

    nip: str
    environment: Environment
    scope: Scope
    subject3: bool
    subject_authorized: bool


@dataclass(frozen=True)
class CredentialView:
    """Everything about a stored credential except its secret."""

    context_nip: str
    kind: CredentialKind
    model: CredentialModel
    scope: Scope
    environment: Environment
    sync_subject3: bool
    sync_subject_authorized: bool
    status: CredentialStatus
    permissions: tuple[str, ...]
    valid_until: datetime | None
    last_authenticated_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    token_reference: str | None
    certificate: CertificateInfo | None
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class CredentialSetup:
    """A registration request; exactly the fields of its ``kind`` are set."""

    kind: CredentialKind
    model: CredentialModel = CredentialModel.CLIENT
    scope: Scope = Scope.READ
    environment: Environment | None = None
    sync_subject3: bool = False
    sync_subject_authorized: bool = False
    token: SecretStr | None = None
    certificate: str | None = None
    private_key: SecretStr | None = None
    private_key_password: SecretStr | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RotationReport:
    active_key_id: str
    rotated: int
    failed: tuple[tuple[str, str], ...]  # (context NIP, why)
    usage: dict[str, int]  # master key id -> credentials wrapped by it, after the run


def _aad(credential_id: uuid.UUID, context_nip: str) -> bytes:
    return f"credential={credential_id}|nip={context_nip}".encode()


def _view(row: StoredCredential) -> CredentialView:
    pem = row.certificate_pem
    return CredentialView(
        context_nip=row.context_nip,
        kind=CredentialKind(row.kind),
        model=CredentialModel(row.model),
        scope=Scope(row.scope),
        environment=Environment(row.environment),
        sync_subject3=row.sync_subject3,
        sync_subject_authorized=row.sync_subject_authorized,
        status=CredentialStatus(row.status),
        permissions=tuple(sorted(row.permissions or ())),
        valid_until=row.valid_until,
        last_authenticated_at=row.last_authenticated_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        token_reference=row.token_reference,
        certificate=certificate_info(pem.encode()) if pem else None,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


# --- the vault ----------------------------------------------------------------------------------------------------


class Vault:
    """Implements ``ksef_gateway.sessions.CredentialSource``; also the credential use cases of the API."""

    def __init__(
        self,
        db: Database,
        keyring: Keyring,
        clients: KsefClientsLike,
        *,
        settings: VaultSettings | None = None,
        default_environment: Environment = Environment.SIM,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self.keyring = keyring
        self._clients = clients
        self._settings = settings or VaultSettings()
        self._default_environment = default_environment
        self._clock = clock
        self._listeners: list[Callable[[str], Awaitable[None]]] = []

    def on_credential_changed(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """``listener(nip)`` runs after a credential was replaced or removed (e.g. ``SessionManager.invalidate``)."""
        self._listeners.append(listener)

    async def start(self) -> None:
        usage = await self.key_usage()
        missing = {key_id: count for key_id, count in usage.items() if key_id not in self.keyring.key_ids}
        if missing:
            log.error(
                "credentials are wrapped by master keys that are not configured (they cannot be decrypted until "
                "the keys are restored): %s",
                ", ".join(f"{key_id} ({count})" for key_id, count in sorted(missing.items())),
            )
        stale = sum(c for k, c in usage.items() if k != self.keyring.active_key_id and k in self.keyring.key_ids)
        log.info(
            "vault ready: active master key %s, %d credential(s) await rotation", self.keyring.active_key_id, stale
        )

    async def stop(self) -> None:
        pass

    # -- reads ----------------------------------------------------------------------------------------------------

    async def _row(self, context_nip: str) -> StoredCredential | None:
        async with self._db.sessionmaker() as session:
            return await repository.credential_of(session, context_nip)

    async def status(self, context_nip: str) -> CredentialView | None:
        row = await self._row(context_nip)
        return _view(row) if row is not None else None

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        row = await self._row(context_nip)
        if row is None:
            raise NoCredential(context_nip)
        status = CredentialStatus(row.status)
        if not status.usable:
            raise NoCredential(context_nip, f"the credential is {status.value}: {row.last_error or 'replace it'}")
        now = self._clock()
        if row.kind == CredentialKind.CERTIFICATE and row.valid_until is not None and now >= row.valid_until:
            await self._set_status(context_nip, CredentialStatus.EXPIRED, "the certificate has expired", now)
            raise NoCredential(context_nip, "the certificate has expired")
        try:
            secret = open_envelope(self.keyring, row.envelope, _aad(row.id, context_nip))
        except EnvelopeError as exc:
            log.error("credential of context %s cannot be decrypted: %s", context_nip, exc)
            raise NoCredential(context_nip, f"the stored credential cannot be decrypted ({exc})") from None
        credential: Credential
        if row.kind == CredentialKind.KSEF_TOKEN:
            credential = KsefTokenCredential(token=SecretStr(secret.decode()))
        else:
            assert row.certificate_pem is not None  # a certificate credential always keeps its certificate
            credential = CertificateCredential(
                certificate_pem=row.certificate_pem.encode(), private_key_pem=SecretBytes(secret)
            )
        return Environment(row.environment), credential

    async def active_contexts(self) -> list[ActiveContext]:
        """Contexts with a usable credential that may read invoices, for the sync scheduler."""
        now = self._clock()
        async with self._db.sessionmaker() as session:
            rows = await repository.all_credentials(session)
        contexts = []
        for row in rows:
            if not CredentialStatus(row.status).usable or READ_PERMISSION not in (row.permissions or ()):
                continue
            if row.kind == CredentialKind.CERTIFICATE and row.valid_until is not None and now >= row.valid_until:
                continue
            contexts.append(
                ActiveContext(
                    nip=row.context_nip,
                    environment=Environment(row.environment),
                    scope=Scope(row.scope),
                    subject3=row.sync_subject3,
                    subject_authorized=row.sync_subject_authorized,
                )
            )
        return contexts

    async def context_nips(self, *, after: str | None, limit: int) -> list[str]:
        """Context NIPs with a credential (any status), in NIP order after ``after``."""
        async with self._db.sessionmaker() as session:
            return await repository.context_nips_after(session, after, limit)

    async def key_usage(self) -> dict[str, int]:
        async with self._db.sessionmaker() as session:
            return await repository.key_usage(session)

    # -- what the session manager reports -------------------------------------------------------------------------

    async def mark_authenticated(
        self, context_nip: str, permissions: frozenset[str], valid_until: datetime | None = None
    ) -> None:
        """A successful authentication: the permissions KSeF granted now decide the status.

        ``valid_until`` is the auth session's (refresh token's) end, which says nothing about how long the
        credential itself stays valid: a certificate's notAfter stays, and a KSeF token keeps "unknown" since
        KSeF states no expiry for tokens today (REFERENCE.md §16).
        """
        row = await self._row(context_nip)
        if row is None:
            return
        await self._update(
            row,
            {
                "permissions": sorted(permissions),
                "last_authenticated_at": self._clock(),
                "status": status_for_permissions(Scope(row.scope), permissions).value,
            },
        )

    async def mark_failed(self, context_nip: str, error: BaseException) -> None:
        """A failed authentication or call: recorded as the last error; when KSeF rejected the credential itself
        (bad or revoked token, no permission in the context, certificate error), the credential stops being used
        until it is replaced."""
        row = await self._row(context_nip)
        if row is None:
            return
        now = self._clock()
        values: dict[str, Any] = {"last_error": _describe(error), "last_error_at": now}
        status = failure_status(error, row.valid_until, now)
        if status is not None:
            values["status"] = status.value
            log.warning("credential of context %s is now %s: %s", context_nip, status.value, values["last_error"])
        await self._update(row, values)

    async def _set_status(self, context_nip: str, status: CredentialStatus, reason: str, now: datetime) -> None:
        row = await self._row(context_nip)
        if row is not None:
            await self._update(row, {"status": status.value, "last_error": reason, "last_error_at": now})

    async def _update(self, row: StoredCredential, values: dict[str, Any]) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            await repository.update_unless_replaced(session, row, values)

    # -- setup ----------------------------------------------------------------------------------------------------

    async def register(self, context_nip: str, setup: CredentialSetup, actor: str) -> tuple[CredentialView, bool]:
        """Check, authenticate in KSeF, then store (or replace) the credential. Returns it and whether it is new.

        Raises ``CredentialError`` with what to fix; nothing is stored unless every check passed.
        """
        now = self._clock()
        environment = setup.environment or self._default_environment
        credential, secret, extra = self._prepare(context_nip, setup, now)
        permissions = await self._check_in_ksef(context_nip, environment, credential, setup)
        status = status_for_permissions(setup.scope, permissions)
        values: dict[str, Any] = {
            "kind": setup.kind.value,
            "model": setup.model.value,
            "scope": setup.scope.value,
            "environment": environment.value,
            "sync_subject3": setup.sync_subject3,
            "sync_subject_authorized": setup.sync_subject_authorized,
            "status": status.value,
            "permissions": sorted(permissions),
            "last_authenticated_at": now,
            "last_error": None,
            "last_error_at": None,
            "updated_by": actor,
            "updated_at": now,
            **extra,
        }
        stored, created = await self._store(context_nip, secret, values, actor, now)
        await self._changed(context_nip)
        log.info(
            "credential %s for context %s (%s, %s model, scope %s, %s)",
            "registered" if created else "replaced",
            context_nip,
            setup.kind.value,
            setup.model.value,
            setup.scope.value,
            environment.value,
        )
        # The row as this request wrote it: a registration racing this one may replace it right after, and
        # the answer must describe what this request stored.
        return _view(stored), created

    def _prepare(
        self, context_nip: str, setup: CredentialSetup, now: datetime
    ) -> tuple[Credential, bytes, dict[str, Any]]:
        if setup.kind is CredentialKind.KSEF_TOKEN:
            if setup.token is None:
                raise CredentialError("ksef-token-missing", "No KSeF token", "A ksef_token credential needs token.")
            token, token_info = token_credential(
                setup.token, context_nip, delegated=setup.model is CredentialModel.DELEGATED
            )
            extra: dict[str, Any] = {
                "token_reference": token_info.reference_number,
                "certificate_pem": None,
                "certificate_fingerprint": None,
                "certificate_subject": None,
                # KSeF tokens carry no expiry today (REFERENCE.md §16); MF may add one (#834).
                "valid_until": None,
            }
            return token, token.token.get_secret_value().encode(), extra
        if setup.certificate is None or setup.private_key is None:
            raise CredentialError(
                "certificate-missing", "No certificate", "A certificate credential needs certificate and private_key."
            )
        cert, info = certificate_credential(setup.certificate, setup.private_key, setup.private_key_password, now)
        extra = {
            "token_reference": None,
            "certificate_pem": cert.certificate_pem.decode(),
            "certificate_fingerprint": info.fingerprint_sha256,
            "certificate_subject": info.subject,
            "valid_until": info.not_after,
        }
        return cert, cert.private_key_pem.get_secret_value(), extra

    async def _check_in_ksef(
        self, context_nip: str, environment: Environment, credential: Credential, setup: CredentialSetup
    ) -> frozenset[str]:
        client = self._clients.for_environment(environment)
        session: KsefAuthSession | None = None
        try:
            async with asyncio.timeout(self._settings.validation_timeout_s):
                session = await client.authenticate(context_nip, credential)
                permissions = frozenset(await client.own_permissions(session.access_token, context_nip=context_nip))
        except KsefAuthFailed as exc:
            raise auth_failure(exc, context_nip, setup.model) from None
        except (KsefUnavailable, KsefRateLimited, BudgetUnavailable, httpx.TransportError, TimeoutError) as exc:
            raise unreachable(exc, environment) from None
        except KsefForbidden as exc:
            raise CredentialError(
                "ksef-forbidden",
                "KSeF refused access",
                f"KSeF refused to list the credential's permissions in the context of NIP {context_nip}: "
                f"{exc.description}.",
                ksef_reason=exc.reason_code,
            ) from None
        except KsefError as exc:
            raise CredentialError(
                "ksef-rejected",
                "KSeF rejected the credential",
                f"KSeF rejected the authentication in the context of NIP {context_nip}: {exc.description}.",
                ksef_codes=exc.codes,
            ) from None
        finally:
            if session is not None:
                await _close_quietly(client, session)
        check_permissions(context_nip, setup.scope, setup.model, permissions)
        return permissions

    async def _store(
        self, context_nip: str, secret: bytes, values: dict[str, Any], actor: str, now: datetime
    ) -> tuple[StoredCredential, bool]:
        """Insert or replace the context's row; returns it as written and whether it is new. Two registrations
        of one NIP at once: one inserts, the other hits the unique NIP, and replaces the fresh row in a second
        round (last writer wins, answered 201 and 200)."""
        for _attempt in range(2):
            async with self._db.sessionmaker() as session, session.begin():
                existing = await repository.lock_id_of(session, context_nip)
                credential_id = existing or uuid.uuid4()
                sealed = seal(self.keyring, secret, _aad(credential_id, context_nip))
                if existing is not None:
                    await repository.replace_credential(session, existing, sealed, values)
                else:
                    try:
                        async with session.begin_nested():
                            await repository.insert_credential(
                                session, credential_id, context_nip, sealed, values, created_by=actor, created_at=now
                            )
                    except IntegrityError:
                        log.info("credential of context %s was registered concurrently: replacing it", context_nip)
                        continue
                written = await repository.credential_by_id(session, credential_id)
                return written, existing is None
        # Only when the row inserted concurrently vanished again (removed) before our replacement could lock it.
        raise CredentialError(
            "credential-conflict",
            "The credential changed meanwhile",
            f"The credential of NIP {context_nip} was registered and removed by other requests while this one was "
            "being stored; nothing was stored by this request. Check its status and try again.",
            status=409,
        )

    async def remove(self, context_nip: str, actor: str) -> bool:
        async with self._db.sessionmaker() as session, session.begin():
            removed = await repository.delete_credential_of(session, context_nip)
        if removed:
            log.info("credential of context %s removed by %s", context_nip, actor)
            await self._changed(context_nip)
        return removed

    async def _changed(self, context_nip: str) -> None:
        for listener in self._listeners:
            try:
                await listener(context_nip)
            except Exception:
                log.exception("credential listener failed for context %s", context_nip)

    # -- rotation -------------------------------------------------------------------------------------------------

    async def rotate_master_key(self, batch_size: int = 100) -> RotationReport:
        """Re-wrap every data key under the active master key. Safe to re-run and to run beside live traffic:
        each row is re-wrapped in its own transaction, conditional on still having the key it was read with, and
        the old keys keep decrypting until the run is over and the operator removes them."""
        active = self.keyring.active_key_id
        rotated = 0
        failed: list[tuple[str, str]] = []
        skip: set[uuid.UUID] = set()
        while True:
            async with self._db.sessionmaker() as session:
                rows = await repository.wrapped_by_other_keys(session, active, skip=skip, limit=batch_size)
            if not rows:
                break
            for row in rows:
                try:
                    fresh = rewrap(self.keyring, row.envelope, _aad(row.id, row.context_nip))
                except EnvelopeError as exc:
                    skip.add(row.id)
                    failed.append((row.context_nip, str(exc)))
                    log.error("credential of context %s cannot be re-wrapped: %s", row.context_nip, exc)
                    continue
                async with self._db.sessionmaker() as session, session.begin():
                    rewrapped = await repository.store_rewrapped(session, row, fresh)
                rotated += int(rewrapped)
        usage = await self.key_usage()
        log.info("vault rotation to %s: %d re-wrapped, %d failed, usage %s", active, rotated, len(failed), usage)
        return RotationReport(active_key_id=active, rotated=rotated, failed=tuple(failed), usage=usage)


async def _close_quietly(client: KsefAuthenticator, session: KsefAuthSession) -> None:
    """The validation's KSeF auth session is not needed afterwards: close it so no refresh token lingers."""
    try:
        await client.revoke_current_session(session.access_token, context_nip=session.context_nip)
    except Exception as exc:  # best effort: the refresh token expires on its own
        log.info("could not close the validation auth session %s: %s", session.auth_reference, type(exc).__name__)


def _describe(error: BaseException) -> str:
    text = str(error) if isinstance(error, KsefError | NoCredential) else type(error).__name__
    return text[:2000]
