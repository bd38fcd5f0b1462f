"""``next_event`` (issue 8, section 2) and the supervisor (section 3), without sockets."""

from __future__ import annotations

import asyncio

import pytest

from stack.base.identity import Identity
from stack.node.events import AnnouncementPublished, EventBus, ServiceFailed
from stack.node.supervisor import Supervisor

PEER = Identity.from_seed(b"\x01" * 32).peer_id


def published(seq: int) -> AnnouncementPublished:
    return AnnouncementPublished(PEER, seq, 1, ())


async def test_next_event_registers_when_called_and_matches_fields() -> None:
    bus = EventBus()
    second = bus.next_event(AnnouncementPublished, seq=2, timeout=1)
    bus.emit(published(1))          # emitted before anyone awaits: still seen
    bus.emit(ServiceFailed("x", "boom", 1, 1.0))
    bus.emit(published(2))
    assert (await second).seq == 2
    assert bus._waiters == []       # a settled waiter unregisters


async def test_next_event_times_out_with_timeout_error_and_unregisters() -> None:
    bus = EventBus()
    waiter = bus.next_event(AnnouncementPublished, seq=9, timeout=0.01)
    bus.emit(published(1))
    with pytest.raises(TimeoutError):
        await waiter
    assert bus._waiters == []


async def test_a_cancelled_waiter_is_forgotten() -> None:
    bus = EventBus()
    bus.next_event(AnnouncementPublished).cancel()
    assert bus._waiters == []


async def test_a_failing_service_is_restarted_with_backoff_and_reported() -> None:
    bus = EventBus()
    supervisor = Supervisor(bus, initial_backoff=0.001, max_backoff=0.004)
    runs = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 4:
            raise RuntimeError(f"failure {len(runs)}")
        done.set()

    failures = bus.subscribe()
    supervisor.run("flaky", flaky)
    await asyncio.wait_for(done.wait(), 5)
    events = [failures.get_nowait() for _ in range(failures.qsize())]
    assert [e.failures for e in events] == [1, 2, 3]
    assert [e.retry_in for e in events] == [0.001, 0.002, 0.004]
    assert events[0].error == "RuntimeError: failure 1" and events[0].service == "flaky"
    assert supervisor.restarts == {"flaky": 3}
    await supervisor.stop()
    assert supervisor.services == []


async def test_stop_cancels_services_and_tasks() -> None:
    supervisor = Supervisor(EventBus())
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    supervisor.run("forever", forever)
    task = supervisor.spawn(asyncio.Event().wait())
    await asyncio.wait_for(started.wait(), 5)
    assert supervisor.services == ["forever"]
    await supervisor.stop()
    assert supervisor.services == [] and task.cancelled()
