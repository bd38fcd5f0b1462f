"""Background services that cannot die silently (issue 8, section 3).

``Supervisor.run(name, service)`` runs ``service()`` (a coroutine function) as a task.
If it raises, the failure is a ``ServiceFailed`` event (logged as ``service.failed``)
and the service is started again after a backoff: ``initial_backoff`` seconds, doubling
per consecutive failure up to ``max_backoff``; a run that lasted ``max_backoff`` seconds
or more resets the count. A service that returns is done. ``spawn`` runs one-shot work
(a stream handler): an exception there is logged as ``task.failed``, never lost.

Sleeps use the running loop's clock, so under the simulator a backoff is virtual time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from stack.node.events import EventBus, ServiceFailed

__all__ = ["Supervisor"]

log = structlog.get_logger("p2pstack.supervisor")


class Supervisor:
    def __init__(self, events: EventBus, *, initial_backoff: float = 1.0,
                 max_backoff: float = 60.0) -> None:
        self._events = events
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._services: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.restarts: dict[str, int] = {}

    @property
    def services(self) -> list[str]:
        """Names of the services running now (restarting ones included)."""
        return [name for name, task in self._services.items() if not task.done()]

    def run(self, name: str, service: Callable[[], Awaitable[None]]) -> None:
        """Run ``service`` under supervision; one service per name at a time."""
        current = self._services.get(name)
        if current is not None and not current.done():
            current.cancel()
        self._services[name] = asyncio.ensure_future(self._supervise(name, service))

    async def _supervise(self, name: str, service: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            try:
                await service()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # deliberately broad: no failure goes unseen
                if loop.time() - started >= self.max_backoff:
                    failures = 0
                failures += 1
                self.restarts[name] = self.restarts.get(name, 0) + 1
                delay = min(self.initial_backoff * 2 ** (failures - 1), self.max_backoff)
                self._events.emit(ServiceFailed(name, f"{type(exc).__name__}: {exc}",
                                                failures, delay), "warning")
            await asyncio.sleep(delay)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run one-shot work; its exception (other than cancellation) is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task.failed", error=f"{type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        """Cancel every service and task and wait for them to end."""
        tasks = [*self._services.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._services.clear()
