"""Everything a request handler needs, hung on ``app.state.sim``."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import Request

from ksef_sim.clock import Clock
from ksef_sim.crypto import MinistryKeys
from ksef_sim.presign import Presigner
from ksef_sim.ratelimit import RateLimiter
from ksef_sim.security import TokenService
from ksef_sim.settings import SimSettings
from ksef_sim.store import Store


@dataclass
class Faults:
    """Operator-injected faults (``/_sim/faults``); see ``ksef_sim.api.operator``."""

    outage: bool = False  # every /v2 call answers 503; Latarnia reports FAILURE
    outage_message: str | None = None
    latency_ms: int = 0  # added to every /v2 call
    error_rate: float = 0.0  # fraction of /v2 calls answered 500/503 at random
    stuck_exports: bool = False  # new exports stay at status 100 until cleared
    outage_kind: str = "FAILURE"  # FAILURE | TOTAL_FAILURE | MAINTENANCE: what Latarnia reports during the outage
    outage_retry_after_s: int = 60  # the Retry-After of the outage's 503 answers
    # Sessions opened while set get a key taken as undecryptable: 201, then status 415 (REFERENCE.md §4).
    refuse_session_keys: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "outage": self.outage,
            "outageMessage": self.outage_message,
            "latencyMs": self.latency_ms,
            "errorRate": self.error_rate,
            "stuckExports": self.stuck_exports,
            "kind": self.outage_kind,
            "retryAfterSeconds": self.outage_retry_after_s,
            "refuseSessionKeys": self.refuse_session_keys,
        }


@dataclass
class Traffic:
    """What the ``/v2`` API answered since start, by HTTP status (``/_sim/stats``): lets a test assert that a
    client never drew a 429 from the limits, or how many calls still reached KSeF during an outage."""

    by_status: Counter[int] = field(default_factory=Counter)

    def record(self, status: int) -> None:
        self.by_status[status] += 1


@dataclass
class Sim:
    settings: SimSettings
    store: Store
    clock: Clock
    keys: MinistryKeys
    tokens: TokenService
    presigner: Presigner
    limiter: RateLimiter
    faults: Faults = field(default_factory=Faults)
    traffic: Traffic = field(default_factory=Traffic)
    rng: random.Random = field(default_factory=random.Random)

    @classmethod
    def open(cls, settings: SimSettings) -> Sim:
        store = Store(settings.database_path)
        clock = Clock()
        clock_state = store.get_meta("clock")
        if clock_state:
            clock.load_state(clock_state)
        return cls(
            settings=settings,
            store=store,
            clock=clock,
            keys=MinistryKeys.load_or_create(store, clock.now()),
            tokens=TokenService(store),
            presigner=Presigner(store),
            limiter=RateLimiter.load(settings.rate_limits, store),
            rng=random.Random(settings.random_seed),
        )

    def close(self) -> None:
        self.store.close()

    def save_clock(self) -> None:
        self.store.set_meta("clock", self.clock.to_state())

    def public_base_url(self, request: Request) -> str:
        """Host root for URLs the API hands out: configured, else the host that was called (like the real one).

        Includes the mount prefix when the simulator runs inside the embedded runner (``/ksef-sim``).
        """
        if self.settings.public_base_url:
            return self.settings.public_base_url.rstrip("/")
        # Not request.base_url: since Starlette 0.33 it is built on ``app_root_path``, the OUTER app's root, so it
        # drops the mount prefix; the scope's ``root_path`` includes it.
        url = request.url
        return f"{url.scheme}://{url.netloc}{request.scope.get('root_path', '')}".rstrip("/")

    def seconds(self, value: float) -> timedelta:
        return timedelta(seconds=value)


def get_sim(request: Request) -> Sim:
    sim: Sim = request.app.state.sim
    return sim
