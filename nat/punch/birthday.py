"""The birthday technique for a port-restricted cone <-> symmetric pair, sans I/O.

Why it is needed: a symmetric NAT (address-and-port-dependent mapping) gives every
destination a fresh, random public port, so the port a symmetric side's punch comes
from is one the other side has never sent to; a port-restricted cone (endpoint-
independent mapping, address-and-port-dependent filtering) drops it. The plain punch
(``nat.punch.core``) cannot open such a pair: the cone never learns the port.

How: the two sides meet on one unknown port by volume (the birthday problem).

* The *symmetric* side ``S`` opens ``SOCKETS`` (256) extra UDP sockets and sends a PUNCH
  from each to the cone side's public address (its mapping is endpoint-independent, so
  that address is known: the one its relay sees). Its NAT now holds 256 mappings
  ``S_ip:P_i -> cone``, each one letting in datagrams from exactly the cone's address.
  The sockets re-send every ``interval`` seconds to keep those mappings alive.
* The *cone* side ``E`` sends up to ``MAX_PROBES`` (1024) PUNCH probes from the node's
  own port to distinct random ports on ``S``'s public IP, rate-limited (``burst``
  probes every ``tick`` seconds: 640/s by default). A probe to some ``P_i`` passes S's
  NAT (it comes from the address mapping ``i`` sent to) and reaches socket ``i``; it
  also made the cone NAT let ``S_ip:P_i`` in from then on.

With 256 of ~64,500 ports open and 1024 distinct probes, P(a hit) = 1 - C(n-256, 1024) /
C(n, 1024) ~ 1 - (1 - 256/64512)^1024 ~ 98.3% per attempt.

The choice of which side carries QUIC (why ``S`` dials over its winning socket): the
4-tuple found is ``S_ip:P_i <-> E_ip:E_port``. E's end already is the node's one UDP
port, so E needs nothing new: its QUIC transport accepts S's Initials there as a
punch it agreed to (no Retry, path PUNCHED). S's end is socket ``i``, not S's main
port (whose mapping toward E was never opened), so S keeps that socket for the
connection's life and dials the QUIC connection over it as a path socket; the other
255 close at once. Relaying the winner's datagrams through the main port instead would
not work: the main port's packets leave through another mapping, which E's NAT drops.

``BirthdayProber`` is E's probe schedule; ``BirthdaySockets`` is S's: which socket
sends what when, and which socket a probe reached first (``BirthdayHit``). Neither
does I/O; the driver is ``stack.node.protocols.birthday``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from stack.base.net import Address
from nat.punch.core import PUNCH, Datagram, encode_punch
from nat.vocabulary import ADM, APDF, APDM, EIM

__all__ = ["SOCKETS", "MAX_PROBES", "PORTS", "BirthdayProber", "BirthdaySockets",
           "BirthdayHit", "hit_probability", "role", "SOCKETS_ROLE", "PROBE_ROLE"]

SOCKETS = 256            # extra sockets the symmetric side opens (issue 9 section 3)
MAX_PROBES = 1024        # probes the cone side sends per attempt at most
PORTS = (1024, 65535)    # the public ports a NAT picks from (Linux fully-random, sim)
PROBE_BURST = 16         # probes per tick ...
PROBE_TICK = 0.025       # ... every 25 ms: 640 probes/s, 1024 in 1.6 s
SOCKET_INTERVAL = 0.5    # seconds between the symmetric side's rounds


SOCKETS_ROLE = "sockets"   # the symmetric side: opens the sockets, dials QUIC
PROBE_ROLE = "probe"       # the cone side: probes from its port, accepts QUIC

Behaviour = tuple[str | None, str | None] | None   # (mapping, filtering) or unknown


def role(own: Behaviour, peer: Behaviour, attempt: int = 1) -> str | None:
    """Our part in a birthday attempt, or None when the pair is not the one it is for:
    one side maps per destination (ADM or APDM: symmetric), the other has an
    endpoint-independent mapping with address-and-port-dependent filtering (port-
    restricted cone). Every other feasible pair opens with the plain punch, and
    symmetric <-> symmetric has no known port on either side (stays relayed).

    A cone side whose filtering is unknown (its NAT report came from plain STUN
    servers: DHT nodes, which cannot test filtering) may be an easier cone that the
    plain punch opens, so attempt 1 is a plain one and later ``attempt``s are
    birthday ones (the plain punch having failed)."""
    def symmetric(b: Behaviour) -> bool:
        return b is not None and b[0] in (ADM, APDM)

    def port_restricted(b: Behaviour) -> bool:
        return (b is not None and b[0] == EIM
                and (b[1] == APDF or (b[1] is None and attempt > 1)))

    if symmetric(own) and port_restricted(peer):
        return SOCKETS_ROLE
    if port_restricted(own) and symmetric(peer):
        return PROBE_ROLE
    return None


def hit_probability(sockets: int = SOCKETS, probes: int = MAX_PROBES,
                    ports: tuple[int, int] = PORTS) -> float:
    """P(at least one of ``probes`` distinct random ports is one of ``sockets`` open
    ones among the range ``ports``): 1 - C(n - s, p) / C(n, p)."""
    n = ports[1] - ports[0] + 1
    miss = 1.0
    for k in range(min(probes, n)):
        miss *= max(0, n - sockets - k) / (n - k)
    return 1.0 - miss


@dataclass(frozen=True)
class BirthdayHit:
    """A probe with our token reached socket ``index`` from ``address``: that socket's
    mapping and the cone's filter are open toward each other."""
    index: int
    address: Address


class BirthdayProber:
    """The cone side: PUNCH probes to distinct random ports of ``ip``.

    ``start(now)`` sends the first burst; every ``tick`` seconds another ``burst`` until
    ``probes`` went out or ``stop()``. Ports are drawn without repeats from ``ports``
    by the injected rng (a seeded one makes the schedule reproducible)."""

    def __init__(self, token: bytes, ip: str, rng: random.Random, *,
                 probes: int = MAX_PROBES, burst: int = PROBE_BURST,
                 tick: float = PROBE_TICK, ports: tuple[int, int] = PORTS) -> None:
        if not 0 < probes <= MAX_PROBES:
            raise ValueError(f"probes must be 1..{MAX_PROBES}")
        if burst < 1 or tick <= 0:
            raise ValueError("a burst of at least one probe per positive tick")
        self.token = token
        self.ip = ip
        self._rng = rng
        span = range(ports[0], ports[1] + 1)
        self._ports = rng.sample(span, min(probes, len(span)))
        self._burst = burst
        self._tick = tick
        self._next: float | None = None
        self._out: list[tuple[bytes, Address]] = []
        self.sent = 0

    @property
    def duration(self) -> float:
        """Seconds from the first burst to the last."""
        return self.schedule(len(self._ports), self._burst, self._tick)

    @staticmethod
    def schedule(probes: int = MAX_PROBES, burst: int = PROBE_BURST,
                 tick: float = PROBE_TICK) -> float:
        """Seconds from the first burst of ``probes`` to the last."""
        return tick * ((probes - 1) // burst)

    def start(self, now: float) -> None:
        self._next = now
        self.handle_timer(now)

    def stop(self) -> None:
        self._next = None

    @property
    def done(self) -> bool:
        return self.sent >= len(self._ports) or self._next is None

    def outgoing(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        if self._next is None or now < self._next:
            return
        for port in self._ports[self.sent:self.sent + self._burst]:
            self._out.append((encode_punch(self.token, self._rng), (self.ip, port)))
            self.sent += 1
        self._next = None if self.sent >= len(self._ports) else self._next + self._tick


class BirthdaySockets:
    """The symmetric side: ``count`` sockets (by index) that each PUNCH ``target`` every
    ``interval`` seconds (jittered) until ``until`` or ``stop()``; ``receive`` takes a
    decoded datagram that arrived on socket ``index`` and reports the first probe with
    our token as ``BirthdayHit`` (once: one winner)."""

    def __init__(self, token: bytes, count: int, rng: random.Random, *,
                 interval: float = SOCKET_INTERVAL) -> None:
        if not 0 < count <= SOCKETS:
            raise ValueError(f"count must be 1..{SOCKETS}")
        self.token = token
        self.count = count
        self._rng = rng
        self._interval = interval
        self._target: Address | None = None
        self._until = 0.0
        self._next: float | None = None
        self._out: list[tuple[int, bytes, Address]] = []
        self._events: list[BirthdayHit] = []
        self.hit: BirthdayHit | None = None
        self.sent = 0
        self.ignored = 0   # datagrams on our sockets that were not our probe

    def start(self, now: float, target: Address, until: float) -> None:
        self._target = target
        self._until = until
        self._next = now
        self.handle_timer(now)

    def stop(self) -> None:
        self._next = None

    def receive(self, index: int, datagram: Datagram, addr: Address) -> None:
        if (datagram.kind != PUNCH or datagram.nonce != self.token
                or not 0 <= index < self.count):
            self.ignored += 1
            return
        if self.hit is None:
            self.hit = BirthdayHit(index, addr)
            self._events.append(self.hit)
            self.stop()  # the winner's QUIC connection keeps its mapping alive now

    def outgoing(self) -> list[tuple[int, bytes, Address]]:
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        return self._next

    def handle_timer(self, now: float) -> None:
        if self._next is None or now < self._next or self._target is None:
            return
        if now >= self._until:
            self.stop()
            return
        for index in range(self.count):
            self._out.append((index, encode_punch(self.token, self._rng), self._target))
            self.sent += 1
        self._next = now + self._interval * (0.5 + self._rng.random())

    def next_event(self) -> BirthdayHit | None:
        return self._events.pop(0) if self._events else None
