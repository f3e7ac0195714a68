"""Time, in one replaceable place, so tests can drive backoff and lifetimes."""
from __future__ import annotations

import time


class Clock:
    """Wall-clock seconds since the epoch."""

    def __call__(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that moves only when told (tests)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
