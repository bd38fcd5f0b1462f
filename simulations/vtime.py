"""Virtual time: an asyncio event loop whose clock jumps (DESIGN.md sections 2 and 7).

API
---
``run_virtual(main, *, start=1_700_000_000.0, max_time=None, network=None)``
    Run the coroutine ``main`` on a fresh ``VirtualEventLoop`` and return its result
    (or raise its exception). Remaining tasks are cancelled and the loop closed after.
    ``start`` is the Unix time that virtual time 0 stands for; ``max_time`` bounds the
    simulated seconds the run may last (``TimeLimitError`` past it); ``network`` is the
    ``SimNetwork`` that ``loop.create_datagram_endpoint`` binds on (a ``SimNetwork``
    created inside a running virtual loop registers itself when none is set).
``VirtualEventLoop``
    ``loop.time()`` is virtual seconds since the start of the run (starts at 0.0).
    When nothing is ready the loop does not block: it moves virtual time straight to the
    next scheduled callback, so ``asyncio.sleep``, ``call_later``, ``wait_for`` and
    ``asyncio.timeout`` cost no wall time. Timers due at the same instant run in the
    order they were scheduled (asyncio alone leaves ties unordered). Tasks, Events, Queues,
    Futures work unchanged.
    If nothing is ready, nothing is scheduled and no executor job is running, every
    task waits on something that can never happen: ``DeadlockError`` (naming the
    waiting tasks) instead of hanging. ``loop.clock`` is its ``VirtualClock``.
    ``loop.create_datagram_endpoint(factory, local_addr=(ip, port))`` returns a
    transport on the simulated network (see ``simulations.aio``), so unchanged asyncio
    code such as the ``kademlia`` package runs on it.
``VirtualClock``
    A ``stack.base.clock.Clock``: ``now() = start + loop.time()`` and
    ``monotonic() = loop.time()``, the loop's own clock, so a deadline taken from it is
    exactly the instant ``call_later`` lands on.
``current_clock()``
    The running virtual loop's clock (``SimulationError`` outside one).

Virtual time only advances between loop iterations; a callback that burns CPU does not
move it. Real file descriptors other than the loop's self-pipe are not supported, and
``call_soon_threadsafe`` from a thread is noticed while an executor job runs or when the
loop is otherwise idle.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

from simulations.errors import DeadlockError, SimulationError, TimeLimitError

__all__ = ["VirtualEventLoop", "VirtualClock", "run_virtual", "current_clock"]

T = TypeVar("T")

# asyncio caps one select() timeout at this (base_events.MAXIMUM_SELECT_TIMEOUT); a
# capped timeout is a plain jump, any other positive one aims at the next timer.
_MAX_SELECT = 24 * 3600


class _Timer(asyncio.TimerHandle):
    """A timer ordered by (when, scheduling order): ties run first-scheduled first.

    asyncio orders its timer heap by ``when`` alone, and a heap is not stable, so two
    datagrams sent back to back over a jitter-free link could overtake each other.
    """

    __slots__ = ("_seq",)
    # TimerHandle's own slots, undeclared in typeshed; the loop below reads them.
    _when: float
    _scheduled: bool

    def __init__(self, when, callback, args, loop, context, seq):
        super().__init__(when, callback, args, loop, context)
        self._seq = seq

    def __lt__(self, other):
        when, other_when = self._when, other._when
        return when < other_when or (when == other_when and self._seq < other._seq)


class VirtualClock:
    """``stack.base.clock.Clock`` reading a virtual loop: wall time is Unix seconds
    ``start + loop.time()``, monotonic time is ``loop.time()`` itself."""

    def __init__(self, loop: VirtualEventLoop, start: float) -> None:
        self._loop = loop
        self.start = float(start)

    def now(self) -> float:
        return self.start + self._loop.time()

    def monotonic(self) -> float:
        return self._loop.time()


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector (for the self-pipe); an idle wait becomes a time jump."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualEventLoop | None = None

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None):
        loop = self.loop
        assert loop is not None
        if loop._executor_jobs or timeout is None:
            # Only threads write to the self-pipe; skip the system call otherwise (it
            # would cost as much as the rest of a loop iteration).
            events = self._real.select(0)
            if events:
                return events
        if timeout == 0:
            return []
        if timeout is None:
            if loop._executor_jobs:
                # A thread will wake us through the self-pipe; wait for it for real.
                return self._real.select(None)
            raise DeadlockError(loop._deadlock_message())
        loop._advance(timeout)
        return []


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop on virtual time (see the module docstring)."""

    # asyncio.BaseEventLoop internals that _skip_to and _advance read (typeshed declares
    # no private attributes): the ready queue, the stop flag, the timer heap and the
    # count of cancelled timers still in it. Annotations only: nothing is set here.
    _ready: collections.deque[asyncio.Handle]
    _stopping: bool
    _scheduled: list[_Timer]  # every timer comes from call_at below
    _timer_cancelled_count: int

    def __init__(self, *, start: float = 1_700_000_000.0,
                 max_time: float | None = None, network: Any = None) -> None:
        selector = _VirtualSelector()
        self._vtime = 0.0
        self._max_time = max_time
        self._executor_jobs = 0
        self._timer_seq = itertools.count()
        super().__init__(selector)
        selector.loop = self
        # Our time is exact, so only float rounding needs slack when due timers are
        # collected (asyncio compares against time() + _clock_resolution).
        self._clock_resolution = 1e-9
        self.clock = VirtualClock(self, start)
        self.network = network

    def time(self) -> float:
        return self._vtime

    def call_at(self, when, callback, *args, context=None):
        """asyncio's ``call_at`` with a first-in-first-out order for equal times."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
        timer = _Timer(when, callback, args, self, context, next(self._timer_seq))
        if timer._source_traceback:
            del timer._source_traceback[-1]
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def _skip_to(self, when: float) -> bool:
        """Jump to ``when`` now if the loop's next step would be exactly that jump.

        True when nothing is ready, no live timer is due at or before ``when``, the loop
        is not stopping, no executor job runs and ``max_time`` allows it; the caller
        then does at once what a timer at ``when`` would have done. Used by
        ``SimNetwork`` to land back-to-back datagrams without a loop iteration each.
        """
        if self._ready or self._stopping or self._executor_jobs:
            return False
        scheduled = self._scheduled
        while scheduled and scheduled[0]._cancelled:  # what _run_once does first
            self._timer_cancelled_count -= 1
            heapq.heappop(scheduled)._scheduled = False
        if scheduled and scheduled[0]._when <= when:
            return False
        if self._max_time is not None and when > self._max_time:
            return False  # let the loop reach the limit and raise
        if when > self._vtime:
            self._vtime = when
        return True

    def _advance(self, timeout: float) -> None:
        if timeout < _MAX_SELECT and self._scheduled:
            # Land exactly on the timer asyncio is waiting for (no rounding drift).
            target = max(self._vtime, self._scheduled[0]._when)
        else:
            target = self._vtime + timeout
        if self._max_time is not None and target > self._max_time:
            raise TimeLimitError(
                f"virtual time would reach {target:.3f} s, past max_time={self._max_time} s")
        self._vtime = target

    def _deadlock_message(self) -> str:
        waiting = [t for t in asyncio.all_tasks(self) if not t.done()]
        names = ", ".join(sorted(repr(t.get_coro()) for t in waiting)[:5])
        return (f"deadlock at virtual time {self._vtime:.6f} s: nothing ready or scheduled "
                f"but {len(waiting)} task(s) wait: {names}")

    def run_in_executor(self, executor, func, *args):
        future = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1

        def done(_: asyncio.Future) -> None:
            self._executor_jobs -= 1

        future.add_done_callback(done)
        return future

    async def create_datagram_endpoint(self, protocol_factory, local_addr=None,
                                       remote_addr=None, **kwargs):
        """Bind on the simulated network; see ``simulations.aio.create_datagram_endpoint``."""
        from simulations.aio import create_datagram_endpoint

        return await create_datagram_endpoint(self, protocol_factory, local_addr, remote_addr,
                                              **kwargs)


def current_clock() -> VirtualClock:
    """The clock of the running virtual loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise SimulationError("current_clock() needs a running virtual event loop") from None
    if not isinstance(loop, VirtualEventLoop):
        raise SimulationError("current_clock(): the running loop is not a VirtualEventLoop")
    return loop.clock


def run_virtual(main: Coroutine[Any, Any, T], *, start: float = 1_700_000_000.0,
                max_time: float | None = None, network: Any = None) -> T:
    """Run ``main`` on a fresh virtual-time loop and return its result."""
    loop = VirtualEventLoop(start=start, max_time=max_time, network=network)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: VirtualEventLoop) -> None:
    """Cancel what is left and let it unwind (as asyncio.run does)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception in a task left at the end of run_virtual",
                "exception": task.exception(), "task": task})
