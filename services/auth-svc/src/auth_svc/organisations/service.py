"""Use cases of the organisations capability, and the organisation reads other capabilities build on."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from auth_svc.errors import forbidden, not_found
from auth_svc.organisations.domain import check_access, org_view, parse_nip
from auth_svc.organisations.repository import OrganisationRepository
from auth_svc.principal import Principal
from auth_svc.roles import OrgKind, Perm
from auth_svc.unit_of_work import Tx, UnitOfWork
from platform_common.problems import Problem

if TYPE_CHECKING:
    from auth_svc.relations.service import Relations


class Organisations:
    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        # Set by the wiring: relations build on this capability, and one read here (an office member looking at
        # a client company it works for) builds on relations.
        self.relations: Relations | None = None

    # for the other capabilities, inside their transaction

    async def row(self, tx: Tx, org_id: uuid.UUID) -> Row[Any] | None:
        return await OrganisationRepository(tx.session).organisation(org_id)

    async def by_nip(self, tx: Tx, kind: OrgKind, nip: str) -> Row[Any] | None:
        return await OrganisationRepository(tx.session).organisation_by_nip(kind, nip)

    async def add(self, tx: Tx, kind: OrgKind, name: str, nip: str | None) -> uuid.UUID:
        org_id = uuid.uuid4()
        await OrganisationRepository(tx.session).add_organisation(
            id=org_id, kind=kind, name=name, nip=nip, created_at=tx.clock()
        )
        return org_id

    async def access(
        self, tx: Tx, actor: Principal, org_id: uuid.UUID, perm: str | None, *, ops_allowed: bool = True
    ) -> Row[Any]:
        """The organisation if the actor may act on it (with ``perm``); 404 or 403 otherwise."""
        return check_access(await self.row(tx, org_id), actor, org_id, perm, ops_allowed=ops_allowed)

    async def office(self, tx: Tx, actor: Principal, office_id: uuid.UUID, perm: str | None) -> Row[Any]:
        org = await self.access(tx, actor, office_id, perm)
        if org.kind != OrgKind.OFFICE:
            raise not_found("Office")
        return org

    # use cases

    async def create(self, actor: Principal, kind: str, name: str, nip: str | None) -> dict[str, Any]:
        if not actor.is_ops:
            raise forbidden("Only platform operators create organisations.")
        org_kind = OrgKind(kind)
        if org_kind is OrgKind.CLIENT and not nip:
            raise Problem(422, "A client company needs a NIP", code="nip-required")
        nip = parse_nip(nip) if nip else None
        async with self._uow.begin() as tx:
            if nip and await self.by_nip(tx, org_kind, nip) is not None:
                raise Problem(409, "Conflict", "An organisation of this kind with this NIP exists.", code="duplicate")
            org_id = await self.add(tx, org_kind, name, nip)
            await tx.audit("organisation.created", orgs=[org_id], actor=actor, subject=str(org_id))
            org = await self.row(tx, org_id)
            assert org is not None
            return org_view(org)

    async def list(self, actor: Principal) -> list[dict[str, Any]]:
        async with self._uow.begin() as tx:
            repo = OrganisationRepository(tx.session)
            if actor.is_ops:
                rows = await repo.organisations()
            elif actor.user_id is not None:
                rows = await repo.organisations(await repo.member_organisation_ids(actor.user_id))
            else:
                rows = await repo.organisations([actor.org] if actor.org else [])
            return [org_view(r) for r in rows]

    async def get(self, actor: Principal, org_id: uuid.UUID) -> dict[str, Any]:
        assert self.relations is not None
        async with self._uow.begin() as tx:
            org = await self.row(tx, org_id)
            if org is not None and not actor.is_ops and actor.org != org_id:
                # An office member may look at a client company it works for.
                if actor.org is None or actor.org_kind != OrgKind.OFFICE:
                    raise not_found("Organisation")
                if org_id not in await self.relations.visible_client_ids(tx, actor, actor.org):
                    raise not_found("Organisation")
                # A client that revoked or suspended the integration (or refused it) is closed to the office at
                # once: its relation still lists it, with its state, but the company itself is not shown.
                if not await self.relations.is_open(tx, actor.org, org_id):
                    raise not_found("Organisation")
            if org is None:
                raise not_found("Organisation")
            return org_view(org)

    async def rename(self, actor: Principal, org_id: uuid.UUID, name: str) -> dict[str, Any]:
        async with self._uow.begin() as tx:
            org = await self.access(tx, actor, org_id, Perm.USERS_MANAGE)
            await OrganisationRepository(tx.session).rename_organisation(org_id, name)
            await tx.audit(
                "organisation.renamed", orgs=[org_id], actor=actor, subject=str(org_id), previous=org.name, name=name
            )
            renamed = await self.row(tx, org_id)
            assert renamed is not None
            return org_view(renamed)

    async def ensure(self, kind: OrgKind, name: str, nip: str | None) -> uuid.UUID:
        """Bootstrap and demo data (no actor): the organisation with this NIP (or name), created if missing."""
        async with self._uow.begin() as tx:
            repo = OrganisationRepository(tx.session)
            if nip is not None:
                nip = parse_nip(nip)
                existing = await repo.organisation_by_nip(kind, nip)
            else:
                existing = next((o for o in await repo.organisations() if o.kind == kind and o.name == name), None)
            if existing is not None:
                return uuid.UUID(str(existing.id))
            org_id = await self.add(tx, kind, name, nip)
            await tx.audit("organisation.created", orgs=[org_id], subject=str(org_id), via="bootstrap")
            return org_id
