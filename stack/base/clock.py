"""The Clock seam: the one place p2pstack reads time (DESIGN.md section 2).

Protocol cores never read a clock; they take ``now`` as an argument. Drivers and the
``Node`` ask a ``Clock`` and hand the value down. A clock has two readings:

``now()``
    Wall time, Unix seconds (float): for what must mean the same instant to another
    machine, i.e. the timestamps inside signed records and certificate validity.
``monotonic()``
    Seconds from an arbitrary origin that never jumps or runs backwards: for every timer,
    deadline, timeout and idle measurement. A wall clock stepped by NTP or by hand would
    fire such timers early or late; a monotonic one cannot.

Under the simulator both come from the virtual-time loop, so an idle hour costs nothing.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "ManualClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Current wall time as Unix seconds (records, certificates)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never decreasing (timers, deadlines)."""
        ...


class SystemClock:
    """The real clocks. ``monotonic`` is ``time.monotonic``, the clock asyncio's default
    event loop schedules on, so deadlines taken from it match ``loop.call_later``."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; for tests of code that takes a Clock.

    ``advance`` moves both readings. ``set`` steps the wall time; a step forward moves
    the monotonic reading by as much, a step back leaves it where it is (as a real wall
    clock stepped back by NTP does not move ``time.monotonic``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._monotonic = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds
        self._monotonic += seconds

    def set(self, when: float) -> None:
        when = float(when)
        self._monotonic += max(0.0, when - self._now)
        self._now = when
