"""``GET /limits/context``, ``GET /limits/subject`` and ``GET /rate-limits`` (REFERENCE.md §8, §13, §17).

Values are the defaults unless changed through ``/testdata/limits/*`` or ``/testdata/rate-limits`` for the caller's
context or subject.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ksef_sim.deps import access
from ksef_sim.domain.limits import context_limits, subject_limits
from ksef_sim.ratelimit import API_GROUPS, Group
from ksef_sim.security import Caller
from ksef_sim.state import get_sim

router = APIRouter()

CallerDep = Annotated[Caller, Depends(access(Group.OTHER))]


@router.get("/limits/context")
async def get_context_limits(request: Request, caller: CallerDep) -> dict[str, Any]:
    return context_limits(get_sim(request).store, caller.context)


@router.get("/limits/subject")
async def get_subject_limits(request: Request, caller: CallerDep) -> dict[str, Any]:
    values = subject_limits(get_sim(request).store, caller.subject)
    return {
        "enrollment": {"maxEnrollments": values["maxEnrollments"]},
        "certificate": {"maxCertificates": values["maxCertificates"]},
    }


@router.get("/rate-limits")
async def get_rate_limits(request: Request, caller: CallerDep) -> dict[str, Any]:
    table = get_sim(request).limiter.effective(f"{caller.context.type}:{caller.context.value}")
    return {group.value: table[group].as_json() for group in API_GROUPS}
