"""The rate-limit budget: every KSeF call takes a slot first.

KSeF counts requests per (context, IP) in 1 s / 60 s / 60 min sliding windows per endpoint group
(REFERENCE.md §13). This is the contract between the KSeF client (which takes a slot around every call and
reports how it went) and the limiter behind it (``RateBudget``).

``slot`` waits until every window of (context, group) has room, the circuit of the environment is closed (or
half-open and this is the probe), and it is this caller's turn under fair scheduling across contexts (lower
``priority`` value goes first, e.g. seconds left to the client's month-close deadline). On leaving the block
the slot must have been ``report``ed (the client does it): a 429 with ``Retry-After`` blocks the group of that
context for that long, 5xx and transport errors count against the environment's circuit.

How ``RateBudget`` decides, in order:

1. **Circuit breaker, per environment.** ``circuit_failure_threshold`` consecutive failures (a 5xx — 503 is
   KSeF's outage answer — or a transport error, reported as ``status=None``) open it: every caller, queued or
   new, gets ``CircuitOpen`` at once instead of piling onto a failing KSeF. After ``circuit_cooldown_s`` it is
   half-open: the next caller is the probe and the others still fail fast; the probe's success closes it, its
   failure opens it for another cooldown. Any answer from KSeF that is not a 5xx (a 429 included) is a success.
2. **Backoff.** A 429 blocks only its (context, group): for ``Retry-After`` seconds when KSeF sent one, else
   exponentially (``backoff_base_s`` doubling per consecutive 429, at most ``backoff_max_s``). After a 5xx or
   transport error, every waiter of the environment waits a full-jitter delay (uniform in ``[0, min(max,
   base * 2^(failures-1))]``, drawn per waiter) from the last failure, so retries do not arrive in lockstep; a
   5xx with ``Retry-After`` holds the whole environment until then.
3. **Windows** (``ksef_gateway.budget.domain``): at most ``usable_fraction`` of each KSeF window per (context,
   group) — per process for the ``public`` group, which KSeF counts per IP whatever the context; a hit counts from
   sending until the answer plus the window, so latency cannot make us overshoot.
4. **Fair share.** At most ``max_in_flight`` calls per environment. Among the callers that could go now, the
   lowest priority band (``priority // priority_band_s``) wins, then the context served least recently
   (round-robin, so one context queuing hundreds of calls cannot starve the others), then arrival order.

``max_wait_s`` bounds the wait: when the known wait already exceeds it the call fails at once with
``BudgetExhausted(retry_after_s=<time to the next slot>)``, otherwise it fails when the time is up. Neither
outcome holds a worker, so a scheduler can move on to another client. Waiting never polls: a waiter sleeps until
the earliest moment anything can change (a window slides, a block ends, a deadline passes) or a slot is released.

Mode ``off`` admits everything at once (no windows, backoff, cap or circuit); the group ``unlimited`` (pre-signed
part URLs) is never limited. Windows are keyed by (context, group) across environments: a context has one
credential, so one environment, at a time. State is in memory and per process: a context has one owner replica
at a time (``ksef_gateway.ownership.service``), and a restart forgets past calls. At the seam that would overshoot:
the previous life may have used its whole share of a 1 s window in its last second and the new one would use its
own in its first, together over KSeF's limit (seen as 429s on ``auth.challenge`` when a gateway restarted right
after a burst of logins). So a new budget admits nothing for ``restart_quiet_s`` (default 1 s, the shortest
window). That settles the ``public`` group, whose minute and hour limits are its per-second limit times the span.
It does not settle a context's minute and hour windows that are tighter (exports, downloads): a context restarted
within the hour of heavy use can still meet a 429, which the backoff above then honours.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import metrics

from ksef_gateway.budget.domain import Hit, Limits, SlidingWindows

if TYPE_CHECKING:
    from ksef_gateway.settings import BudgetSettings

log = logging.getLogger(__name__)


class EndpointGroup(StrEnum):
    """KSeF's rate-limit groups, named as ``GET /rate-limits`` names them."""

    ONLINE_SESSION = "onlineSession"
    INVOICE_SEND = "invoiceSend"
    BATCH_SESSION = "batchSession"
    INVOICE_STATUS = "invoiceStatus"
    SESSION_LIST = "sessionList"
    SESSION_INVOICE_LIST = "sessionInvoiceList"
    SESSION_MISC = "sessionMisc"
    INVOICE_METADATA = "invoiceMetadata"
    INVOICE_EXPORT = "invoiceExport"
    INVOICE_EXPORT_STATUS = "invoiceExportStatus"
    INVOICE_DOWNLOAD = "invoiceDownload"
    OTHER = "other"
    # Not limited per context: public endpoints (per IP) and pre-signed part URLs (not limited at all).
    PUBLIC = "public"
    UNLIMITED = "unlimited"


class BudgetUnavailable(Exception):
    """No slot now: the caller should move on (e.g. to another client) instead of holding a worker."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class CircuitOpen(BudgetUnavailable):
    """The environment's circuit is open (KSeF failing or in an outage): fail fast, try after ``retry_after_s``."""

    def __init__(self, environment: str, retry_after_s: float) -> None:
        super().__init__(
            f"KSeF {environment} is failing; calls are suspended for {retry_after_s:.1f} s",
            retry_after_s=retry_after_s,
        )
        self.environment = environment


class BudgetExhausted(BudgetUnavailable):
    """The (context, group) budget has no slot within the caller's ``max_wait_s``."""

    def __init__(self, context: str | None, group: EndpointGroup, retry_after_s: float) -> None:
        super().__init__(
            f"no {group} slot for context {context or '-'} within the allowed wait; next in {retry_after_s:.1f} s",
            retry_after_s=retry_after_s,
        )
        self.context = context
        self.group = group


class Slot(Protocol):
    def report(self, *, status: int | None, retry_after_s: float | None = None) -> None:
        """How the call went: the HTTP status (``None`` for a transport error) and ``Retry-After`` if any."""


class Budget(Protocol):
    def slot(
        self,
        *,
        environment: str,
        context: str | None,
        group: EndpointGroup,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> AbstractAsyncContextManager[Slot]: ...


class _NoteOnly:
    def report(self, *, status: int | None, retry_after_s: float | None = None) -> None:
        pass


class Unlimited:
    """No limits at all: for unit tests of the client and for benchmarks with limits off."""

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[Slot]:
        yield _NoteOnly()

    def slot(
        self,
        *,
        environment: str,
        context: str | None,
        group: EndpointGroup,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> AbstractAsyncContextManager[Slot]:
        return self._slot()


# -- the real limiter --------------------------------------------------------------------------------------------

_meter = metrics.get_meter("ksef_gateway.budget.service")
_WAITS = _meter.create_histogram(
    "ksef_gateway.budget.wait", unit="s", description="Time a KSeF call waited for its rate-limit slot"
)
_RATE_LIMITED = _meter.create_counter(
    "ksef_gateway.budget.rate_limited", description="429 answers KSeF gave despite the budget"
)
_REJECTED = _meter.create_counter(
    "ksef_gateway.budget.rejected", description="Calls refused a slot (reason: circuit_open, budget_exhausted)"
)
_CIRCUIT = _meter.create_counter(
    "ksef_gateway.budget.circuit_transitions", description="Circuit breaker state changes per environment"
)

# Groups that have no windows and take no share of the in-flight cap.
_UNMETERED = frozenset({EndpointGroup.UNLIMITED})


class BudgetClock(Protocol):
    """Monotonic seconds and a way to wait for them; tests drive a manual one."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after ``cooldown_s`` (one probe) →
    closed when the probe succeeds, open again when it fails. Pure: the time is passed in."""

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_out = False

    def state(self, now: float) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if now < self.opened_at + self.cooldown_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def retry_after(self, now: float) -> float:
        """How long a refused caller should stay away."""
        if self.opened_at is None:
            return 0.0
        if self.state(now) is CircuitState.OPEN:
            return self.opened_at + self.cooldown_s - now
        # Half-open with the probe out: its answer decides soon.
        return min(1.0, self.cooldown_s)

    def admit(self, now: float) -> bool | None:
        """``None``: refused; ``False``: an ordinary call; ``True``: this call is the half-open probe."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and not self.probe_out:
            self.probe_out = True
            return True
        return None

    def success(self, *, probe: bool) -> CircuitState | None:
        """Returns the new state when it changed."""
        self.failures = 0
        if probe and self.opened_at is not None:
            self.opened_at = None
            self.probe_out = False
            return CircuitState.CLOSED
        return None

    def failure(self, now: float, *, probe: bool) -> CircuitState | None:
        self.failures += 1
        if probe:
            self.opened_at = now
            self.probe_out = False
            return CircuitState.OPEN
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = now
            return CircuitState.OPEN
        # A late answer of a call sent before the circuit opened says nothing about KSeF now.
        return None

    def abandon_probe(self) -> None:
        """The probe ended without an answer (cancelled): let the next caller probe instead."""
        self.probe_out = False


_Key = tuple[str | None, str]


def _key(context: str | None, group: EndpointGroup) -> _Key:
    # KSeF limits its public endpoints (challenge, KSeF-token and XAdES submission) per IP, not per context
    # (REFERENCE.md §13): they share one window, or 200 clients authenticating at once get 200 times the allowance.
    return (None if group is EndpointGroup.PUBLIC else context, group.value)


@dataclass
class _Penalty:
    """A 429 block of one (context, group)."""

    blocked_until: float = 0.0
    streak: int = 0


@dataclass(eq=False)
class _Waiter:
    environment: str
    context: str | None
    group: EndpointGroup
    band: float
    seq: int
    arrived_at: float
    deadline: float | None
    probe: bool
    future: asyncio.Future[_Ticket]
    # Full jitter after a failure: one draw per waiter per failure.
    jitter_epoch: int = -1
    jitter_s: float = 0.0

    @property
    def key(self) -> _Key:
        return _key(self.context, self.group)


@dataclass(eq=False)
class _Environment:
    name: str
    circuit: CircuitBreaker
    waiters: list[_Waiter] = field(default_factory=list)
    in_flight: int = 0
    # Round-robin: the turn at which each context was last served; never served = -1, first in line.
    last_served: dict[str | None, int] = field(default_factory=dict)
    turn: int = 0
    failure_epoch: int = 0
    last_failure_at: float = 0.0
    # A 5xx with Retry-After (e.g. 503 during maintenance) holds the whole environment.
    blocked_until: float = 0.0
    wakeup: asyncio.Task[None] | None = None
    wakeup_at: float = math.inf


class _Ticket:
    """The slot a caller holds; ``report`` once with the outcome."""

    def __init__(self, budget: RateBudget, waiter: _Waiter, hit: Hit | None) -> None:
        self._budget = budget
        self.waiter = waiter
        self.hit = hit
        self.reported = False
        self.released = False

    def report(self, *, status: int | None, retry_after_s: float | None = None) -> None:
        if self.reported:
            return
        self.reported = True
        self._budget._on_report(self, status, retry_after_s)


class RateBudget:
    """The limiter behind ``Budget`` (see the module docstring for the rules)."""

    def __init__(
        self, settings: BudgetSettings, clock: BudgetClock | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.settings = settings
        self.clock: BudgetClock = clock or MonotonicClock()
        self._table: dict[str, Limits] | None = settings.limit_table()
        self._rng = rng or random.Random()
        self._windows: dict[_Key, SlidingWindows] = {}
        self._penalties: dict[_Key, _Penalty] = {}
        self._environments: dict[str, _Environment] = {}
        self._seq = 0
        self._releases = 0
        self._quiet_until = self.clock.now() + settings.restart_quiet_s

    # -- the Budget protocol ----------------------------------------------------------------------------------

    def slot(
        self,
        *,
        environment: str,
        context: str | None,
        group: EndpointGroup,
        priority: float = 0.0,
        max_wait_s: float | None = None,
    ) -> AbstractAsyncContextManager[Slot]:
        return self._slot(str(environment), context, EndpointGroup(group), priority, max_wait_s)

    @asynccontextmanager
    async def _slot(
        self, environment: str, context: str | None, group: EndpointGroup, priority: float, max_wait_s: float | None
    ) -> AsyncIterator[Slot]:
        if self._table is None or group in _UNMETERED:
            yield _NoteOnly()
            return
        ticket = await self._acquire(environment, context, group, priority, max_wait_s)
        try:
            yield ticket
        finally:
            self._release(ticket)

    async def aclose(self) -> None:
        """Stop the wake-up timers (the gateway is stopping); callers still waiting are cancelled by their owners."""
        tasks = [env.wakeup for env in self._environments.values() if env.wakeup is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for env in self._environments.values():
            env.wakeup = None
            env.wakeup_at = math.inf

    # -- what the API shows -----------------------------------------------------------------------------------

    def remaining(self, context: str | None, group: EndpointGroup | str) -> dict[str, Any]:
        """The budget left for (context, group): per window the usable limit, the calls counted and what is left,
        how long a 429 still blocks it, and when the next call could go."""
        group = EndpointGroup(group)
        now = self.clock.now()
        if self._table is None or group in _UNMETERED:
            return {"group": group.value, "limited": False}
        key = _key(context, group)
        windows = self._windows.get(key) or self._new_windows(group)
        penalty = self._penalties.get(key)
        blocked_until = penalty.blocked_until if penalty else 0.0
        free_at = max(windows.free_at(now), blocked_until)
        return {
            "group": group.value,
            "limited": True,
            "windows": {
                usage.name: {"limit": usage.limit, "used": usage.used, "remaining": usage.remaining}
                for usage in windows.usage(now)
            },
            "blocked_for_s": round(max(0.0, blocked_until - now), 3),
            "next_slot_in_s": round(max(0.0, free_at - now), 3) if math.isfinite(free_at) else None,
        }

    def queued(self, environment: str) -> int:
        """Callers waiting for a slot in ``environment``."""
        env = self._environments.get(str(environment))
        return len(env.waiters) if env else 0

    def circuit_state(self, environment: str) -> CircuitState:
        env = self._environments.get(str(environment))
        return env.circuit.state(self.clock.now()) if env else CircuitState.CLOSED

    # -- admission --------------------------------------------------------------------------------------------

    def _new_windows(self, group: EndpointGroup) -> SlidingWindows:
        return SlidingWindows(self._limits(group), not_before=self._quiet_until)

    def _limits(self, group: EndpointGroup) -> Limits:
        assert self._table is not None
        return self._table[group.value]

    def _env(self, name: str) -> _Environment:
        env = self._environments.get(name)
        if env is None:
            circuit = CircuitBreaker(self.settings.circuit_failure_threshold, self.settings.circuit_cooldown_s)
            env = self._environments[name] = _Environment(name, circuit)
        return env

    def _band(self, priority: float) -> float:
        band_s = self.settings.priority_band_s
        return math.floor(priority / band_s) if band_s > 0 else priority

    async def _acquire(
        self, environment: str, context: str | None, group: EndpointGroup, priority: float, max_wait_s: float | None
    ) -> _Ticket:
        now = self.clock.now()
        env = self._env(environment)
        probe = env.circuit.admit(now)
        if probe is None:
            _REJECTED.add(1, {"environment": environment, "reason": "circuit_open"})
            raise CircuitOpen(environment, env.circuit.retry_after(now))
        self._seq += 1
        waiter = _Waiter(
            environment=environment,
            context=context,
            group=group,
            band=self._band(priority),
            seq=self._seq,
            arrived_at=now,
            deadline=None if max_wait_s is None else now + max(0.0, max_wait_s),
            probe=probe,
            future=asyncio.get_running_loop().create_future(),
        )
        if max_wait_s is not None:
            wait = self._eligible_at(env, waiter, now, {}) - now
            if wait > max_wait_s:
                if probe:
                    env.circuit.abandon_probe()
                _REJECTED.add(1, {"environment": environment, "reason": "budget_exhausted"})
                raise BudgetExhausted(context, group, _finite(wait))
        env.waiters.append(waiter)
        self._dispatch(env)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(future.result())
            else:
                self._drop_waiter(env, waiter)
                self._dispatch(env)
            raise

    def _drop_waiter(self, env: _Environment, waiter: _Waiter) -> None:
        if waiter in env.waiters:
            env.waiters.remove(waiter)
        if waiter.probe:
            env.circuit.abandon_probe()

    def _eligible_at(self, env: _Environment, waiter: _Waiter, now: float, free_at: dict[_Key, float]) -> float:
        """The earliest time this waiter could go, ignoring the in-flight cap. ``free_at`` caches the windows'
        answer per key within one dispatch round."""
        key = waiter.key
        if key not in free_at:
            windows = self._windows.get(key)
            # A key without windows yet has had no call: free once the restart pause is over (as _new_windows says).
            free_at[key] = windows.free_at(now) if windows is not None else max(now, self._quiet_until)
        at = max(now, free_at[key], env.blocked_until)
        penalty = self._penalties.get(key)
        if penalty is not None:
            at = max(at, penalty.blocked_until)
        if env.circuit.failures > 0 and not waiter.probe:
            if waiter.jitter_epoch != env.failure_epoch:
                exponent = min(env.circuit.failures - 1, 30)
                ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**exponent)
                waiter.jitter_epoch = env.failure_epoch
                waiter.jitter_s = self._rng.uniform(0.0, ceiling)
            at = max(at, env.last_failure_at + waiter.jitter_s)
        return at

    def _dispatch(self, env: _Environment) -> None:
        """Hand out every slot that can go now, fail the waiters that cannot, and sleep until the next change."""
        now = self.clock.now()
        if env.circuit.state(now) is CircuitState.OPEN:
            retry_after = env.circuit.retry_after(now)
            for waiter in env.waiters:
                if not waiter.future.done():
                    _REJECTED.add(1, {"environment": env.name, "reason": "circuit_open"})
                    waiter.future.set_exception(CircuitOpen(env.name, retry_after))
            env.waiters.clear()
            self._schedule(env, now, math.inf)
            return
        free_at: dict[_Key, float] = {}
        while env.in_flight < self.settings.max_in_flight and env.waiters:
            ready = [w for w in env.waiters if self._eligible_at(env, w, now, free_at) <= now]
            if not ready:
                break
            chosen = min(ready, key=lambda w: (w.band, env.last_served.get(w.context, -1), w.seq))
            self._grant(env, chosen, now)
            free_at.pop(chosen.key, None)
        next_change = math.inf
        for waiter in list(env.waiters):
            at = self._eligible_at(env, waiter, now, free_at)
            if waiter.deadline is not None and waiter.deadline <= now:
                env.waiters.remove(waiter)
                if waiter.probe:
                    env.circuit.abandon_probe()
                _REJECTED.add(1, {"environment": env.name, "reason": "budget_exhausted"})
                waiter.future.set_exception(BudgetExhausted(waiter.context, waiter.group, _finite(at - now)))
                continue
            if at > now:
                next_change = min(next_change, at)
            if waiter.deadline is not None:
                next_change = min(next_change, waiter.deadline)
        self._schedule(env, now, next_change)

    def _grant(self, env: _Environment, waiter: _Waiter, now: float) -> None:
        env.waiters.remove(waiter)
        key = waiter.key
        windows = self._windows.get(key)
        if windows is None:
            windows = self._windows[key] = self._new_windows(waiter.group)
        hit = windows.admit(now)
        env.in_flight += 1
        env.turn += 1
        env.last_served[waiter.context] = env.turn
        _WAITS.record(now - waiter.arrived_at, {"environment": env.name, "group": waiter.group.value})
        waiter.future.set_result(_Ticket(self, waiter, hit))

    def _schedule(self, env: _Environment, now: float, at: float) -> None:
        """One wake-up task per environment, at the earliest moment a waiter's situation changes by itself."""
        if env.wakeup is not None and not env.wakeup.done():
            if env.wakeup_at <= at:
                return
            env.wakeup.cancel()
        env.wakeup = None
        env.wakeup_at = math.inf
        if not math.isfinite(at):
            return

        async def wake() -> None:
            await self.clock.sleep(at - now)
            env.wakeup = None
            env.wakeup_at = math.inf
            self._dispatch(env)

        env.wakeup_at = at
        env.wakeup = asyncio.get_running_loop().create_task(wake(), name=f"ksef-budget-wakeup-{env.name}")

    # -- outcomes ---------------------------------------------------------------------------------------------

    def _on_report(self, ticket: _Ticket, status: int | None, retry_after_s: float | None) -> None:
        now = self.clock.now()
        waiter = ticket.waiter
        env = self._env(waiter.environment)
        settings = self.settings
        if status is None or status >= 500:
            env.failure_epoch += 1
            env.last_failure_at = now
            if status is not None and retry_after_s is not None and retry_after_s > 0:
                env.blocked_until = max(env.blocked_until, now + retry_after_s)
            self._circuit_changed(env, env.circuit.failure(now, probe=waiter.probe))
        else:
            if status == 429:
                # KSeF's blocks grow with repeated abuse (REFERENCE.md §13): always honour its Retry-After.
                penalty = self._penalties.setdefault(waiter.key, _Penalty())
                penalty.streak += 1
                if retry_after_s is not None and retry_after_s > 0:
                    delay = retry_after_s
                else:
                    delay = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** min(penalty.streak - 1, 30))
                penalty.blocked_until = max(penalty.blocked_until, now + delay)
                _RATE_LIMITED.add(1, {"environment": env.name, "group": waiter.group.value})
                log.warning(
                    "KSeF answered 429 for context %s group %s; blocking it for %.1f s",
                    waiter.context,
                    waiter.group.value,
                    delay,
                )
            elif (earlier := self._penalties.get(waiter.key)) is not None:
                if earlier.blocked_until <= now:
                    del self._penalties[waiter.key]
                else:
                    earlier.streak = 0
            # KSeF answered, so it is up: a 429 proves that as well as a 200 does.
            self._circuit_changed(env, env.circuit.success(probe=waiter.probe))
        self._dispatch(env)

    def _circuit_changed(self, env: _Environment, state: CircuitState | None) -> None:
        if state is None:
            return
        _CIRCUIT.add(1, {"environment": env.name, "state": state.value})
        if state is CircuitState.OPEN:
            log.warning(
                "KSeF %s: circuit open after %d consecutive failures; failing calls fast for %.0f s",
                env.name,
                env.circuit.failures,
                env.circuit.cooldown_s,
            )
        else:
            log.info("KSeF %s: circuit closed again", env.name)

    def _release(self, ticket: _Ticket) -> None:
        if ticket.released:
            return
        ticket.released = True
        now = self.clock.now()
        waiter = ticket.waiter
        env = self._env(waiter.environment)
        windows = self._windows.get(waiter.key)
        if windows is not None and ticket.hit is not None:
            windows.finish(ticket.hit, now)
        env.in_flight -= 1
        if waiter.probe and not ticket.reported:
            env.circuit.abandon_probe()
        self._releases += 1
        if self._releases % 1000 == 0:
            self._forget_idle(now)
        self._dispatch(env)

    def _forget_idle(self, now: float) -> None:
        for key, windows in list(self._windows.items()):
            windows.usage(now)  # prunes
            if windows.is_idle:
                del self._windows[key]
        for key, penalty in list(self._penalties.items()):
            if penalty.blocked_until <= now - self.settings.backoff_max_s:
                del self._penalties[key]


def _finite(seconds: float) -> float:
    # A window with limit 0 never frees up; an hour is the longest any KSeF window lasts.
    return max(0.0, seconds) if math.isfinite(seconds) else 3600.0
