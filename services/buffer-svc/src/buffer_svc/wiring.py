"""The parts of one buffer-svc runtime that its routers, consumers and components share."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from buffer_svc.communication.service import CommunicationLog
from buffer_svc.ledger.service import AccessLedger
from buffer_svc.months.service import MonthLocks
from buffer_svc.purchases.service import PurchaseBuffer
from platform_common.runtime import ServiceRuntime


@dataclass(frozen=True)
class Buffer:
    purchases: PurchaseBuffer
    months: MonthLocks

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Buffer:
        built = _BUILT.get(runtime)
        if built is None:
            communication = CommunicationLog(runtime.db)
            months = MonthLocks(communication)
            purchases = PurchaseBuffer(runtime.db, runtime.outbox, months, communication, AccessLedger(runtime.db))
            built = _BUILT[runtime] = cls(purchases=purchases, months=months)
        return built


_BUILT: weakref.WeakKeyDictionary[ServiceRuntime, Buffer] = weakref.WeakKeyDictionary()
