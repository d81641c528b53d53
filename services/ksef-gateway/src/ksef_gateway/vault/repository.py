"""Every query of the credential vault. Each function runs inside the caller's session and transaction;
``vault.service`` decides where transactions begin (and where they lock).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import credential, offline_certificate
from ksef_gateway.vault.envelope import Envelope


@dataclass(frozen=True)
class StoredCredential:
    """A credential row as stored: the secret only as its envelope, the enumerations as their stored values."""

    id: uuid.UUID
    context_nip: str
    kind: str
    model: str
    scope: str
    environment: str
    sync_subject3: bool
    sync_subject_authorized: bool
    status: str
    permissions: list[str]
    valid_until: datetime | None
    last_authenticated_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    token_reference: str | None
    certificate_pem: str | None
    certificate_fingerprint: str | None
    certificate_subject: str | None
    envelope: Envelope
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True)
class SealedSecret:
    """Just what re-wrapping a data key needs of a row."""

    id: uuid.UUID
    context_nip: str
    envelope: Envelope


def _envelope(row: RowMapping) -> Envelope:
    return Envelope(
        ciphertext=bytes(row["secret_ciphertext"]),
        wrapped_key=bytes(row["wrapped_data_key"]),
        master_key_id=row["master_key_id"],
    )


def _stored(row: RowMapping) -> StoredCredential:
    return StoredCredential(
        id=row["id"],
        context_nip=row["context_nip"],
        kind=row["kind"],
        model=row["model"],
        scope=row["scope"],
        environment=row["environment"],
        sync_subject3=row["sync_subject3"],
        sync_subject_authorized=row["sync_subject_authorized"],
        status=row["status"],
        permissions=row["permissions"],
        valid_until=row["valid_until"],
        last_authenticated_at=row["last_authenticated_at"],
        last_error=row["last_error"],
        last_error_at=row["last_error_at"],
        token_reference=row["token_reference"],
        certificate_pem=row["certificate_pem"],
        certificate_fingerprint=row["certificate_fingerprint"],
        certificate_subject=row["certificate_subject"],
        envelope=_envelope(row),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


def _sealed_columns(sealed: Envelope) -> dict[str, Any]:
    return {
        "secret_ciphertext": sealed.ciphertext,
        "wrapped_data_key": sealed.wrapped_key,
        "master_key_id": sealed.master_key_id,
    }


# --- reads -----------------------------------------------------------------------------------------------------


async def credential_of(session: AsyncSession, context_nip: str) -> StoredCredential | None:
    result = await session.execute(select(credential).where(credential.c.context_nip == context_nip))
    row = result.mappings().one_or_none()
    return _stored(row) if row is not None else None


async def credential_by_id(session: AsyncSession, credential_id: uuid.UUID) -> StoredCredential:
    return _stored((await session.execute(select(credential).where(credential.c.id == credential_id))).mappings().one())


async def all_credentials(session: AsyncSession) -> list[StoredCredential]:
    """In context NIP order."""
    rows = (await session.execute(select(credential).order_by(credential.c.context_nip))).mappings().all()
    return [_stored(row) for row in rows]


async def context_nips_after(session: AsyncSession, after: str | None, limit: int) -> list[str]:
    """The first ``limit`` context NIPs with a credential above ``after``, in NIP order (keyset paging)."""
    query = select(credential.c.context_nip)
    if after is not None:
        query = query.where(credential.c.context_nip > after)
    return list((await session.execute(query.order_by(credential.c.context_nip).limit(limit))).scalars())


async def key_usage(session: AsyncSession) -> dict[str, int]:
    """Master key id -> how many credentials' data keys it wraps."""
    rows = await session.execute(select(credential.c.master_key_id, func.count()).group_by(credential.c.master_key_id))
    return {key_id: int(count) for key_id, count in rows.all()}


async def wrapped_by_other_keys(
    session: AsyncSession, active_key_id: str, *, skip: Collection[uuid.UUID], limit: int
) -> list[SealedSecret]:
    """The next ``limit`` rows (in id order) whose data key another master key than ``active_key_id`` wraps,
    leaving out ``skip``."""
    t = credential
    query = select(t.c.id, t.c.context_nip, t.c.secret_ciphertext, t.c.wrapped_data_key, t.c.master_key_id)
    query = query.where(t.c.master_key_id != active_key_id)
    if skip:
        query = query.where(t.c.id.not_in(skip))
    rows: Sequence[RowMapping] = (await session.execute(query.order_by(t.c.id).limit(limit))).mappings().all()
    return [SealedSecret(id=row["id"], context_nip=row["context_nip"], envelope=_envelope(row)) for row in rows]


# --- writes ----------------------------------------------------------------------------------------------------


async def lock_id_of(session: AsyncSession, context_nip: str) -> uuid.UUID | None:
    """The id of the context's credential, its row locked until the transaction ends (``FOR UPDATE``)."""
    t = credential
    found: uuid.UUID | None = (
        await session.execute(select(t.c.id).where(t.c.context_nip == context_nip).with_for_update())
    ).scalar_one_or_none()
    return found


async def insert_credential(
    session: AsyncSession,
    credential_id: uuid.UUID,
    context_nip: str,
    sealed: Envelope,
    values: dict[str, Any],
    *,
    created_by: str,
    created_at: datetime,
) -> None:
    """Raises ``IntegrityError`` when the context already has a credential (the NIP is unique)."""
    await session.execute(
        insert(credential).values(
            id=credential_id,
            context_nip=context_nip,
            created_by=created_by,
            created_at=created_at,
            **values,
            **_sealed_columns(sealed),
        )
    )


async def replace_credential(
    session: AsyncSession, credential_id: uuid.UUID, sealed: Envelope, values: dict[str, Any]
) -> None:
    await session.execute(
        update(credential).where(credential.c.id == credential_id).values({**values, **_sealed_columns(sealed)})
    )


async def update_unless_replaced(session: AsyncSession, read: StoredCredential, values: dict[str, Any]) -> None:
    # Only the row that was read: a credential replaced meanwhile keeps its fresh state.
    await session.execute(
        update(credential).where(credential.c.id == read.id, credential.c.updated_at == read.updated_at).values(values)
    )


async def store_rewrapped(session: AsyncSession, read: SealedSecret, fresh: Envelope) -> bool:
    """Store the re-wrapped data key, only if the row still has the master key it was read with."""
    result = await session.execute(
        update(credential)
        .where(credential.c.id == read.id, credential.c.master_key_id == read.envelope.master_key_id)
        .values(wrapped_data_key=fresh.wrapped_key, master_key_id=fresh.master_key_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_credential_of(session: AsyncSession, context_nip: str) -> bool:
    result = await session.execute(delete(credential).where(credential.c.context_nip == context_nip))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# --- the Offline certificate (vault/offline.py) ----------------------------------------------------------------


async def put_offline_certificate(session: AsyncSession, values: dict[str, Any]) -> None:
    """Insert or replace the client's certificate (one per client: a new one supersedes the old at once)."""
    upsert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    statement = upsert(offline_certificate).values(**values)
    replaced = {k: statement.excluded[k] for k in values if k != "client_nip"}
    await session.execute(statement.on_conflict_do_update(index_elements=["client_nip"], set_=replaced))


async def offline_certificate_of(session: AsyncSession, client_nip: str) -> Row[Any] | None:
    result = await session.execute(select(offline_certificate).where(offline_certificate.c.client_nip == client_nip))
    return result.first()


async def delete_offline_certificate(session: AsyncSession, client_nip: str) -> bool:
    result = await session.execute(delete(offline_certificate).where(offline_certificate.c.client_nip == client_nip))
    return bool(getattr(result, "rowcount", 0))
