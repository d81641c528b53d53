"""Use cases of office-client relations: an office adds a client (pending), approval-svc activates it, the
office or approval-svc ends it. Only active relations reach tokens and API keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row

from auth_svc.errors import forbidden, not_found
from auth_svc.organisations.domain import parse_nip
from auth_svc.organisations.service import Organisations
from auth_svc.principal import Principal
from auth_svc.relations.repository import RelationRepository
from auth_svc.roles import OrgKind, Perm, RelationState
from auth_svc.unit_of_work import Tx, UnitOfWork
from platform_common.contracts.integrations import IntegrationChange
from platform_common.messaging.dispatch import PermanentFailure
from platform_common.problems import Problem

# How far the office may go with a client in each integration state: only an active integration opens its data.
_RELATION_OF: dict[str, RelationState] = {
    "requested": RelationState.PENDING,
    "consented": RelationState.PENDING,
    "active": RelationState.ACTIVE,
    "suspended": RelationState.INACTIVE,
    "revoked": RelationState.INACTIVE,
    "refused": RelationState.INACTIVE,
    "expired": RelationState.INACTIVE,
}


def _relation_view(row: Row[Any]) -> dict[str, Any]:
    return {
        "client_id": row.id,
        "name": row.name,
        "nip": row.nip,
        "state": row.state,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


class Relations:
    def __init__(self, uow: UnitOfWork, organisations: Organisations) -> None:
        self._uow = uow
        self._organisations = organisations

    # for the other capabilities, inside their transaction

    async def client_ids(self, tx: Tx, office_id: uuid.UUID) -> set[uuid.UUID]:
        return {r.id for r in await RelationRepository(tx.session).clients_of(office_id)}

    async def client_nips(self, tx: Tx, office_id: uuid.UUID, only: Iterable[uuid.UUID]) -> list[str]:
        """The NIPs of these clients of the office, whatever the state: a token's narrowing, never its permission
        (whether the relation is active is asked live by every service, platform_common.client_access)."""
        rows = await RelationRepository(tx.session).clients_of(office_id, only)
        return sorted(r.nip for r in rows if r.nip)

    async def is_open(self, tx: Tx, office_id: uuid.UUID, client_id: uuid.UUID) -> bool:
        """The office works with the client now: the relation is pending (consent on its way) or active."""
        relation = await RelationRepository(tx.session).relation(office_id, client_id)
        return relation is not None and relation.state != RelationState.INACTIVE

    async def visible_client_ids(self, tx: Tx, actor: Principal, office_id: uuid.UUID) -> set[uuid.UUID]:
        """The clients of an office the actor may see: all for admins and ops, assigned ones for accountants."""
        repo = RelationRepository(tx.session)
        rows = await repo.clients_of(office_id)
        if actor.is_ops or actor.has(Perm.CLIENTS_MANAGE):
            return {r.id for r in rows}
        if actor.ptype == "user" and actor.user_id is not None:
            assigned = await repo.assigned_clients(actor.user_id, office_id)
            return assigned if assigned is not None else {r.id for r in rows}
        return {r.id for r in rows if r.nip and actor.can_touch(r.nip)}

    # use cases

    async def add_client(self, actor: Principal, office_id: uuid.UUID, nip: str, name: str) -> dict[str, Any]:
        """Register a client company for an office (or link the existing company with that NIP): pending until
        approval-svc reports the integration active."""
        nip = parse_nip(nip)
        async with self._uow.begin() as tx:
            repo = RelationRepository(tx.session)
            await self._organisations.office(tx, actor, office_id, Perm.CLIENTS_MANAGE)
            now = tx.clock()
            client = await self._organisations.by_nip(tx, OrgKind.CLIENT, nip)
            if client is None:
                client_id = await self._organisations.add(tx, OrgKind.CLIENT, name, nip)
            else:
                client_id = client.id
                if await repo.relation(office_id, client_id) is not None:
                    raise Problem(409, "Conflict", "This company is already a client of the office.", code="duplicate")
            await repo.add_relation(
                office_id=office_id, client_id=client_id, state=RelationState.PENDING, created_at=now, updated_at=now
            )
            # Both tenants see it: the client company learns which office now has a relation with it.
            await tx.audit("client.added", orgs=[office_id, client_id], actor=actor, subject=str(client_id), nip=nip)
            (row,) = await repo.clients_of(office_id, [client_id])
            return _relation_view(row)

    async def list_clients(self, actor: Principal, office_id: uuid.UUID) -> list[dict[str, Any]]:
        async with self._uow.begin() as tx:
            await self._organisations.office(tx, actor, office_id, None)
            visible = await self.visible_client_ids(tx, actor, office_id)
            return [_relation_view(r) for r in await RelationRepository(tx.session).clients_of(office_id, visible)]

    async def set_state(
        self,
        actor: Principal,
        office_id: uuid.UUID,
        state: str,
        *,
        client_id: uuid.UUID | None = None,
        client_nip: str | None = None,
    ) -> dict[str, Any]:
        """approval-svc (a service token) reports the integration state; an office admin may only end it."""
        target = RelationState(state)
        async with self._uow.begin() as tx:
            repo = RelationRepository(tx.session)
            if not actor.is_service:
                await self._organisations.office(tx, actor, office_id, Perm.CLIENTS_MANAGE)
                if target is not RelationState.INACTIVE:
                    raise forbidden("Only the approval service activates an office-client relation.")
            if client_id is None:
                client = await self._organisations.by_nip(tx, OrgKind.CLIENT, parse_nip(client_nip or ""))
                client_id = client.id if client else None
            relation = await repo.relation(office_id, client_id) if client_id else None
            if relation is None or client_id is None:
                raise not_found("Office-client relation")
            if relation.state != target:
                await repo.set_relation_state(office_id, client_id, target, tx.clock())
                await tx.audit(
                    "client.state_changed",
                    orgs=[office_id, client_id],
                    actor=actor,
                    subject=str(client_id),
                    office_id=str(office_id),
                    previous=relation.state,
                    state=str(target),
                )
            (row,) = await repo.clients_of(office_id, [client_id])
            return _relation_view(row)

    async def follow_integration(self, tx: Tx, change: IntegrationChange, client_name: str | None) -> uuid.UUID | None:
        """approval-svc changed an integration: the relation takes its state (inside the consumer's transaction).

        A first request creates the client company (named as the office named it) and a pending relation; an
        integration that is active makes it active; any end or suspension makes it inactive. Changes apply in
        revision order only, so a late replay of an older change never undoes a newer one. Returns the client
        company's id, or ``None`` when the change was older than what the relation holds."""
        repo = RelationRepository(tx.session)
        now = tx.clock()
        if await self._organisations.row(tx, change.office_id) is None:
            raise PermanentFailure(f"integration {change.integration_id} names an office auth-svc does not know")
        client = await self._organisations.by_nip(tx, OrgKind.CLIENT, change.client_nip)
        if client is None:
            client_id = await self._organisations.add(
                tx, OrgKind.CLIENT, client_name or change.client_nip, change.client_nip
            )
        else:
            client_id = client.id
        target = _RELATION_OF[change.state]
        relation = await repo.relation(change.office_id, client_id)
        if relation is None:
            await repo.add_relation(
                office_id=change.office_id,
                client_id=client_id,
                state=target,
                created_at=now,
                updated_at=now,
                integration_id=change.integration_id,
                integration_revision=change.revision,
            )
            previous = None
        else:
            if (
                relation.integration_id == change.integration_id
                and relation.integration_revision is not None
                and relation.integration_revision >= change.revision
            ):
                return None
            previous = relation.state
            await repo.follow(
                change.office_id,
                client_id,
                {
                    "state": target,
                    "updated_at": now,
                    "integration_id": change.integration_id,
                    "integration_revision": change.revision,
                },
            )
        if previous != target:
            await tx.audit(
                "client.state_changed",
                orgs=[change.office_id, client_id],
                subject=str(client_id),
                office_id=str(change.office_id),
                previous=previous,
                state=str(target),
                integration=change.event_type,
            )
        return client_id

    async def ensure(self, office_id: uuid.UUID, client_id: uuid.UUID, state: RelationState) -> None:
        """Bootstrap and demo data (no actor)."""
        async with self._uow.begin() as tx:
            repo = RelationRepository(tx.session)
            now = tx.clock()
            if await repo.relation(office_id, client_id) is None:
                await repo.add_relation(
                    office_id=office_id, client_id=client_id, state=state, created_at=now, updated_at=now
                )
            else:
                await repo.set_relation_state(office_id, client_id, state, now)
