"""The credential vault: one KSeF credential per context NIP, encrypted at rest, validated in KSeF before it is
kept, and the ``CredentialSource`` the session manager authenticates with.

Setup (like mKsiegowa): the candidate is checked locally (token shape, certificate and key), then authenticated
in that NIP context through the KSeF client and asked for its own permissions; only a credential holding what the
scope needs is stored. A replaced or removed credential tells the listeners (the session manager) to forget the
tokens it holds for that context.

Secrets (the token, the certificate's unencrypted private key) exist in clear only in memory, inside
``SecretStr``/``SecretBytes``; at rest they are envelopes (domain/envelope.py) bound to (credential id, NIP).
Nothing here logs a secret, and the status views carry none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from pydantic import SecretBytes, SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from ksef_gateway.budget import BudgetUnavailable
from ksef_gateway.db import credential as credential_table
from ksef_gateway.domain.credentials import (
    CertificateInfo,
    CredentialError,
    CredentialKind,
    CredentialModel,
    CredentialStatus,
    Scope,
    certificate_credential,
    certificate_info,
    status_for_permissions,
    token_credential,
)
from ksef_gateway.domain.envelope import Envelope, EnvelopeError, Keyring, MasterKey, open_envelope, rewrap, seal
from ksef_gateway.ksef.credentials import CertificateCredential, Credential, KsefTokenCredential
from ksef_gateway.ksef.environments import Environment
from ksef_gateway.ksef.errors import KsefAuthFailed, KsefError, KsefForbidden, KsefRateLimited, KsefUnavailable
from ksef_gateway.ksef.models import KsefAuthSession
from ksef_gateway.sessions import NoCredential
from ksef_gateway.settings import VaultSettings
from platform_common.auth.clock import Clock, system_clock
from platform_common.db import Database

log = logging.getLogger(__name__)

# Every context needs InvoiceRead to sync; a credential that lost only InvoiceWrite still reads.
READ_PERMISSION = "InvoiceRead"


class VaultConfigurationError(RuntimeError):
    pass


class KsefAuthenticator(Protocol):
    """What setup needs of ``ksef_gateway.ksef.client.KsefClient``."""

    async def authenticate(self, context_nip: str, credential: Credential) -> KsefAuthSession: ...

    async def own_permissions(self, access_token: str, *, context_nip: str | None = None) -> frozenset[str]: ...

    async def revoke_current_session(self, token: str, *, context_nip: str | None = None) -> None: ...


class KsefClientsLike(Protocol):
    def for_environment(self, environment: Environment) -> KsefAuthenticator: ...


# --- master keys --------------------------------------------------------------------------------------------------


def load_keyring(settings: VaultSettings, *, environment: str, data_dir: Path) -> Keyring:
    """The configured master keys; outside production, a generated key file when none are configured."""
    if settings.master_keys:
        keys = [
            MasterKey.from_base64(key_id, value.get_secret_value()) for key_id, value in settings.master_keys.items()
        ]
        active = settings.active_key_id or keys[0].key_id
        return Keyring(keys, active)
    if environment == "production":
        raise VaultConfigurationError(
            "production needs configured vault master keys: set GATEWAY_VAULT__MASTER_KEYS (a JSON map of key id "
            "to base64 of 32 random bytes) and GATEWAY_VAULT__ACTIVE_KEY_ID"
        )
    return _local_keyring(data_dir / settings.key_file)


def _read_key_file(path: Path) -> Keyring:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("vault key file %s is readable by others (mode %o); it should be 0600", path, mode)
    data = json.loads(path.read_text())
    keys = [MasterKey.from_base64(key_id, value) for key_id, value in dict(data["master_keys"]).items()]
    return Keyring(keys, str(data["active_key_id"]))


def _local_keyring(path: Path) -> Keyring:
    """The embedded mode's key: generated on first start into a 0600 file, read back on every later start.

    Losing the file makes every stored credential undecryptable (they must be registered again), which is the
    price of a zero-configuration start; production refuses to run this way.
    """
    if path.exists():
        return _read_key_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate(f"local-{datetime.now(UTC):%Y%m%d%H%M%S}")
    body = json.dumps({"active_key_id": key.key_id, "master_keys": {key.key_id: key.to_base64()}}, indent=2)
    try:
        # O_EXCL: two processes starting at once must not each write a different key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    log.warning(
        "generated a local vault master key in %s: fine for the embedded mode, but configure "
        "GATEWAY_VAULT__MASTER_KEYS for any shared deployment",
        path,
    )
    return Keyring([key], key.key_id)


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


def _envelope(row: RowMapping) -> Envelope:
    return Envelope(
        ciphertext=bytes(row["secret_ciphertext"]),
        wrapped_key=bytes(row["wrapped_data_key"]),
        master_key_id=row["master_key_id"],
    )


def _view(row: RowMapping) -> CredentialView:
    pem = row["certificate_pem"]
    return CredentialView(
        context_nip=row["context_nip"],
        kind=CredentialKind(row["kind"]),
        model=CredentialModel(row["model"]),
        scope=Scope(row["scope"]),
        environment=Environment(row["environment"]),
        sync_subject3=row["sync_subject3"],
        sync_subject_authorized=row["sync_subject_authorized"],
        status=CredentialStatus(row["status"]),
        permissions=tuple(sorted(row["permissions"] or ())),
        valid_until=row["valid_until"],
        last_authenticated_at=row["last_authenticated_at"],
        last_error=row["last_error"],
        last_error_at=row["last_error_at"],
        token_reference=row["token_reference"],
        certificate=certificate_info(pem.encode()) if pem else None,
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


def _failure_status(error: BaseException, row: RowMapping, now: datetime) -> CredentialStatus | None:
    """The status a KSeF failure puts the credential in; ``None`` for failures that say nothing about it
    (outages, rate limits, a revoked auth session)."""
    if not isinstance(error, KsefAuthFailed):
        return None
    if error.auth_status == 450:
        said = " ".join([error.status_description, *error.details]).lower()
        return CredentialStatus.REVOKED if ("unieważnion" in said or "revoked" in said) else CredentialStatus.INVALID
    if error.auth_status == 460 and _certificate_problem(error) == "revoked":
        return CredentialStatus.REVOKED
    if error.auth_status == 460 and row["valid_until"] is not None and now >= row["valid_until"]:
        return CredentialStatus.EXPIRED
    if error.auth_status in (415, 460, 470, 480):
        return CredentialStatus.INVALID
    return None


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
        self._table = credential_table

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

    async def _row(self, context_nip: str) -> RowMapping | None:
        async with self._db.sessionmaker() as session:
            result = await session.execute(select(self._table).where(self._table.c.context_nip == context_nip))
            return result.mappings().one_or_none()

    async def status(self, context_nip: str) -> CredentialView | None:
        row = await self._row(context_nip)
        return _view(row) if row is not None else None

    async def credential_for(self, context_nip: str) -> tuple[Environment, Credential]:
        row = await self._row(context_nip)
        if row is None:
            raise NoCredential(context_nip)
        status = CredentialStatus(row["status"])
        if not status.usable:
            raise NoCredential(context_nip, f"the credential is {status.value}: {row['last_error'] or 'replace it'}")
        now = self._clock()
        if row["kind"] == CredentialKind.CERTIFICATE and row["valid_until"] is not None and now >= row["valid_until"]:
            await self._set_status(context_nip, CredentialStatus.EXPIRED, "the certificate has expired", now)
            raise NoCredential(context_nip, "the certificate has expired")
        try:
            secret = open_envelope(self.keyring, _envelope(row), _aad(row["id"], context_nip))
        except EnvelopeError as exc:
            log.error("credential of context %s cannot be decrypted: %s", context_nip, exc)
            raise NoCredential(context_nip, f"the stored credential cannot be decrypted ({exc})") from None
        credential: Credential
        if row["kind"] == CredentialKind.KSEF_TOKEN:
            credential = KsefTokenCredential(token=SecretStr(secret.decode()))
        else:
            credential = CertificateCredential(
                certificate_pem=row["certificate_pem"].encode(), private_key_pem=SecretBytes(secret)
            )
        return Environment(row["environment"]), credential

    async def active_contexts(self) -> list[ActiveContext]:
        """Contexts with a usable credential that may read invoices, for the sync scheduler."""
        t = self._table
        now = self._clock()
        async with self._db.sessionmaker() as session:
            rows = (await session.execute(select(t).order_by(t.c.context_nip))).mappings().all()
        contexts = []
        for row in rows:
            if not CredentialStatus(row["status"]).usable or READ_PERMISSION not in (row["permissions"] or ()):
                continue
            if (
                row["kind"] == CredentialKind.CERTIFICATE
                and row["valid_until"] is not None
                and now >= row["valid_until"]
            ):
                continue
            contexts.append(
                ActiveContext(
                    nip=row["context_nip"],
                    environment=Environment(row["environment"]),
                    scope=Scope(row["scope"]),
                    subject3=row["sync_subject3"],
                    subject_authorized=row["sync_subject_authorized"],
                )
            )
        return contexts

    async def key_usage(self) -> dict[str, int]:
        t = self._table
        async with self._db.sessionmaker() as session:
            rows = await session.execute(select(t.c.master_key_id, func.count()).group_by(t.c.master_key_id))
            return {key_id: int(count) for key_id, count in rows.all()}

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
                "status": status_for_permissions(Scope(row["scope"]), permissions).value,
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
        status = _failure_status(error, row, now)
        if status is not None:
            values["status"] = status.value
            log.warning("credential of context %s is now %s: %s", context_nip, status.value, values["last_error"])
        await self._update(row, values)

    async def _set_status(self, context_nip: str, status: CredentialStatus, reason: str, now: datetime) -> None:
        row = await self._row(context_nip)
        if row is not None:
            await self._update(row, {"status": status.value, "last_error": reason, "last_error_at": now})

    async def _update(self, row: RowMapping, values: dict[str, Any]) -> None:
        t = self._table
        async with self._db.sessionmaker() as session, session.begin():
            # Only the row that was read: a credential replaced meanwhile keeps its fresh state.
            await session.execute(
                update(t).where(t.c.id == row["id"], t.c.updated_at == row["updated_at"]).values(values)
            )

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
        for listener in self._listeners:
            try:
                await listener(context_nip)
            except Exception:
                log.exception("credential listener failed for context %s", context_nip)
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
            raise _auth_failure(exc, context_nip, setup) from None
        except (KsefUnavailable, KsefRateLimited, BudgetUnavailable, httpx.TransportError, TimeoutError) as exc:
            raise _unreachable(exc, environment) from None
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
        missing = sorted(setup.scope.required_permissions - permissions)
        if missing:
            names = " and ".join(missing)
            how = (
                f"the client must grant the office {names} in KSeF (entity permissions) for NIP {context_nip}"
                if setup.model is CredentialModel.DELEGATED
                else f"generate a credential that holds {names} in the context of NIP {context_nip}"
            )
            raise CredentialError(
                "missing-permission",
                f"Missing KSeF permission {names}",
                f"The credential authenticates in the context of NIP {context_nip} but lacks {names}, which scope "
                f"{setup.scope.value!r} needs: {how}.",
                missing_permissions=missing,
                permissions_seen=sorted(permissions),
            )
        return permissions

    async def _store(
        self, context_nip: str, secret: bytes, values: dict[str, Any], actor: str, now: datetime
    ) -> tuple[RowMapping, bool]:
        """Insert or replace the context's row; returns it as written and whether it is new. Two registrations
        of one NIP at once: one inserts, the other hits the unique NIP, and replaces the fresh row in a second
        round (last writer wins, answered 201 and 200)."""
        t = self._table
        for _attempt in range(2):
            async with self._db.sessionmaker() as session, session.begin():
                existing = (
                    await session.execute(select(t.c.id).where(t.c.context_nip == context_nip).with_for_update())
                ).scalar_one_or_none()
                credential_id = existing or uuid.uuid4()
                sealed = seal(self.keyring, secret, _aad(credential_id, context_nip))
                row = {
                    **values,
                    "secret_ciphertext": sealed.ciphertext,
                    "wrapped_data_key": sealed.wrapped_key,
                    "master_key_id": sealed.master_key_id,
                }
                if existing is not None:
                    await session.execute(update(t).where(t.c.id == existing).values(row))
                else:
                    try:
                        async with session.begin_nested():
                            await session.execute(
                                t.insert().values(
                                    id=credential_id, context_nip=context_nip, created_by=actor, created_at=now, **row
                                )
                            )
                    except IntegrityError:
                        log.info("credential of context %s was registered concurrently: replacing it", context_nip)
                        continue
                written = (await session.execute(select(t).where(t.c.id == credential_id))).mappings().one()
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
        t = self._table
        async with self._db.sessionmaker() as session, session.begin():
            result = await session.execute(t.delete().where(t.c.context_nip == context_nip))
        removed = bool(result.rowcount)  # type: ignore[attr-defined]
        if removed:
            log.info("credential of context %s removed by %s", context_nip, actor)
            for listener in self._listeners:
                try:
                    await listener(context_nip)
                except Exception:
                    log.exception("credential listener failed for context %s", context_nip)
        return removed

    # -- rotation -------------------------------------------------------------------------------------------------

    async def rotate_master_key(self, batch_size: int = 100) -> RotationReport:
        """Re-wrap every data key under the active master key. Safe to re-run and to run beside live traffic:
        each row is re-wrapped in its own transaction, conditional on still having the key it was read with, and
        the old keys keep decrypting until the run is over and the operator removes them."""
        t = self._table
        active = self.keyring.active_key_id
        rotated = 0
        failed: list[tuple[str, str]] = []
        skip: set[uuid.UUID] = set()
        while True:
            async with self._db.sessionmaker() as session:
                query = select(t.c.id, t.c.context_nip, t.c.secret_ciphertext, t.c.wrapped_data_key, t.c.master_key_id)
                query = query.where(t.c.master_key_id != active)
                if skip:
                    query = query.where(t.c.id.not_in(skip))
                rows: Sequence[RowMapping] = (
                    (await session.execute(query.order_by(t.c.id).limit(batch_size))).mappings().all()
                )
            if not rows:
                break
            for row in rows:
                try:
                    fresh = rewrap(self.keyring, _envelope(row), _aad(row["id"], row["context_nip"]))
                except EnvelopeError as exc:
                    skip.add(row["id"])
                    failed.append((row["context_nip"], str(exc)))
                    log.error("credential of context %s cannot be re-wrapped: %s", row["context_nip"], exc)
                    continue
                async with self._db.sessionmaker() as session, session.begin():
                    result = await session.execute(
                        update(t)
                        .where(t.c.id == row["id"], t.c.master_key_id == row["master_key_id"])
                        .values(wrapped_data_key=fresh.wrapped_key, master_key_id=fresh.master_key_id)
                    )
                rotated += int(result.rowcount)  # type: ignore[attr-defined]
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


def _auth_failure(exc: KsefAuthFailed, context_nip: str, setup: CredentialSetup) -> CredentialError:
    said = exc.status_description + (f": {'; '.join(exc.details)}" if exc.details else "")
    extensions: dict[str, Any] = {"ksef_auth_status": exc.auth_status, "ksef_description": said}
    status = exc.auth_status
    if status == 450:
        text = " ".join([exc.status_description, *exc.details]).lower()
        if "unieważnion" in text or "revoked" in text:
            return CredentialError(
                "ksef-token-revoked",
                "The KSeF token is revoked",
                "KSeF says this token has been revoked; generate a new token in KSeF and register it.",
                **extensions,
            )
        if "nieaktywny" in text or "inactive" in text:
            return CredentialError(
                "ksef-token-inactive",
                "The KSeF token is not active",
                "KSeF says this token is not active yet (or its activation failed); check its status in KSeF.",
                **extensions,
            )
        return CredentialError(
            "ksef-token-rejected",
            "KSeF rejected the token",
            f"KSeF does not accept this token in the context of NIP {context_nip} (unknown, mistyped or from another "
            "environment).",
            **extensions,
        )
    if status == 415:
        hint = (
            f"the client (NIP {context_nip}) must first grant the office's NIP InvoiceRead (and InvoiceWrite to send) "
            "in KSeF"
            if setup.model is CredentialModel.DELEGATED
            else "use a credential of the client itself or of someone the client granted permissions in KSeF"
        )
        return CredentialError(
            "no-access-to-context",
            "No access to this KSeF context",
            f"The credential authenticates, but holds no permission in the KSeF context of NIP {context_nip}: {hint}.",
            **extensions,
        )
    if status == 460:
        return _certificate_failure(_certificate_problem(exc), said, extensions)
    if status == 480:
        return CredentialError(
            "context-blocked",
            "KSeF blocked the context",
            f"KSeF blocked authentication in the context of NIP {context_nip} (suspected security incident); "
            "contact the Ministry of Finance.",
            **extensions,
        )
    if status in (500, 550, 100):
        return CredentialError(
            "ksef-unavailable",
            "KSeF could not finish the authentication",
            f"KSeF could not finish the authentication ({said}); try again shortly.",
            status=503,
            retry_after_s=30,
            **extensions,
        )
    return CredentialError(
        "ksef-auth-failed",
        "KSeF refused the authentication",
        f"KSeF ended the authentication with status {status}: {said}.",
        **extensions,
    )


def _certificate_problem(exc: KsefAuthFailed) -> str:
    """Which of KSeF's 460 details (spec, GET /auth/{ref}: Nieważny certyfikat, Błąd weryfikacji łańcucha
    certyfikatów, Niezaufany łańcuch certyfikatów, Certyfikat odwołany, Certyfikat zawieszony, Niepoprawny
    certyfikat) this is; KSeF gives no code for them, only the Polish text."""
    said = " ".join(exc.details).lower()
    if "odwołan" in said or "revoked" in said:
        return "revoked"
    if "zawieszon" in said or "suspended" in said:
        return "suspended"
    if "łańcuch" in said or "chain" in said or "untrusted" in said:
        return "untrusted"
    return "invalid"


def _certificate_failure(problem: str, said: str, extensions: dict[str, Any]) -> CredentialError:
    if problem == "revoked":
        return CredentialError(
            "certificate-revoked",
            "The certificate is revoked",
            f"KSeF says this certificate has been revoked ({said}); it can never authenticate again: obtain a new "
            "certificate (or KSeF certificate) and register it.",
            **extensions,
        )
    if problem == "suspended":
        return CredentialError(
            "certificate-suspended",
            "The certificate is suspended",
            f"KSeF says this certificate is suspended ({said}); have its issuer lift the suspension, or register "
            "another certificate.",
            **extensions,
        )
    if problem == "untrusted":
        return CredentialError(
            "certificate-untrusted",
            "KSeF does not trust the certificate",
            f"KSeF could not verify the certificate's chain ({said}): use a qualified certificate or seal from an "
            "EU trusted list, or a KSeF certificate.",
            **extensions,
        )
    return CredentialError(
        "certificate-rejected",
        "KSeF rejected the certificate",
        f"KSeF does not accept the certificate ({said}): it must be a qualified certificate or seal, or a KSeF "
        "certificate, within its validity period by KSeF's clock and not revoked.",
        **extensions,
    )


def _unreachable(exc: BaseException, environment: Environment) -> CredentialError:
    retry = getattr(exc, "retry_after_s", None)
    retry_after = max(1.0, float(retry)) if isinstance(retry, int | float) else 30.0
    why = "is rate limiting this context" if isinstance(exc, KsefRateLimited) else "cannot be reached right now"
    return CredentialError(
        "ksef-unavailable",
        "KSeF is unavailable",
        f"The credential could not be checked because KSeF ({environment.value}) {why}; nothing was stored. "
        "Try again later.",
        status=503,
        retry_after_s=retry_after,
    )
