"""A controllable clock: real time plus an offset, or frozen at an instant (``/_sim/clock``).

Every time-driven transition in the simulator (challenge expiry, invoice processing, permanent storage, export
completion, token lifetimes) is computed from this clock on read, so moving it moves the whole world and the
state survives restarts without background tasks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen_at: datetime | None = None

    def now(self) -> datetime:
        if self.frozen_at is not None:
            return self.frozen_at
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> datetime:
        if self.frozen_at is not None:
            self.frozen_at += timedelta(seconds=seconds)
        else:
            self.offset += timedelta(seconds=seconds)
        return self.now()

    def set(self, instant: datetime, *, frozen: bool = False) -> datetime:
        if instant.tzinfo is None:
            raise ValueError("the instant needs a UTC offset")
        if frozen:
            self.frozen_at = instant.astimezone(UTC)
        else:
            self.frozen_at = None
            self.offset = instant.astimezone(UTC) - datetime.now(UTC)
        return self.now()

    def reset(self) -> datetime:
        self.offset = timedelta()
        self.frozen_at = None
        return self.now()

    def to_state(self) -> dict[str, str | float | None]:
        return {
            "offset_s": self.offset.total_seconds(),
            "frozen_at": self.frozen_at.isoformat() if self.frozen_at else None,
        }

    def load_state(self, state: dict[str, str | float | None]) -> None:
        offset = state.get("offset_s")
        self.offset = timedelta(seconds=float(offset or 0))
        frozen = state.get("frozen_at")
        self.frozen_at = datetime.fromisoformat(str(frozen)) if frozen else None


def iso(instant: datetime) -> str:
    """KSeF renders datetimes with an offset and 7 fractional digits (.NET); we keep microseconds + offset."""
    return instant.astimezone(UTC).isoformat()


def to_ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)
