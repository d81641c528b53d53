"""Latarnia-style status service at the host root: ``GET /status`` and ``GET /messages`` (REFERENCE.md §1).

Shapes follow the official clients' models: status ``AVAILABLE|MAINTENANCE|FAILURE|TOTAL_FAILURE`` with the
messages of the running event, and messages ``{id, eventId, category, type, title, text, start, end, version,
published}``. Not part of ``/v2``: no token, no rate limit, untouched by injected faults (it must report them).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from ksef_sim.domain.latarnia import Category, LatarniaMessage, MessageType, Status, current_status, messages, reconcile
from ksef_sim.state import Sim, get_sim

router = APIRouter(tags=["Latarnia (simulated)"])


class MessageView(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    event_id: int
    category: Category
    type: MessageType
    title: str
    text: str
    start: datetime
    end: datetime | None
    version: int
    published: datetime

    @classmethod
    def of(cls, message: LatarniaMessage) -> MessageView:
        return cls.model_validate(message.model_dump(exclude={"KIND"}))


class StatusView(BaseModel):
    status: Status
    messages: list[MessageView]


def _reconciled(request: Request) -> Sim:
    sim = get_sim(request)
    reconcile(sim.store, sim.faults.outage, sim.clock.now())
    return sim


@router.get("/status", response_model=StatusView, summary="Current KSeF availability")
async def get_status(request: Request) -> StatusView:
    sim = _reconciled(request)
    status, running = current_status(sim.store, sim.faults.outage, sim.faults.outage_kind)
    return StatusView(status=status, messages=[MessageView.of(m) for m in running])


@router.get("/messages", response_model=list[MessageView], summary="Published availability messages")
async def get_messages(request: Request) -> list[MessageView]:
    sim = _reconciled(request)
    return [MessageView.of(m) for m in messages(sim.store)]
