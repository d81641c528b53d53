"""The gateway's composition root: the long-lived parts every use case shares, one set per runtime.

One shared ``httpx.AsyncClient`` for all KSeF traffic (connection reuse, our own retries and tracing), one
rate-limit budget per process (KSeF counts per context and IP, and a context has one owner at a time),
the session manager, the credential vault and the sync scheduler. ``Gateway.of(runtime)`` returns the
instance the runtime started; API dependencies and consumers reach everything through it.
"""

from __future__ import annotations

import weakref

from ksef_gateway.settings import GatewaySettings
from platform_common.runtime import ServiceRuntime

_INSTANCES: weakref.WeakKeyDictionary[ServiceRuntime, Gateway] = weakref.WeakKeyDictionary()


class Gateway:
    def __init__(self, runtime: ServiceRuntime) -> None:
        assert isinstance(runtime.settings, GatewaySettings)
        self.runtime = runtime
        self.settings: GatewaySettings = runtime.settings
        # Each area adds its parts here (KSeF clients and sessions, budget, vault, sync scheduler) and starts
        # and stops them below, in dependency order.

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> Gateway:
        gateway = _INSTANCES.get(runtime)
        if gateway is None:
            gateway = _INSTANCES[runtime] = cls(runtime)
        return gateway
