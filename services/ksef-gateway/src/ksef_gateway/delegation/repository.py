"""Every query of delegated access: the office certificates and the per-client records. Callers own the
transaction; nothing here commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from ksef_gateway.db import delegated_access, office_certificate
from ksef_gateway.delegation.domain import AccessState, DelegatedAccess
from ksef_gateway.vault.envelope import Envelope


@dataclass(frozen=True)
class StoredOfficeCertificate:
    id: uuid.UUID
    office_nip: str
    environment: str
    certificate_pem: str
    certificate_fingerprint: str
    certificate_subject: str
    valid_until: datetime
    envelope: Envelope
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime


def _certificate(row: RowMapping) -> StoredOfficeCertificate:
    return StoredOfficeCertificate(
        id=row["id"],
        office_nip=row["office_nip"],
        environment=row["environment"],
        certificate_pem=row["certificate_pem"],
        certificate_fingerprint=row["certificate_fingerprint"],
        certificate_subject=row["certificate_subject"],
        valid_until=row["valid_until"],
        envelope=Envelope(
            ciphertext=row["secret_ciphertext"],
            wrapped_key=row["wrapped_data_key"],
            master_key_id=row["master_key_id"],
        ),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


async def office_certificate_of(session: AsyncSession, office_nip: str) -> StoredOfficeCertificate | None:
    row = (
        (await session.execute(select(office_certificate).where(office_certificate.c.office_nip == office_nip)))
        .mappings()
        .first()
    )
    return _certificate(row) if row is not None else None


async def office_certificate_id(session: AsyncSession, office_nip: str) -> uuid.UUID | None:
    return (
        await session.execute(
            select(office_certificate.c.id).where(office_certificate.c.office_nip == office_nip).with_for_update()
        )
    ).scalar_one_or_none()


def _sealed(envelope: Envelope) -> dict[str, Any]:
    return {
        "secret_ciphertext": envelope.ciphertext,
        "wrapped_data_key": envelope.wrapped_key,
        "master_key_id": envelope.master_key_id,
    }


async def insert_office_certificate(
    session: AsyncSession, certificate_id: uuid.UUID, office_nip: str, envelope: Envelope, values: dict[str, Any]
) -> None:
    await session.execute(
        insert(office_certificate).values(id=certificate_id, office_nip=office_nip, **_sealed(envelope), **values)
    )


async def replace_office_certificate(
    session: AsyncSession, certificate_id: uuid.UUID, envelope: Envelope, values: dict[str, Any]
) -> None:
    values = {k: v for k, v in values.items() if k not in ("created_by", "created_at")}
    await session.execute(
        update(office_certificate)
        .where(office_certificate.c.id == certificate_id)
        .values(**_sealed(envelope), **values)
    )


async def delete_office_certificate(session: AsyncSession, office_nip: str) -> bool:
    result = await session.execute(delete(office_certificate).where(office_certificate.c.office_nip == office_nip))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _access(row: RowMapping) -> DelegatedAccess:
    return DelegatedAccess(
        client_nip=row["client_nip"],
        office_nip=row["office_nip"],
        mode=row["mode"],
        active=row["active"],
        send_sales=row["send_sales"],
        revision=row["revision"],
        state=AccessState(row["state"]),
        verified_at=row["verified_at"],
        lost_at=row["lost_at"],
        lost_reason=row["lost_reason"],
        ksef_code=row["ksef_code"],
        permissions=tuple(row["permissions"] or ()),
        checked_at=row["checked_at"],
        check_error=row["check_error"],
        next_check_at=row["next_check_at"],
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


async def access_of(session: AsyncSession, client_nip: str, *, lock: bool = False) -> DelegatedAccess | None:
    query = select(delegated_access).where(delegated_access.c.client_nip == client_nip)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    return _access(row) if row is not None else None


async def client_nips_after(session: AsyncSession, after: str | None, limit: int) -> list[str]:
    """The first ``limit`` client NIPs with a delegated-access record above ``after``, in NIP order."""
    query = select(delegated_access.c.client_nip)
    if after is not None:
        query = query.where(delegated_access.c.client_nip > after)
    return list((await session.execute(query.order_by(delegated_access.c.client_nip).limit(limit))).scalars())


async def active_accesses(session: AsyncSession) -> list[DelegatedAccess]:
    rows = (await session.execute(select(delegated_access).where(delegated_access.c.active.is_(True)))).mappings()
    return [_access(row) for row in rows]


async def due_accesses(session: AsyncSession, now: datetime, limit: int) -> list[DelegatedAccess]:
    """Active records whose re-check is due (or was never scheduled), the most overdue first."""
    rows = (
        await session.execute(
            select(delegated_access)
            .where(
                delegated_access.c.active.is_(True),
                or_(delegated_access.c.next_check_at.is_(None), delegated_access.c.next_check_at <= now),
            )
            .order_by(delegated_access.c.next_check_at.asc().nulls_first())
            .limit(limit)
        )
    ).mappings()
    return [_access(row) for row in rows]


async def earliest_check(session: AsyncSession) -> datetime | None:
    return (
        await session.execute(
            select(delegated_access.c.next_check_at)
            .where(delegated_access.c.active.is_(True), delegated_access.c.next_check_at.is_not(None))
            .order_by(delegated_access.c.next_check_at.asc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def insert_access(session: AsyncSession, client_nip: str, values: dict[str, Any]) -> None:
    await session.execute(insert(delegated_access).values(client_nip=client_nip, **values))


async def update_access(session: AsyncSession, client_nip: str, values: dict[str, Any]) -> None:
    await session.execute(update(delegated_access).where(delegated_access.c.client_nip == client_nip).values(**values))


async def delete_access(session: AsyncSession, client_nip: str) -> bool:
    result = await session.execute(delete(delegated_access).where(delegated_access.c.client_nip == client_nip))
    return bool(result.rowcount)  # type: ignore[attr-defined]
