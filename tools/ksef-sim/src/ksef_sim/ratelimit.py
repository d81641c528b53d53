"""KSeF's request limits (REFERENCE.md §13): per (context, IP) for protected endpoints, per IP for public ones,
in sliding windows of 1 s, 60 s and 60 min enforced together; 429 with ``Retry-After`` when any is full.

Windows run on the simulator clock so tests can advance time instead of waiting. Counters live in memory: a
restart forgives past requests, as a new node would. The configuration (global mode and table, and the per-context
values set through ``/testdata/rate-limits``) is kept in the store meta so it survives restarts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ksef_sim.errors import TooManyRequests
from ksef_sim.settings import RateLimitMode

if TYPE_CHECKING:
    from ksef_sim.store import Store

META_KEY = "rate_limits"


@dataclass(frozen=True)
class Limit:
    per_second: int
    per_minute: int
    per_hour: int

    def as_json(self) -> dict[str, int]:
        return {"perSecond": self.per_second, "perMinute": self.per_minute, "perHour": self.per_hour}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limit:
        return cls(int(data["perSecond"]), int(data["perMinute"]), int(data["perHour"]))


class Group(StrEnum):
    ONLINE_SESSION = "onlineSession"
    BATCH_SESSION = "batchSession"
    INVOICE_SEND = "invoiceSend"
    INVOICE_STATUS = "invoiceStatus"
    SESSION_LIST = "sessionList"
    SESSION_INVOICE_LIST = "sessionInvoiceList"
    SESSION_MISC = "sessionMisc"
    INVOICE_METADATA = "invoiceMetadata"
    INVOICE_EXPORT = "invoiceExport"
    INVOICE_EXPORT_STATUS = "invoiceExportStatus"
    INVOICE_DOWNLOAD = "invoiceDownload"
    OTHER = "other"
    PUBLIC = "public"  # unauthenticated endpoints, per IP; not part of GET /rate-limits


PRODUCTION_LIMITS: dict[Group, Limit] = {
    Group.ONLINE_SESSION: Limit(10, 30, 120),
    Group.INVOICE_SEND: Limit(10, 30, 180),
    Group.BATCH_SESSION: Limit(10, 20, 60),
    Group.INVOICE_STATUS: Limit(30, 120, 1200),
    Group.SESSION_LIST: Limit(5, 10, 60),
    Group.SESSION_INVOICE_LIST: Limit(10, 20, 200),
    Group.SESSION_MISC: Limit(10, 120, 1200),
    Group.INVOICE_METADATA: Limit(8, 16, 20),
    Group.INVOICE_EXPORT: Limit(8, 16, 20),
    Group.INVOICE_EXPORT_STATUS: Limit(10, 60, 600),
    Group.INVOICE_DOWNLOAD: Limit(8, 16, 64),
    Group.OTHER: Limit(10, 30, 120),
    Group.PUBLIC: Limit(60, 3600, 216000),
}

# The groups GET /rate-limits reports and POST /testdata/rate-limits sets (spec: EffectiveApiRateLimits).
API_GROUPS: tuple[Group, ...] = tuple(g for g in Group if g is not Group.PUBLIC)

_WINDOWS = ((1.0, "per_second", "sekundę"), (60.0, "per_minute", "minutę"), (3600.0, "per_hour", "godzinę"))


def _table_json(table: dict[Group, Limit]) -> dict[str, dict[str, int]]:
    return {group.value: limit.as_json() for group, limit in table.items()}


def _table_from_json(data: dict[str, Any]) -> dict[Group, Limit]:
    known = {group.value for group in Group}
    return {Group(name): Limit.from_json(values) for name, values in data.items() if name in known}


def context_of(key: str) -> str | None:
    """The context part of a limiter key: ``context|ip`` for protected endpoints, bare ``ip`` for public ones."""
    context, separator, _ = key.rpartition("|")
    return context if separator else None


class RateLimiter:
    def __init__(self, mode: RateLimitMode) -> None:
        self.mode = mode
        self.custom: dict[Group, Limit] = dict(PRODUCTION_LIMITS)
        # ``/testdata/rate-limits`` acts on the caller's context only (spec: "dla bieżącego kontekstu"); keyed by
        # ``{type}:{value}``, the same prefix the access dependency puts in front of the IP.
        self.context_limits: dict[str, dict[Group, Limit]] = {}
        self._hits: dict[tuple[Group, str], deque[float]] = {}
        # Operator fault: answer 429 to the next N limited requests whatever the counters say.
        self.forced_429s = 0
        self._store: Store | None = None
        self._configured_mode = mode

    # -- configuration -------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, mode: RateLimitMode, store: Store) -> RateLimiter:
        """A limiter bound to ``store``: restores the saved configuration and saves every later change.

        The saved global mode wins only while the configured one (settings) is the one it was saved under, so
        restarting with another ``KSEF_SIM_RATE_LIMITS`` takes effect.
        """
        limiter = cls(mode)
        state = store.get_meta(META_KEY)
        if isinstance(state, dict):
            limiter.custom = {**PRODUCTION_LIMITS, **_table_from_json(state.get("custom") or {})}
            limiter.context_limits = {
                context: {**PRODUCTION_LIMITS, **_table_from_json(table)}
                for context, table in (state.get("contexts") or {}).items()
            }
            if state.get("configured_mode") == mode.value and state.get("mode") in {m.value for m in RateLimitMode}:
                limiter.mode = RateLimitMode(state["mode"])
        limiter._store = store
        return limiter

    def to_state(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "configured_mode": self._configured_mode.value,
            "custom": _table_json(self.custom),
            "contexts": {context: _table_json(table) for context, table in self.context_limits.items()},
        }

    def _save(self) -> None:
        if self._store is not None:
            self._store.set_meta(META_KEY, self.to_state())

    def effective(self, context: str | None = None) -> dict[Group, Limit]:
        """The table in force for ``context`` (``{type}:{value}``), or the global one."""
        if context is not None and context in self.context_limits:
            return dict(self.context_limits[context])
        return dict(self.custom if self.mode is RateLimitMode.CUSTOM else PRODUCTION_LIMITS)

    def set_custom(self, limits: dict[Group, Limit]) -> None:
        self.custom = {**PRODUCTION_LIMITS, **limits}
        self.mode = RateLimitMode.CUSTOM
        self._save()

    def reset(self, mode: RateLimitMode = RateLimitMode.PRODUCTION) -> None:
        self.mode = mode
        self.custom = dict(PRODUCTION_LIMITS)
        self.context_limits.clear()
        self._hits.clear()
        self._save()

    def set_context(self, context: str, limits: dict[Group, Limit]) -> None:
        """Per-context values (``/testdata/rate-limits[/production]``): enforced for that context even when the
        global mode is ``off``, because somebody asked for them explicitly."""
        self.context_limits[context] = {**PRODUCTION_LIMITS, **limits}
        self._save()

    def clear_context(self, context: str) -> None:
        """``DELETE /testdata/rate-limits``: the context falls back to the global defaults."""
        self.context_limits.pop(context, None)
        self._save()

    # -- counting ------------------------------------------------------------------------------------------------

    def hit(self, group: Group, key: str, now_s: float) -> None:
        """Count one request of ``key`` (``context|ip`` or ``ip``) in ``group``; raise 429 when over a window."""
        if self.forced_429s > 0:
            self.forced_429s -= 1
            raise TooManyRequests(1, "Przekroczono limit żądań (wymuszone przez operatora symulatora).")
        context = context_of(key)
        override = self.context_limits.get(context) if context is not None else None
        if override is not None:
            limit = override[group]
        elif self.mode is RateLimitMode.OFF:
            return
        else:
            limit = self.effective()[group]
        hits = self._hits.setdefault((group, key), deque())
        while hits and hits[0] <= now_s - 3600.0:
            hits.popleft()
        for window, attr, label in _WINDOWS:
            allowed: int = getattr(limit, attr)
            in_window = [t for t in hits if t > now_s - window] if window < 3600.0 else list(hits)
            if len(in_window) >= allowed:
                # The request fits again once the oldest hit that keeps the window full has slid out of it.
                oldest_blocking = in_window[len(in_window) - allowed] if allowed > 0 else now_s
                retry_after = max(1, math.ceil(round(oldest_blocking + window - now_s, 6)))
                raise TooManyRequests(
                    retry_after,
                    f"Przekroczono limit {allowed} żądań na {label}. Spróbuj ponownie po {retry_after} sekundach.",
                )
        hits.append(now_s)
