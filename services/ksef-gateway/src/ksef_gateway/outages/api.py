"""``GET /ksef/availability``: whether KSeF is up as the gateway sees it, the open outages and the recent ones.

Not a client's data (an outage concerns everybody), so any principal with ``ksef.read`` may read it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from ksef_gateway.deps import GatewayDep
from platform_common.auth import Principal, require
from platform_common.contracts.outages import OutageKind, OutageSource

router = APIRouter(tags=["ksef-availability"])

Reader = Annotated[Principal, Depends(require("ksef.read"))]

_LABELS = {
    OutageKind.MAINTENANCE: {"pl": "Prace serwisowe KSeF (tryb offline)", "en": "KSeF maintenance (offline mode)"},
    OutageKind.FAILURE: {"pl": "Awaria KSeF (tryb awaryjny)", "en": "KSeF failure (emergency mode)"},
    OutageKind.TOTAL_FAILURE: {"pl": "Awaria całkowita KSeF", "en": "KSeF total failure"},
    OutageKind.UNREACHABLE: {
        "pl": "KSeF nie odpowiada (brak komunikatu w Latarni)",
        "en": "KSeF does not answer (nothing announced in Latarnia)",
    },
}


class OutageView(BaseModel):
    id: uuid.UUID
    kind: OutageKind
    label: dict[str, str]
    source: OutageSource
    latarnia_event_id: int | None
    message: str | None
    started_at: datetime
    ended_at: datetime | None


class AvailabilityView(BaseModel):
    available: bool = Field(description="False while any outage is open: sales invoices wait or are issued offline")
    open: list[OutageView]
    recent: list[OutageView] = Field(description="Outages of the last 60 days, newest first")


def _view(row: dict[str, object]) -> OutageView:
    kind = OutageKind(str(row["kind"]))
    return OutageView.model_validate(row | {"kind": kind, "label": _LABELS[kind]})


@router.get("/ksef/availability", response_model=AvailabilityView, summary="KSeF availability and outages")
async def availability(_principal: Reader, gateway: GatewayDep) -> AvailabilityView:
    recent = [_view(r) for r in await gateway.availability.recent()]
    return AvailabilityView(
        available=not any(o.ended_at is None for o in recent),
        open=[o for o in recent if o.ended_at is None],
        recent=recent,
    )
