"""KSeF's request limits (REFERENCE.md §13): per (context, IP) for protected endpoints, per IP for public ones,
in sliding windows of 1 s, 60 s and 60 min enforced together; 429 with ``Retry-After`` when any is full.

Windows run on the simulator clock so tests can advance time instead of waiting. Counters live in memory: a
restart forgives past requests, as a new node would.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from ksef_sim.errors import TooManyRequests
from ksef_sim.settings import RateLimitMode


@dataclass(frozen=True)
class Limit:
    per_second: int
    per_minute: int
    per_hour: int

    def as_json(self) -> dict[str, int]:
        return {"perSecond": self.per_second, "perMinute": self.per_minute, "perHour": self.per_hour}


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

_WINDOWS = ((1.0, "per_second", "sekundę"), (60.0, "per_minute", "minutę"), (3600.0, "per_hour", "godzinę"))


class RateLimiter:
    def __init__(self, mode: RateLimitMode) -> None:
        self.mode = mode
        self.custom: dict[Group, Limit] = dict(PRODUCTION_LIMITS)
        self._hits: dict[tuple[Group, str], deque[float]] = {}
        # Operator fault: answer 429 to the next N limited requests whatever the counters say.
        self.forced_429s = 0

    def effective(self) -> dict[Group, Limit]:
        return dict(self.custom if self.mode is RateLimitMode.CUSTOM else PRODUCTION_LIMITS)

    def set_custom(self, limits: dict[Group, Limit]) -> None:
        self.custom = {**PRODUCTION_LIMITS, **limits}
        self.mode = RateLimitMode.CUSTOM

    def reset(self, mode: RateLimitMode = RateLimitMode.PRODUCTION) -> None:
        self.mode = mode
        self.custom = dict(PRODUCTION_LIMITS)
        self._hits.clear()

    def hit(self, group: Group, key: str, now_s: float) -> None:
        """Count one request of ``key`` (``context|ip`` or ``ip``) in ``group``; raise 429 when over a window."""
        if self.forced_429s > 0:
            self.forced_429s -= 1
            raise TooManyRequests(1, "Przekroczono limit żądań (wymuszone przez operatora symulatora).")
        if self.mode is RateLimitMode.OFF:
            return
        limit = self.effective()[group]
        hits = self._hits.setdefault((group, key), deque())
        while hits and hits[0] <= now_s - 3600.0:
            hits.popleft()
        for window, attr, label in _WINDOWS:
            allowed: int = getattr(limit, attr)
            in_window = [t for t in hits if t > now_s - window] if window < 3600.0 else list(hits)
            if len(in_window) >= allowed:
                retry_after = int(in_window[len(in_window) - allowed] + window - now_s) + 1
                raise TooManyRequests(
                    retry_after,
                    f"Przekroczono limit {allowed} żądań na {label}. Spróbuj ponownie po {retry_after} sekundach.",
                )
        hits.append(now_s)
