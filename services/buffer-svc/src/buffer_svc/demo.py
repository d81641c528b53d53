"""Demo data for the embedded mode: the active demo client's decisions for one month, made through the buffer's
own use cases as the client's owner would make them (so every decision is stamped, logged and announced like a
real one). The runner passes the client's owner and the month; buffer-svc imports no service."""

from __future__ import annotations

import uuid
from collections import defaultdict

from buffer_svc.purchases.domain import MAX_BULK, Decision
from buffer_svc.purchases.repository import EntryFilter
from buffer_svc.purchases.service import DecisionChange
from buffer_svc.wiring import Buffer
from platform_common.auth.principal import Principal
from platform_common.runtime import ServiceRuntime

# (decision, description) by the seller's place among the month's sellers in NIP order: most suppliers are booked
# as costs of the bakery, one in six is private. By place rather than by a hash of the NIP, so that any month with
# two sellers or more shows both decisions whatever sellers the simulator drew.
DEMO_DECISIONS: tuple[tuple[Decision, str | None], ...] = (
    (Decision.BOOK, "Surowce do produkcji (mąka, drożdże)"),
    (Decision.DONT_BOOK, "Zakup prywatny - nie dotyczy firmy"),
    (Decision.BOOK, "Materiały biurowe"),
    (Decision.BOOK, None),
    (Decision.BOOK, "Paliwo - samochód dostawczy"),
    (Decision.BOOK, "Usługi serwisowe pieca"),
)


async def held(runtime: ServiceRuntime, owner: Principal, client_nip: str) -> dict[str, int]:
    """How many invoices of the client the buffer holds per month (the archive included)."""
    months = await Buffer.of(runtime).purchases.months(owner, client_nip)
    return {m["period"]: m["entries"] + m["archived"] for m in months}


async def decide_demo_month(runtime: ServiceRuntime, owner: Principal, client_nip: str, period: str) -> int:
    """Decide every unverified invoice of the month by its seller (all of one seller's invoices the same way, so
    the next month's invoices from that seller get suggestions); how many were decided."""
    purchases = Buffer.of(runtime).purchases
    by_seller: dict[str, list[uuid.UUID]] = defaultdict(list)
    cursor: str | None = None
    while True:
        page = await purchases.page(
            owner,
            client_nip,
            EntryFilter(period=period, decision=Decision.UNVERIFIED),
            sort="issue_date",
            cursor=cursor,
            limit=MAX_BULK,
        )
        for view in page.items:
            by_seller[view.row.seller_nip or view.row.seller_name or ""].append(view.row.id)
        cursor = page.next_cursor
        if cursor is None:
            break
    by_choice: dict[tuple[Decision, str | None], list[uuid.UUID]] = defaultdict(list)
    for place, seller in enumerate(sorted(by_seller)):
        by_choice[DEMO_DECISIONS[place % len(DEMO_DECISIONS)]] += by_seller[seller]
    decided = 0
    for (decision, description), ids in by_choice.items():
        for start in range(0, len(ids), MAX_BULK):
            change = DecisionChange(decision=decision, description=description, set_description=description is not None)
            outcomes = await purchases.decide(owner, client_nip, ids[start : start + MAX_BULK], change)
            decided += sum(1 for o in outcomes if o.result == "changed")
    return decided
