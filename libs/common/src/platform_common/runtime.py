"""What every service runs besides its API: database, transport, outbox relay and consumers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter
from sqlalchemy import MetaData, Table

from platform_common.client_access import ClientAccessProjection
from platform_common.contracts import TOPICS
from platform_common.db import Database
from platform_common.messaging.dispatch import Dispatcher, Subscription
from platform_common.messaging.monitoring import MessagingMonitor
from platform_common.messaging.outbox import Outbox, OutboxRelay
from platform_common.messaging.tables import MessagingTables
from platform_common.messaging.transport import InProcessBus, InProcessTransport, KafkaTransport, Transport
from platform_common.metrics import GaugeSpec, Reading, ScrapedGauges
from platform_common.migrations import upgrade_async
from platform_common.settings import ServiceSettings
from platform_common.telemetry import Telemetry, disabled_telemetry

log = logging.getLogger(__name__)

# How long a stopping service waits for deliveries still running in it (a redelivery repeats any it cuts off).
STOP_DRAIN_TIMEOUT_S = 30.0


class Component(Protocol):
    """A long-lived part of a service besides its API (a scheduler, a pool of KSeF sessions): started after
    the runtime (database, transport, relay) and stopped before it, in reverse order."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class ServiceDefinition:
    """Static description of a service, given to ``create_service_app`` by its ``main.create_app``."""

    name: str
    schema: str
    metadata: MetaData
    tables: MessagingTables
    migrations: str
    routers: Sequence[APIRouter] = ()
    subscriptions: Callable[[ServiceRuntime], Sequence[Subscription]] = field(default=lambda _rt: ())
    components: Callable[[ServiceRuntime], Sequence[Component]] = field(default=lambda _rt: ())
    # A service that serves clients' data to offices keeps the live projection of who may read whom
    # (platform_common.client_access): its table here, and the runtime follows integration.changed into it.
    client_access: Table | None = None
    # The dependency admitting a platform operator to the shared /ops endpoints (platform_common.messaging.ops_api);
    # ``require("ops")`` unless given. auth-svc, which verifies credentials itself, gives its own.
    operator: Callable[..., Any] | None = None
    version: str = "0.1.0"
    description: str = ""


# With Kafka only: the in-process bus delivers inside the relay, so its lag is the outbox's oldest pending age.
CONSUMER_LAG = GaugeSpec(
    "ksef_hub.consumer.lag", "Messages of a partition this service's consumer group has not committed yet"
)


class ServiceRuntime:
    def __init__(
        self,
        definition: ServiceDefinition,
        settings: ServiceSettings,
        *,
        bus: InProcessBus | None = None,
        telemetry: Telemetry | None = None,
        migrate_on_start: bool = False,
    ) -> None:
        self.definition = definition
        self.settings = settings
        self.telemetry = telemetry or disabled_telemetry()
        self.db = Database(settings.db, definition.schema)
        self.outbox = Outbox(definition.tables, producer=definition.name)
        self.transport: Transport
        if settings.messaging.transport == "inprocess":
            self.transport = InProcessTransport(bus or InProcessBus())
        else:
            self.transport = KafkaTransport(
                settings.kafka,
                client_id=definition.name,
                topics=TOPICS,
                stop_grace_s=settings.messaging.stop_grace_s,
            )
        tracer = self.telemetry.tracer(f"ksef_hub.{definition.name}")
        meter = self.telemetry.meter_provider.get_meter(f"ksef_hub.{definition.name}")
        self.dispatcher = Dispatcher(
            group=definition.name,
            db=self.db,
            tables=definition.tables,
            settings=settings.messaging,
            tracer=tracer,
            meter=meter,
        )
        self.relay = OutboxRelay(
            self.db,
            definition.tables,
            self.transport,
            settings.messaging,
            name=definition.name,
            tracer=tracer,
            meter=meter,
        )
        self.outbox.on_commit_wake(self.relay.wake_event)
        self.gauges = ScrapedGauges(meter)
        self._messaging_gauges()
        self.client_access = (
            ClientAccessProjection(definition.client_access, self.db) if definition.client_access is not None else None
        )
        self._migrate_on_start = migrate_on_start
        self.components: list[Component] = []
        self.started = False

    def _messaging_gauges(self) -> None:
        monitor = MessagingMonitor(
            self.db, self.definition.tables, outbox_retention_s=self.settings.messaging.outbox_retention_s
        )

        async def outbox_pending() -> list[Reading]:
            return [Reading((await monitor.outbox()).pending)]

        async def outbox_oldest_age() -> list[Reading]:
            age = (await monitor.outbox()).oldest_pending_age_s
            return [Reading(age or 0.0)]

        async def dead_letters() -> list[Reading]:
            return [Reading(await monitor.pending_dead_letters())]

        self.gauges.gauge("ksef_hub.outbox.pending", outbox_pending, description="Events written, not yet published")
        self.gauges.gauge(
            "ksef_hub.outbox.oldest_pending_age",
            outbox_oldest_age,
            unit="s",
            description="Age of the oldest unpublished event (0 when none); with the in-process bus, also how far "
            "behind this service's consumers are",
        )
        self.gauges.gauge("ksef_hub.dead_letters.pending", dead_letters, description="Dead letters not replayed yet")
        transport = self.transport
        if isinstance(transport, KafkaTransport):

            async def consumer_lag() -> list[Reading]:
                return [
                    Reading(p.lag, {"group": self.definition.name, "topic": p.topic, "partition": str(p.partition)})
                    for p in await transport.consumer_lag()
                    if p.lag is not None
                ]

            self.gauges.gauge(CONSUMER_LAG.name, consumer_lag, description=CONSUMER_LAG.description)

    async def start(self) -> None:
        if self._migrate_on_start:
            await upgrade_async(
                self.definition.migrations, self.settings.db.url.get_secret_value(), self.definition.schema
            )
        for subscription in self.definition.subscriptions(self):
            self.dispatcher.subscribe(subscription)
        if self.client_access is not None:
            self.dispatcher.subscribe(self.client_access.subscription(self.definition.name))
        self.transport.add_dispatcher(self.dispatcher)
        await self.transport.start()
        await self.relay.start()
        for component in self.definition.components(self):
            await component.start()
            self.components.append(component)
        self.started = True
        log.info("%s started (transport=%s)", self.definition.name, self.settings.messaging.transport)

    async def stop(self) -> None:
        while self.components:
            await self.components.pop().stop()
        # Relay first: nothing may be published into a transport that is shutting down.
        await self.relay.stop()
        await self.transport.stop()
        # The engine goes last, once nothing uses it: a connection still checked out at dispose() stays open
        # (and its aiosqlite worker thread alive) until garbage collection, past the end of the service.
        # Deliveries from the other services of this process run in their relays' tasks: let them finish
        # (their effects commit with their inbox rows) rather than fail half-way.
        try:
            await asyncio.wait_for(self.dispatcher.wait_idle(), timeout=STOP_DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "%s: a delivery still runs after %ss; stopping anyway", self.definition.name, STOP_DRAIN_TIMEOUT_S
            )
        await self.db.dispose()
        self.telemetry.shutdown()
        self.started = False

    async def readiness(self) -> dict[str, str]:
        """Each check's result; the service is ready when all are "ok"."""
        checks: dict[str, str] = {}
        try:
            await self.db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            await self.transport.check_ready()
            checks["transport"] = "ok"
        except Exception as exc:
            checks["transport"] = f"unreachable: {type(exc).__name__}"
        checks["outbox_relay"] = "ok" if self.relay.running else "stopped"
        return checks
