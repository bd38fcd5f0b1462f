"""The Clock seam: the one place p2pstack reads time (DESIGN.md section 2).

Protocol cores never read a clock; they take ``now`` as an argument. Drivers and the
``Node`` ask a ``Clock`` for ``now`` and hand it down. Time is Unix time in seconds
(float), so the same value serves timers and the timestamps inside signed records.
Under the simulator the clock is the virtual-time loop's, so an idle hour costs nothing.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "ManualClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Current time as Unix seconds."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to; for tests of code that takes a Clock."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = float(when)
