"""The asyncio driver of ``DhtCore`` (DESIGN.md section 2: thin glue, one timer).

It receives the DHT's datagrams from the node's ``PortDemux`` (first byte ``DHT_BYTE``),
feeds them to the core in batches, sends what the core produced once per batch, and keeps
one timer armed at ``core.next_timer()``. Time comes from the injected ``Clock`` (virtual
in simulations). Operation results come back as core events and resolve futures.

Composition (what ``stack.node`` does)::

    demux = PortDemux()
    endpoint = await network.bind(addr, demux)
    dht = DhtDriver(core, endpoint, clock)
    demux.register_p2p(DHT_BYTE, dht.receive_batch)

``open_dht`` does exactly that for a stand-alone DHT node (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from discovery.core import DhtConfig, DhtCore
from discovery.errors import (BootstrapFailed, DhtTimeout, InvalidRecord, PublishFailed,
                              RecordNotFound)
from discovery.events import (BootstrapDone, Event, GetDone, LookupDone, PeerInfo, PutDone,
                              RecordRefreshDue)
from discovery.records import RecordValidator
from stack.base.clock import Clock
from stack.base.identity import Identity, PeerId
from stack.base.net import Address, Datagram, DatagramEndpoint, DatagramNetwork
from stack.base.port import DHT_BYTE, PortDemux

__all__ = ["DhtDriver", "open_dht"]


class DhtDriver:
    __slots__ = ("core", "endpoint", "clock", "_loop", "_waiters", "_timer", "_timer_at",
                 "_record_source", "_closed")  # one per simulated node

    def __init__(self, core: DhtCore, endpoint: DatagramEndpoint, clock: Clock) -> None:
        self.core = core
        self.endpoint = endpoint
        self.clock = clock
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[int, asyncio.Future[Event]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._record_source: Callable[[], bytes] | None = None
        self._closed = False

    # ---- plumbing -------------------------------------------------------------------

    def receive_batch(self, batch: list[Datagram]) -> None:
        """A ``stack.base.net.Receiver`` for the demux: DHT datagrams only."""
        if self._closed:
            return
        now = self.clock.now()
        for data, addr in batch:
            self.core.receive(data, addr, now)
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed:
            return
        self.core.handle_timer(self.clock.now())
        self._flush()

    def _flush(self) -> None:
        core = self.core
        send = self.endpoint.send
        for data, addr in core.outgoing():
            send(data, addr)
        while (event := core.next_event()) is not None:
            if isinstance(event, RecordRefreshDue):
                if self._record_source is not None:
                    core.publish(self._record_source(), self.clock.now())
                    for data, addr in core.outgoing():
                        send(data, addr)
                continue
            waiter = self._waiters.pop(event.op, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)
        # Re-arm only for an earlier deadline. Most batches add an RPC (a later deadline)
        # or answer one (the head moves later); a timer left early fires, finds nothing
        # due (handle_timer is then a no-op) and re-arms here: one timer per wake-up
        # instead of a cancel and a new timer per datagram.
        when = core.next_timer()
        if when is not None and (self._timer_at is None or when < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_later(max(0.0, when - self.clock.now()),
                                                self._on_timer)

    def _start(self, op: int) -> asyncio.Future[Event]:
        # Register the waiter before flushing: an op may finish at once (empty table).
        future = self._waiters[op] = self._loop.create_future()
        self._flush()
        return future

    async def _run(self, future: asyncio.Future[Event], timeout: float) -> Event:
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise DhtTimeout(f"DHT operation did not finish within {timeout:g} s") from None

    # ---- API ------------------------------------------------------------------------

    async def bootstrap(self, addrs: list[Address], timeout: float = 30.0) -> int:
        """Join through ``addrs``; returns the routing-table size. ``BootstrapFailed``."""
        event = await self._run(self._start(self.core.bootstrap(list(addrs), self.clock.now())),
                                timeout)
        assert isinstance(event, BootstrapDone)
        if event.error:
            raise BootstrapFailed(f"no bootstrap node answered ({len(addrs)} tried)")
        return event.peers

    async def publish(self, record: bytes, timeout: float = 30.0) -> int:
        """Store our signed announcement and keep re-publishing it; returns the replica
        count. ``InvalidRecord`` for a record we would refuse ourselves, ``PublishFailed``."""
        event = await self._run(self._start(self.core.publish(record, self.clock.now())),
                                timeout)
        return _stored(event)

    def set_record_source(self, source: Callable[[], bytes] | None) -> None:
        """``source()`` returns a freshly signed record (higher seq) when ours ages out."""
        self._record_source = source

    async def resolve(self, peer_id: PeerId | bytes, timeout: float = 30.0) -> bytes:
        """The verified record with the highest seq under ``peer_id``'s DHT key.
        ``RecordNotFound``, ``DhtTimeout``."""
        pid = peer_id if isinstance(peer_id, PeerId) else PeerId.from_bytes(peer_id)
        key = pid.dht_key
        event = await self._run(self._start(self.core.get(key, self.clock.now())), timeout)
        assert isinstance(event, GetDone)
        if event.record is None:
            raise RecordNotFound(f"no record for {pid}")
        return event.record

    async def get(self, key: bytes, timeout: float = 30.0) -> bytes:
        """The verified record with the highest seq under the 32-byte ``key``.
        ``RecordNotFound`` (with the codes of the invalid records offered), ``DhtTimeout``."""
        event = await self._run(self._start(self.core.get(key, self.clock.now())), timeout)
        assert isinstance(event, GetDone)
        if event.record is None:
            raise RecordNotFound(f"no record under {key.hex()[:16]}...", event.rejected)
        return event.record

    async def put(self, record: bytes, timeout: float = 30.0) -> int:
        """Store a signed record once on the k nodes closest to its key (the caller
        re-puts it: nothing is re-published); returns the replica count.
        ``InvalidRecord``, ``PublishFailed`` as for ``publish``."""
        event = await self._run(self._start(self.core.put(record, self.clock.now())),
                                timeout)
        return _stored(event)

    async def lookup(self, target: bytes, timeout: float = 30.0) -> tuple[PeerInfo, ...]:
        """The k peers closest to a 32-byte key that answered."""
        event = await self._run(self._start(self.core.start_lookup(target, self.clock.now())),
                                timeout)
        assert isinstance(event, LookupDone)
        return event.peers

    def close(self) -> None:
        """Stop timers; pending operations fail with ``DhtTimeout`` at their timeout."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def open_dht(network: DatagramNetwork, addr: Address, identity: Identity,
                   validator: RecordValidator, clock: Clock, rng: random.Random,
                   config: DhtConfig = DhtConfig()) -> DhtDriver:
    """A stand-alone DHT node on its own endpoint (the caller closes ``driver.endpoint``)."""
    demux = PortDemux()
    endpoint = await network.bind(addr, demux)
    driver = DhtDriver(DhtCore(identity, validator, rng, config), endpoint, clock)
    demux.register_p2p(DHT_BYTE, driver.receive_batch)
    return driver


def _stored(event: object) -> int:
    """A put's replica count, or its failure named (``publish`` and ``put``)."""
    assert isinstance(event, PutDone)
    if event.error in ("no_peers", "rejected"):
        raise PublishFailed(f"no DHT node accepted the record ({event.error})")
    if event.error:
        raise InvalidRecord(f"record refused: {event.error}")
    return event.stored
