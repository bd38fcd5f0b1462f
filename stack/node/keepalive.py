"""Keep your mapping (issue 9 section 1): NAT keepalives from the node's own UDP port.

A NAT forgets a mapping some time after the last *outbound* datagram through it (RFC
4787 section 4.3: at least 2 minutes is required, many home routers use 30-60 s for
UDP), and a node that is idle between DHT refreshes then cannot be reached at the
address it announced. While the node is behind a NAT (``behind_nat()``), ``Keepalive``
sends one STUN Binding request every ``interval`` seconds to each of a few targets:

* ``targets()``: a few DHT neighbours (every p2pstack node answers STUN on its port);
* every source added with ``add_targets`` (the hook for relays: issue 9 section 2).

Binding requests are the cheapest packet that every node answers, and the answer tells
us our mapping as that target sees it (``expected()``: the one NAT discovery found,
compared with a target's first answer). When it moved (the NAT forgot it between two
keepalives, or rebooted), the mapping timeout is shorter than the gap we left: the
interval drops to half that gap (never under ``MIN_INTERVAL``), ``MappingChanged``
(``nat.mapping_changed``) is emitted and ``on_change`` called (the node re-runs NAT
discovery and re-publishes). The default interval is at most 25 s, below the shortest
timeout seen on the real lab's routers; ``status`` shows the one in force.

It runs as the supervised service ``nat.keepalive``: a failure restarts it. Sleeps use
the loop's clock, so on the simulator an idle hour costs no wall time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any

from stack.base.clock import Clock
from stack.base.net import Address, format_address
from stack.node.events import EventBus, MappingChanged

from nat.stun.codec import Decoded
from nat.stun.transaction import BindingSuccess, RetransmitConfig, StunClient

__all__ = ["Keepalive", "DEFAULT_INTERVAL", "MIN_INTERVAL", "DEFAULT_PEERS"]

DEFAULT_INTERVAL = 25.0  # seconds; below the shortest mapping timeout we know of
MIN_INTERVAL = 5.0
DEFAULT_PEERS = 3        # DHT neighbours kept alive (more only cost packets)
# one send per keepalive (the next keepalive is the retransmission); forgotten after 4 s
_ONE_SHOT = RetransmitConfig(rto=0.5, rc=1, rm=8)


class Keepalive:
    """See the module docstring."""

    def __init__(self, *, send: Callable[[bytes, Address], None], clock: Clock,
                 events: EventBus, behind_nat: Callable[[], bool],
                 targets: Callable[[int], list[Address]], interval: float = DEFAULT_INTERVAL,
                 peers: int = DEFAULT_PEERS, on_change: Callable[[], None] | None = None,
                 expected: Callable[[], Address | None] = lambda: None,
                 rng: random.Random | None = None) -> None:
        if not interval > 0 or peers < 0:
            raise ValueError("interval must be > 0 seconds and peers >= 0")
        self._send = send
        self._clock = clock
        self._events = events
        self._behind_nat = behind_nat
        self._targets = targets
        self._sources: list[Callable[[], Iterable[Address]]] = []
        self.interval = interval
        self.peers = peers
        self._on_change = on_change
        self._expected = expected
        self._client = StunClient(_ONE_SHOT, rng)
        self._mapped: dict[Address, Address] = {}   # target -> our mapping as it saw it
        self._sent_at: dict[Address, float] = {}    # target -> our latest keepalive to it
        self._gaps: dict[Address, float] = {}       # target -> seconds between the last two
        self.sent = 0
        self.answered = 0
        self.last_targets: tuple[Address, ...] = ()

    def add_targets(self, source: Callable[[], Iterable[Address]]) -> None:
        """Keep these addresses' mappings alive too (e.g. our relays, issue 9 section 2)."""
        self._sources.append(source)

    # STUN routing (``NatInfo.add_client``)
    def owns(self, transaction_id: bytes) -> bool:
        return self._client.owns(transaction_id)

    def feed(self, decoded: Decoded, addr: Address) -> None:
        now = self._clock.now()
        self._client.receive_decoded(decoded, addr, now)
        while (event := self._client.next_event()) is not None:
            if isinstance(event, BindingSuccess):
                self.answered += 1
                self._saw(event.server, event.mapped_address)

    def _saw(self, target: Address, mapped: Address) -> None:
        # before its first answer: the mapping NAT discovery found (endpoint-independent
        # mappings only: a symmetric NAT shows each target its own)
        old = self._mapped.get(target) or self._expected()
        self._mapped[target] = mapped
        if old is None or old == mapped:
            return
        # The NAT forgot the mapping within the gap we left: keep well under it.
        gap = self._gaps.get(target, self.interval)
        self.interval = max(MIN_INTERVAL, min(self.interval, gap / 2))
        self._events.emit(MappingChanged(format_address(target), format_address(old),
                                         format_address(mapped), self.interval), "warning")
        if self._on_change is not None:
            self._on_change()

    def tick(self) -> int:
        """Send this round's keepalives (if behind a NAT); returns how many went out."""
        now = self._clock.now()
        self._client.handle_timer(now)  # forget last round's unanswered ones
        while self._client.next_event() is not None:
            pass
        if not self._behind_nat():
            self.last_targets = ()
            return 0
        wanted: list[Address] = []
        for source in (lambda: self._targets(self.peers), *self._sources):
            wanted.extend(source())
        targets = tuple(dict.fromkeys(wanted))
        gaps = {}
        for target in targets:
            previous = self._sent_at.get(target)
            if previous is not None:
                gaps[target] = now - previous
            self._sent_at[target] = now
            self._client.request(target, now)
        self._gaps = gaps
        for data, addr in self._client.outgoing():
            self._send(data, addr)
            self.sent += 1
        self.last_targets = targets
        for gone in set(self._sent_at) - set(targets):  # bounded by what we keep alive
            del self._sent_at[gone]
            self._mapped.pop(gone, None)
        return len(targets)

    async def service(self) -> None:
        """The supervised loop: a keepalive round every ``interval`` seconds."""
        while True:
            self.tick()
            await asyncio.sleep(self.interval)

    def to_json(self) -> dict[str, Any]:
        return {"interval_s": self.interval, "sent": self.sent, "answered": self.answered,
                "targets": [format_address(t) for t in self.last_targets]}
