"""The outages recorded by the availability capability, as the legal periods the deadlines are computed from.

Only Latarnia's announcements have legal effect (REFERENCE.md §12); an UNREACHABLE period our probes saw does not
move any deadline, so it is left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ksef_gateway.sales.deadlines import Outage, OutageKind

_LEGAL = {kind.value: kind for kind in OutageKind}


def legal_outages(rows: Iterable[dict[str, Any]]) -> list[Outage]:
    found = []
    for row in rows:
        kind = _LEGAL.get(str(row["kind"]))
        started: datetime = row["started_at"]
        if kind is not None and row["source"] == "latarnia":
            found.append(Outage(kind, started, row["ended_at"]))
    return found
