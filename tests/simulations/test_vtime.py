"""The virtual-time event loop: time jumps, asyncio primitives, deadlock and limits."""

import asyncio
import itertools
import time

import pytest

from simulations.errors import DeadlockError, SimulationError, TimeLimitError
from simulations.vtime import VirtualEventLoop, current_clock, run_virtual


def test_an_idle_simulated_hour_jumps():
    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        t0 = loop.time()
        await asyncio.sleep(3600)
        return t0, loop.time()

    t0, t1 = run_virtual(main())
    assert t0 == 0.0
    assert t1 == 3600.0  # exactly: the loop lands on the timer


def test_a_simulated_day_of_periodic_timers_keeps_order_and_exact_times():
    async def main():
        loop = asyncio.get_running_loop()
        ticks = []
        for _ in range(24 * 60):
            await asyncio.sleep(60)
            ticks.append(loop.time())
        return ticks

    ticks = run_virtual(main())
    assert len(ticks) == 1440
    assert ticks[-1] == pytest.approx(86400.0, abs=1e-6)
    assert all(b - a == pytest.approx(60.0, abs=1e-9) for a, b in itertools.pairwise(ticks))


def test_clock_reads_start_plus_loop_time():
    async def main():
        clock = current_clock()
        before = clock.now()
        await asyncio.sleep(10.5)
        return before, clock.now()

    assert run_virtual(main(), start=1_000.0) == (1_000.0, 1_010.5)


def test_current_clock_outside_a_virtual_loop_is_an_error():
    with pytest.raises(SimulationError, match="running virtual event loop"):
        current_clock()

    async def main():
        current_clock()

    with pytest.raises(SimulationError, match="not a VirtualEventLoop"):
        asyncio.run(main())


def test_wait_for_times_out_in_virtual_time():
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 30)
        t = loop.time()
        async with asyncio.timeout(5):
            await asyncio.sleep(1)
        return t, loop.time()

    assert run_virtual(main()) == (30.0, 31.0)


def test_tasks_events_and_queues_interleave_by_virtual_time():
    async def main():
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = asyncio.Event()
        log = []

        async def producer(name, period, count):
            for i in range(count):
                await asyncio.sleep(period)
                await queue.put((loop.time(), name, i))

        async def consumer():
            while len(log) < 6:
                log.append(await queue.get())
            done.set()

        tasks = [asyncio.create_task(producer("a", 2.0, 3)),
                 asyncio.create_task(producer("b", 3.0, 3)),
                 asyncio.create_task(consumer())]
        await done.wait()
        await asyncio.gather(*tasks)
        return log

    log = run_virtual(main())
    # at 6.0 both are due: b's timer was scheduled first (at 3.0, a's at 4.0)
    assert [(t, n) for t, n, _ in log] == [(2.0, "a"), (3.0, "b"), (4.0, "a"), (6.0, "b"),
                                           (6.0, "a"), (9.0, "b")]


def test_call_later_and_call_at_fire_at_their_virtual_times():
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        done = loop.create_future()
        loop.call_later(5, lambda: fired.append(("later", loop.time())))
        loop.call_at(2.5, lambda: fired.append(("at", loop.time())))
        loop.call_later(7, done.set_result, None)
        await done
        return fired

    assert run_virtual(main()) == [("at", 2.5), ("later", 5.0)]


def test_deadlock_is_detected_and_names_the_waiting_task():
    async def stuck_forever():
        await asyncio.Event().wait()

    with pytest.raises(DeadlockError, match="stuck_forever"):
        run_virtual(stuck_forever())


def test_deadlock_after_timers_ran_out():
    async def main():
        await asyncio.sleep(100)
        await asyncio.get_running_loop().create_future()

    with pytest.raises(DeadlockError, match=r"virtual time 100\.0"):
        run_virtual(main())


def test_max_time_bounds_the_simulated_duration():
    async def main():
        while True:
            await asyncio.sleep(60)

    with pytest.raises(TimeLimitError, match="max_time=3600"):
        run_virtual(main(), max_time=3600)


def test_executor_jobs_are_awaited_not_mistaken_for_deadlock():
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, time.sleep, 0.01)

    assert run_virtual(main()) is None


def test_exceptions_propagate_and_leftover_tasks_are_cancelled():
    cancelled = []
    leftovers = []  # referenced, so only run_virtual's clean-up can end the task

    async def background():
        try:
            await asyncio.sleep(1e9)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        leftovers.append(asyncio.create_task(background()))
        await asyncio.sleep(1)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_virtual(main())
    assert cancelled == [True]
