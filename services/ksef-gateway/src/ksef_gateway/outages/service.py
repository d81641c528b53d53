"""Use cases of KSeF availability: follow Latarnia, count what our calls see, and announce each outage once.

What the rest of the gateway reads (``down``, ``open_outages``) is a cache of the open outages, refreshed by the
monitor every interval and by this replica's own changes: a submission decides its offline mode from it without
a query, at the price of one interval's staleness for what another replica saw.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from ksef_gateway.outages.domain import Circuit, LatarniaReading, OpenOutage, follow_latarnia
from ksef_gateway.outages.repository import OutageRepository
from platform_common.auth.clock import Clock, system_clock
from platform_common.contracts.outages import KsefOutageEnded, KsefOutageStarted, OutageKind, OutageSource
from platform_common.db import Database
from platform_common.messaging.outbox import Outbox

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]


class Availability:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        *,
        probe: Probe,
        threshold: int = 3,
        breaker_cooldown_s: float = 30.0,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._probe = probe
        self.circuit = Circuit(threshold)
        self.clock = clock
        self._breaker_cooldown = timedelta(seconds=breaker_cooldown_s)
        self._recovered_at: datetime | None = None
        self._open: list[OpenOutage] = []
        self._listeners: list[Callable[[], None]] = []

    # --- what the others read -----------------------------------------------------------------------------

    @property
    def down(self) -> bool:
        return bool(self._open)

    def open_outages(self) -> list[OpenOutage]:
        return list(self._open)

    def on_change(self, listener: Callable[[], None]) -> None:
        """``listener()`` after an outage starts or ends here (the sender wakes up to resume)."""
        self._listeners.append(listener)

    async def refresh(self) -> None:
        async with self._db.sessionmaker() as session:
            fresh = await OutageRepository(session).open()
        changed = {o.id for o in fresh} != {o.id for o in self._open}
        self._open = fresh
        if changed:
            self._notify()

    async def recent(self, days: int = 60) -> list[dict[str, object]]:
        async with self._db.sessionmaker() as session:
            return await OutageRepository(session).since(self.clock() - timedelta(days=days))

    # --- what the monitor and the callers report ----------------------------------------------------------

    async def observe_latarnia(self, reading: LatarniaReading) -> None:
        now = self.clock()
        current = next((o for o in self._open if o.source is OutageSource.LATARNIA), None)
        change = follow_latarnia(current, reading)
        if change.end is None and change.start is None:
            return
        async with self._db.sessionmaker() as session, session.begin():
            repository = OutageRepository(session)
            if change.end is not None:
                await self._end(repository, change.end, now)
            if change.start is not None and (kind := change.start.kind) is not None:
                await self._start(
                    repository,
                    kind,
                    OutageSource.LATARNIA,
                    change.start.started_at or now,
                    latarnia_event_id=change.start.event_id,
                    message=change.start.message,
                )
        await self.refresh()

    async def report(self, ok: bool, *, breaker: bool = False) -> None:
        """One KSeF call's outcome: a failure counts towards opening the circuit, a success closes it.

        ``breaker``: the call was refused by the rate budget's own breaker (budget/service.py), which opens on the
        same failures and so hides them from us. It counts as a failure, except for one cooldown of that breaker
        after our probe found KSeF back: the breaker is still cooling down then, and KSeF is not down again.
        """
        if breaker and self._recovered_at is not None and self.clock() - self._recovered_at < self._breaker_cooldown:
            return
        if ok:
            if self.circuit.success() or any(o.source is OutageSource.PROBE for o in self._open):
                await self._end_probe_outage()
        elif self.circuit.failure():
            async with self._db.sessionmaker() as session, session.begin():
                await self._start(
                    OutageRepository(session),
                    OutageKind.UNREACHABLE,
                    OutageSource.PROBE,
                    self.clock(),
                    message=f"{self.circuit.threshold} consecutive KSeF calls failed",
                )
            await self.refresh()

    async def probe_if_needed(self) -> None:
        """While our circuit or a recorded UNREACHABLE outage is open, ask KSeF whether it answers again."""
        if not (self.circuit.open or any(o.source is OutageSource.PROBE for o in self._open)):
            return
        try:
            ok = await self._probe()
        except Exception:
            log.exception("the KSeF availability probe failed")
            ok = False
        if ok:
            self._recovered_at = self.clock()
        if ok or self.circuit.open:
            await self.report(ok)

    # --- inside ---------------------------------------------------------------------------------------------

    async def _end_probe_outage(self) -> None:
        async with self._db.sessionmaker() as session, session.begin():
            repository = OutageRepository(session)
            for outage in await repository.open():
                if outage.source is OutageSource.PROBE:
                    await self._end(repository, outage, self.clock())
        await self.refresh()

    async def _start(
        self,
        repository: OutageRepository,
        kind: OutageKind,
        source: OutageSource,
        at: datetime,
        *,
        latarnia_event_id: int | None = None,
        message: str | None = None,
    ) -> None:
        started = await repository.start(kind, source, at, latarnia_event_id=latarnia_event_id, message=message)
        if started is None:
            return  # another replica recorded it first and announced it
        log.warning("KSeF outage started: %s (%s) at %s", kind.value, source.value, at.isoformat())
        await self._outbox.emit(
            repository.session,
            KsefOutageStarted(
                outage_id=started.id,
                kind=kind,
                source=source,
                started_at=at,
                latarnia_event_id=latarnia_event_id,
                message=message,
            ),
        )

    async def _end(self, repository: OutageRepository, outage: OpenOutage, at: datetime) -> None:
        if not await repository.end(outage.id, at):
            return
        log.warning("KSeF outage ended: %s (%s) at %s", outage.kind.value, outage.source.value, at.isoformat())
        await self._outbox.emit(
            repository.session,
            KsefOutageEnded(
                outage_id=outage.id,
                kind=outage.kind,
                source=outage.source,
                started_at=outage.started_at,
                ended_at=at,
                latarnia_event_id=outage.latarnia_event_id,
            ),
        )

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()
