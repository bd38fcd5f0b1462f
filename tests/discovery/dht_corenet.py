"""An in-memory, discrete-event network of ``DhtCore``s (no asyncio, no sockets, no sleep).

Pair and small-network tests drive cores through it (h11's ``ConnectionPair`` idea):
datagrams arrive after ``latency`` (+ uniform ``jitter``), are lost with probability
``loss``, and vanish at crashed nodes. ``run_until`` advances virtual time event by event.
"""

from __future__ import annotations

import heapq
import itertools
import random

from discovery.core import DhtConfig, DhtCore
from discovery.records import RecordValidator
from stack.base.identity import Identity
from stack.base.net import Address


class CoreNet:
    def __init__(self, rng: random.Random, latency: float = 0.02, jitter: float = 0.01,
                 loss: float = 0.0, start: float = 1_700_000_000.0) -> None:
        self.rng = rng
        self.latency, self.jitter, self.loss = latency, jitter, loss
        self.now = start
        self.cores: dict[Address, DhtCore] = {}
        self.crashed: set[Address] = set()
        self.sent = 0
        self.events: dict[Address, list] = {}
        self._queue: list = []
        self._seq = itertools.count()
        self._timer_at: dict[Address, float | None] = {}
        self.taps: list = []  # callables (data, src, dst) seeing every datagram

    def add(self, identity: Identity, validator: RecordValidator,
            config: DhtConfig = DhtConfig()) -> tuple[DhtCore, Address]:
        addr = (f"10.{len(self.cores) // 250}.{len(self.cores) % 250}.1", 4001)
        core = DhtCore(identity, validator, random.Random(self.rng.random()), config)
        self.cores[addr] = core
        self.events[addr] = []
        self._timer_at[addr] = None
        return core, addr

    def inject(self, data: bytes, src: Address, dst: Address) -> None:
        """Deliver a datagram from outside (an attacker) after the usual latency."""
        self._push(self.now + self.latency, ("dgram", data, src, dst))

    def kick(self, addr: Address) -> None:
        """Flush ``addr``'s core after an API call on it."""
        self._after(addr)

    def _push(self, when: float, item: tuple) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), item))

    def _after(self, addr: Address) -> None:
        core = self.cores[addr]
        for data, dst in core.outgoing():
            self.sent += 1
            for tap in self.taps:
                tap(data, addr, dst)
            if self.loss and self.rng.random() < self.loss:
                continue
            delay = self.latency + self.rng.uniform(0, self.jitter)
            self._push(self.now + delay, ("dgram", data, addr, dst))
        while (event := core.next_event()) is not None:
            self.events[addr].append(event)
        when = core.next_timer()
        if when != self._timer_at[addr]:
            self._timer_at[addr] = when
            if when is not None:
                self._push(max(when, self.now), ("timer", addr, when))

    def run_until(self, until: float) -> None:
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, item = heapq.heappop(queue)
            self.now = max(self.now, when)
            if item[0] == "dgram":
                _, data, src, dst = item
                if dst in self.crashed or dst not in self.cores:
                    continue
                self.cores[dst].receive(data, src, self.now)
                self._after(dst)
            else:
                _, addr, at = item
                if self._timer_at.get(addr) != at or addr in self.crashed:
                    continue
                self._timer_at[addr] = None
                self.cores[addr].handle_timer(self.now)
                self._after(addr)
        self.now = max(self.now, until)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def wait(self, addr: Address, op: int, limit: float = 120.0):
        """Run until ``addr``'s core reports the event of ``op``; return it."""
        deadline = self.now + limit
        while True:
            for event in self.events[addr]:
                if getattr(event, "op", None) == op:
                    self.events[addr].remove(event)
                    return event
            if not self._queue or self._queue[0][0] > deadline:
                raise AssertionError(f"op {op} at {addr} did not finish")
            self.run_until(self._queue[0][0])
