"""The parts of one buffer-svc runtime that its routers, consumers and components share."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from buffer_svc.communication.service import CommunicationLog
from buffer_svc.documents.gateway import GatewayDocuments
from buffer_svc.documents.service import Documents
from buffer_svc.ledger.service import AccessLedger
from buffer_svc.months.service import MonthLocks
from buffer_svc.purchases.service import PurchaseBuffer
from buffer_svc.settings import BufferSettings
from platform_common.runtime import ServiceRuntime


@dataclass(frozen=True)
class Buffer:
    purchases: PurchaseBuffer
    months: MonthLocks
    documents: Documents
    gateway: GatewayDocuments

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Buffer:
        built = _BUILT.get(runtime)
        if built is None:
            settings = runtime.settings
            assert isinstance(settings, BufferSettings)
            communication = CommunicationLog(runtime.db)
            ledger = AccessLedger(runtime.db)
            months = MonthLocks(communication)
            purchases = PurchaseBuffer(runtime.db, runtime.outbox, months, communication, ledger)
            gateway = GatewayDocuments(settings.gateway_api_url, timeout_s=settings.gateway_timeout_s)
            built = _BUILT[runtime] = cls(
                purchases=purchases,
                months=months,
                documents=Documents(runtime.db, gateway, ledger, communication),
                gateway=gateway,
            )
        return built


_BUILT: weakref.WeakKeyDictionary[ServiceRuntime, Buffer] = weakref.WeakKeyDictionary()


class GatewayClient:
    """Closes the HTTP client to the gateway when the service stops (a component of the runtime)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self._gateway = Buffer.of(runtime).gateway

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self._gateway.aclose()
