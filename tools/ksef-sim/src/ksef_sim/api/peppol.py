"""``GET /peppol/query`` (public): the registered Peppol service providers, newest first (spec: dateCreated desc,
id asc), paged with ``pageOffset`` (a page index) and ``pageSize`` 10–100 (REFERENCE.md §2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ksef_sim.clock import iso
from ksef_sim.deps import public
from ksef_sim.domain.permissions import PeppolProvider
from ksef_sim.state import get_sim

router = APIRouter()


@router.get("/peppol/query", dependencies=[Depends(public())])
async def query_peppol_providers(
    request: Request,
    pageOffset: Annotated[int, Query(ge=0)] = 0,
    pageSize: Annotated[int, Query(ge=10, le=100)] = 10,
) -> dict[str, Any]:
    providers = sorted(get_sim(request).store.all(PeppolProvider), key=lambda p: p.id)
    providers.sort(key=lambda p: p.date_created, reverse=True)
    start = pageOffset * pageSize
    page = providers[start : start + pageSize]
    return {
        "peppolProviders": [{"id": p.id, "name": p.name, "dateCreated": iso(p.date_created)} for p in page],
        "hasMore": len(providers) > start + pageSize,
    }
