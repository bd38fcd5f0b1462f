"""The simulated datagram network (DESIGN.md sections 2, 3, 6, 7).

API
---
``SimNetwork(rng, *, latency=0.010, jitter=0.002, loss=0.0)``
    The "internet". All randomness (jitter, loss, random NAT ports) comes from ``rng``,
    and delivery is scheduled with ``loop.call_at`` on the running (virtual) loop, so
    the same seed and the same program reproduce a run exactly. ``latency`` is one-way
    seconds, ``jitter`` the half-width of a uniform spread around it (a delay never goes
    below 0, so jitter can reorder), ``loss`` the drop probability per datagram.
    ``net.latency`` / ``net.jitter`` / ``net.loss`` may be changed mid-run.
``net.add_host(ip, *, extra_ips=(), segment=None) -> SimHost``
    A public host. ``extra_ips`` gives it more addresses (an RFC 5780 STUN server needs
    two); binding ``0.0.0.0`` on such a host listens on all and sends from ``ip``.
    ``segment`` (any name) puts public hosts on one LAN segment (see LAN segments).
``net.add_nat(public_ip, *, mapping=..., filtering=..., hairpin=False,
port_preserving=True, mapping_timeout=120.0) -> Nat``
    A NAT box (``simulations.nat``); ``nat.add_host(private_ip)`` puts a host behind it.
``net.add_nat_kind(public_ip, kind) -> Nat | PublicSite``
    By lab kind name (``simulations.nat.NAT_KINDS``); ``"none"`` gives a ``PublicSite``
    whose ``add_host(_)`` returns a public host at ``public_ip``.
``net.set_link(ip_a, ip_b, *, latency=None, jitter=None, loss=None)``
    Override the path between two *public* addresses, both directions (``None`` =
    follow the network default). Traffic inside one NAT uses the private addresses.
``net.partition(sides)`` / ``net.heal()``
    Split the network: ``sides`` maps public (or private) addresses to a side number,
    every address not named is on side 0, and a datagram between two sides is dropped
    when it would be scheduled (``dropped_partition``). ``heal()`` joins them again;
    datagrams already in flight are not recalled.
``net.host_at(ip) -> SimHost``
    The host owning a public address, or the unique host with that private address.
``net.segment_hosts(host) -> list[SimHost]``
    The hosts on ``host``'s LAN segment, itself included (empty: it is on none).
``net.stats`` (``NetStats``)
    ``sent``, ``delivered``, ``multicast`` (datagrams sent to a group; each copy that
    lands counts in ``delivered``), ``dropped_loss``, ``dropped_nat`` (filtered, no mapping,
    hairpin off), ``dropped_crashed``, ``dropped_unroutable`` (no such address),
    ``dropped_no_port`` (nothing bound there), ``dropped_partition`` (between the
    sides of a ``partition``).

``SimHost`` implements ``stack.base.net.DatagramNetwork``:
``await host.bind((ip_or_"0.0.0.0", port), receiver) -> SimEndpoint`` (port 0 =
ephemeral, from 49152 up; a taken port or a foreign ip raises ``SimulationError``, a
``LocalError``). Receivers get batches (``list[Datagram]``) like ``UdpNetwork``: every
datagram that reaches an endpoint at the same instant is handed over in one call. A
receiver that raises is reported to the loop's exception handler; delivery goes on.
``host.change_ip(new_ip, old_ip=None)`` moves the host to another address (issue 10:
wildcard-bound endpoints follow it, endpoints bound to the old address get send errors);
``host.switch_network(new_ip, nat=None)`` moves it to another network: public, or behind
another NAT box (Wi-Fi to 4G).
``host.crash()`` makes the host drop everything in and out (its endpoints stay bound);
``host.restart()`` undoes it. ``SimHost`` also implements ``stack.base.net.
MulticastNetwork``: ``await host.join_group(group, receiver)`` and
``host.interface_networks()`` (the /24 around each of its addresses).

LAN segments (issue 12)
-----------------------
The hosts behind one NAT are one LAN segment (a home network); public hosts given the
same ``segment=`` name are another. A host joins a multicast group with ``join_group``
(an endpoint bound to the group's port, e.g. mDNS's 224.0.0.251:5353); a datagram any
host sends to a group address reaches the group's endpoint on every *other* host of the
sender's segment that has joined it, with the source address the sender's unicast one
and the network's latency, jitter and loss (drawn per copy; ``set_link`` between the
private addresses applies, and so do partitions). Multicast is never translated and
never forwarded: it does not leave the segment (no NAT passes it, no other NAT's inside
or public host sees it); sent from a host on no segment it is ``dropped_unroutable``.
Unicast between hosts of a public segment is routed as between any public hosts.

Routing (trio FakeNet's ``route_packet`` idea): ``SimNetwork._send`` decides where a
datagram goes; NAT boxes only translate (``Nat.outbound`` on the way out, ``Nat._arrive``
on the way in, *at arrival time*, so a mapping can expire while a datagram is in flight).
Hosts behind the same NAT reach each other directly by private address.

The per-datagram path allocates one tuple (its place in the network's own in-flight
heap; one loop timer is armed for the heap's head) and logs nothing: it must carry
millions of datagrams among 10,000 hosts. Datagrams due at the same instant arrive in
the order they were sent. On a ``VirtualEventLoop``, when nothing else would run before
the next datagram lands, the network lands it at once instead of going round the loop
(same trace, a loop iteration saved per datagram). The network also works on an ordinary
asyncio loop (real-time small tests), just without that shortcut.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from heapq import heappop, heappush
from collections.abc import Iterable
from dataclasses import dataclass

from simulations.errors import SimulationError
from simulations.nat import HAIRPIN_KINDS, NAT_KINDS, Nat, PublicSite
from stack.base.errors import LocalError
from stack.base.net import Address, Datagram, EndpointStats, Receiver

__all__ = ["SimNetwork", "SimHost", "SimEndpoint", "NetStats"]

_ANY = "0.0.0.0"
_EPHEMERAL_FIRST = 49152
_NEVER = float("inf")
_DELIVERING = float("-inf")  # _deliver_due is running: it arms the next timer itself


@dataclass(slots=True)
class NetStats:
    """Network-wide datagram counters."""

    sent: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_nat: int = 0
    dropped_crashed: int = 0
    dropped_unroutable: int = 0
    dropped_no_port: int = 0
    dropped_partition: int = 0
    multicast: int = 0


class SimEndpoint:
    """A bound simulated UDP port (``stack.base.net.DatagramEndpoint``)."""

    __slots__ = ("_host", "_net", "_key", "_src", "_receiver", "_inbox", "_closed",
                 "local_address", "stats", "_wildcard", "_gone")

    def __init__(self, host: SimHost, key: Address, src: Address, receiver: Receiver,
                 wildcard: bool = False) -> None:
        self._host = host
        self._net = host.network
        self._key = key
        self._src = src  # the source address our datagrams carry
        self._receiver = receiver
        self._inbox: list[Datagram] = []
        self._closed = False
        self.local_address: Address = key
        self.stats = EndpointStats()
        self._wildcard = wildcard  # bound to 0.0.0.0: follows the host's address changes
        self._gone = False         # bound to an address the host no longer has

    def _rekey(self, key: Address, src: Address) -> None:
        """The host's address changed under a wildcard bind (``SimHost.change_ip``)."""
        endpoints = self._host._endpoints
        endpoints.pop(self._key, None)
        self._key = key
        self._src = src
        self.local_address = key
        endpoints[key] = self

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram; conditions on the way are counted, never raised."""
        if self._closed:
            return
        if self._gone:  # EADDRNOTAVAIL: the address this socket is bound to went away
            self.stats.send_errors += 1
            return
        if type(data) is not bytes:  # a bytearray the caller may reuse: copy it now
            data = bytes(data)
        if type(addr) is not tuple:  # it becomes a dict key on the way
            addr = (addr[0], addr[1])
        self.stats.sent += 1
        self._net._send(self._host, self._src, data, addr)

    def _deliver(self, data: bytes, src: Address) -> None:
        inbox = self._inbox
        inbox.append((data, src))
        if len(inbox) == 1:
            self._net._touched.append(self)

    def _flush(self) -> None:
        batch = self._inbox
        self._inbox = []
        if self._closed:
            return
        self.stats.received += len(batch)
        self._receiver(batch)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._host._endpoints.pop(self._key, None)


class SimHost:
    """A machine on the simulated network; ``nat`` is the box it sits behind, if any."""

    def __init__(self, network: SimNetwork, ips: list[str], nat: Nat | None = None,
                 segment: object = None) -> None:
        self.network = network
        self.ips = ips
        self.ip = ips[0]
        self.nat = nat
        self.segment = nat if segment is None else segment  # its LAN segment's key
        self.crashed = False
        self._endpoints: dict[Address, SimEndpoint] = {}
        self._next_port = _EPHEMERAL_FIRST

    def __repr__(self) -> str:
        where = f" behind {self.nat.public_ip}" if self.nat is not None else ""
        return f"<SimHost {self.ip}{where}{' crashed' if self.crashed else ''}>"

    async def bind(self, addr: Address, receiver: Receiver) -> SimEndpoint:
        """Bind ``(ip, port)``; ip is one of ours or ``0.0.0.0``, port 0 = ephemeral."""
        ip, port = addr[0] or _ANY, int(addr[1])
        wildcard = ip == _ANY
        if ip != _ANY and ip not in self.ips:
            raise SimulationError(f"cannot bind {ip}:{port}: not an address of {self!r}")
        if not 0 <= port <= 65535:
            raise SimulationError(f"cannot bind {ip}:{port}: port out of range")
        if ip == _ANY and len(self.ips) == 1:
            ip = self.ip  # one address: a wildcard bind is that address
        if port == 0:
            port = self._ephemeral_port(ip)
        elif self._taken(ip, port):
            raise SimulationError(f"cannot bind {ip}:{port} on {self!r}: address in use")
        self.network._attach_loop()
        key = (ip, port)
        src = (self.ip, port) if ip == _ANY else key
        endpoint = SimEndpoint(self, key, src, receiver, wildcard)
        self._endpoints[key] = endpoint
        return endpoint

    async def join_group(self, group: Address, receiver: Receiver) -> SimEndpoint:
        """Bind ``group``'s port for ``group`` on this host's LAN segment (module
        docstring, LAN segments). ``SimulationError`` for an address that is not IPv4
        multicast or a port already taken."""
        ip, port = group[0], int(group[1])
        try:
            multicast = ipaddress.IPv4Address(ip).is_multicast
        except ValueError:
            multicast = False
        if not multicast:
            raise SimulationError(f"cannot join {ip}: not an IPv4 multicast address")
        if not 0 < port <= 65535:
            raise SimulationError(f"cannot join {ip}:{port}: port out of range")
        if self._taken(_ANY, port):
            raise SimulationError(f"cannot join {ip}:{port} on {self!r}: port in use")
        self.network._attach_loop()
        key = (ip, port)
        # wildcard: its source address follows the host's address (change_ip)
        endpoint = SimEndpoint(self, key, (self.ip, port), receiver, wildcard=True)
        self._endpoints[key] = endpoint
        self.network._groups.add(ip)
        return endpoint

    def interface_networks(self) -> list[ipaddress.IPv4Network]:
        """The /24 around each of our addresses (a simulated host has no netmask)."""
        return [ipaddress.IPv4Network(f"{ip}/24", strict=False) for ip in self.ips]

    async def resolve(self, addr: Address) -> Address:
        """Only IPv4 literals resolve: the simulated network has no name service."""
        try:
            ipaddress.IPv4Address(addr[0])
        except ValueError:
            raise LocalError(f"cannot resolve {addr[0]!r}: no names on the simulated "
                             "network") from None
        return addr

    def local_ips(self) -> list[str]:
        return list(self.ips)  # no loopback: a simulated host cannot bind it

    def _taken(self, ip: str, port: int) -> bool:
        if ip == _ANY:
            return any(key[1] == port for key in self._endpoints)
        return (ip, port) in self._endpoints or (_ANY, port) in self._endpoints

    def _ephemeral_port(self, ip: str) -> int:
        for _ in range(65536 - _EPHEMERAL_FIRST):
            port = self._next_port
            self._next_port = port + 1 if port < 65535 else _EPHEMERAL_FIRST
            if not self._taken(ip, port):
                return port
        raise SimulationError(f"no free ephemeral port on {self!r}")

    def change_ip(self, new_ip: str, old_ip: str | None = None) -> None:
        """The host's address ``old_ip`` (default: its primary one) becomes ``new_ip``
        (a network switch, a new DHCP lease; issue 10), on the same network: public, or
        behind the same NAT. ``local_ips()`` reports the new address from now on.
        Endpoints bound to the wildcard follow it (they send from ``new_ip`` and their
        ``local_address`` says so); endpoints bound to ``old_ip`` itself are orphaned, as
        a real socket is: what they send is counted in their ``stats.send_errors`` and
        dropped, and nothing reaches them any more. Datagrams in flight to ``old_ip`` are
        lost (``dropped_unroutable``)."""
        old = self.ip if old_ip is None else old_ip
        if old not in self.ips:
            raise SimulationError(f"{old} is not an address of {self!r}")
        self._check_free(new_ip, self.nat)
        self._unregister(old)
        self._register(new_ip)
        self._readdress(old, new_ip)

    def switch_network(self, new_ip: str, nat: Nat | None = None) -> None:
        """The host leaves its network for another one (Wi-Fi to 4G): its primary
        address becomes ``new_ip``, public (``nat`` None) or behind ``nat``, and it
        leaves its LAN segment for that NAT's. Endpoints follow or are orphaned as in
        ``change_ip``; the old NAT's mappings for it expire on their own."""
        self._check_free(new_ip, nat)
        old = self.ip
        self._unregister(old)
        segments = self.network._segments
        if self.segment is not None and self in segments.get(self.segment, ()):
            segments[self.segment].remove(self)
        self.nat = self.segment = nat
        if nat is not None:
            segments.setdefault(nat, []).append(self)
        self._register(new_ip)
        self._readdress(old, new_ip)

    def _check_free(self, ip: str, nat: Nat | None) -> None:
        if nat is None:
            self.network._claim(ip)
        elif ip in nat._hosts:
            raise SimulationError(f"{ip} is already taken behind {nat.public_ip}")

    def _unregister(self, ip: str) -> None:
        net = self.network
        if self.nat is None:
            del net._public[ip]
            return
        del self.nat._hosts[ip]
        hosts = net._private.get(ip, [])
        if self in hosts:
            hosts.remove(self)
        if not hosts:
            net._private.pop(ip, None)

    def _register(self, ip: str) -> None:
        net = self.network
        if self.nat is None:
            net._public[ip] = self
        else:
            self.nat._hosts[ip] = self
            net._private.setdefault(ip, []).append(self)

    def _readdress(self, old: str, new_ip: str) -> None:
        self.ips = [new_ip if ip == old else ip for ip in self.ips]
        self.ip = self.ips[0]
        for key, endpoint in list(self._endpoints.items()):
            if endpoint._wildcard:
                if key[0] == old:
                    endpoint._rekey((new_ip, key[1]), (new_ip, key[1]))
                else:  # 0.0.0.0, or a group joined (join_group)
                    endpoint._src = (self.ip, key[1])
            elif key[0] == old:
                endpoint._gone = True
                self._endpoints.pop(key)

    def crash(self) -> None:
        """Drop every datagram to or from this host until ``restart()``."""
        self.crashed = True

    def restart(self) -> None:
        self.crashed = False

    def _arrive(self, src: Address, dst: Address, data: bytes) -> None:
        """A datagram reaches this host (scheduled by the network, or by our NAT)."""
        net = self.network
        if self.crashed:
            net.stats.dropped_crashed += 1
            return
        endpoints = self._endpoints
        endpoint = endpoints.get(dst)
        if endpoint is None:
            endpoint = endpoints.get((_ANY, dst[1]))
            if endpoint is None:
                net.stats.dropped_no_port += 1
                return
        net.stats.delivered += 1
        endpoint._deliver(data, src)


class SimNetwork:
    """The simulated internet (see the module docstring)."""

    def __init__(self, rng: random.Random, *, latency: float = 0.010, jitter: float = 0.002,
                 loss: float = 0.0) -> None:
        self.rng = rng
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.stats = NetStats()
        # public ip -> what answers there: a SimHost or a Nat
        self._public: dict[str, SimHost | Nat] = {}
        self._private: dict[str, list[SimHost]] = {}
        self._links: dict[tuple[str, str], tuple[float | None, float | None, float | None]] = {}
        self._sides: dict[str, int] = {}  # address -> side of a partition (empty: none)
        self._loop: asyncio.AbstractEventLoop | None = None
        # datagrams in flight: a heap of (arrival, seq, target, src, dst, data); the seq
        # makes equal arrival times first-sent first-delivered and keeps targets out of
        # comparisons. One loop timer is armed for the head.
        self._queue: list[tuple[float, int, SimHost | Nat, Address, Address, bytes]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = _NEVER
        self._touched: list[SimEndpoint] = []  # endpoints with datagrams to hand over
        self._groups: set[str] = set()  # multicast addresses some host joined
        self._segments: dict[object, list[SimHost]] = {}  # segment key -> its hosts
        self._register_with_running_loop()

    def _register_with_running_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if getattr(loop, "network", False) is None:  # a VirtualEventLoop without a network
            # a VirtualEventLoop (it has the attribute), typed here as AbstractEventLoop
            loop.network = self  # type: ignore[attr-defined]

    def _attach_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                raise SimulationError("a SimNetwork runs on one event loop at a time")
            self._loop = loop
            self._queue.clear()  # whatever was in flight died with the old loop
            self._timer = None
            self._timer_when = _NEVER
        return loop

    # -- building the topology ---------------------------------------------------------

    def _claim(self, ip: str) -> None:
        if ip in self._public:
            raise SimulationError(f"address {ip} is already on the network")

    def add_host(self, ip: str, *, extra_ips: Iterable[str] = (),
                 segment: str | None = None) -> SimHost:
        """A public host at ``ip`` (and ``extra_ips``), on LAN segment ``segment``
        with the other public hosts given that name (None: on none)."""
        ips = [ip, *extra_ips]
        if len(set(ips)) != len(ips):
            raise SimulationError(f"duplicate addresses in {ips}")
        for address in ips:
            self._claim(address)
        key = None if segment is None else ("public", segment)
        host = SimHost(self, ips, segment=key)
        for address in ips:
            self._public[address] = host
        if key is not None:
            self._segments.setdefault(key, []).append(host)
        return host

    def segment_hosts(self, host: SimHost) -> list[SimHost]:
        """The hosts on ``host``'s LAN segment, ``host`` included ([] if on none)."""
        if host.segment is None:
            return []
        return list(self._segments.get(host.segment, ()))

    def add_nat(self, public_ip: str, *, mapping: str = "endpoint-independent",
                filtering: str = "address-and-port-dependent", hairpin: bool = False,
                port_preserving: bool = True, mapping_timeout: float = 120.0) -> Nat:
        """A NAT box at ``public_ip``; put hosts behind it with ``nat.add_host``."""
        self._claim(public_ip)
        nat = Nat(self, public_ip, mapping=mapping, filtering=filtering, hairpin=hairpin,
                  port_preserving=port_preserving, mapping_timeout=mapping_timeout)
        self._public[public_ip] = nat
        return nat

    def add_nat_kind(self, public_ip: str, kind: str) -> Nat | PublicSite:
        """A site of the lab's NAT kind: ``none`` or a NAT box (see ``NAT_KINDS``)."""
        if kind not in NAT_KINDS:
            raise SimulationError(f"unknown NAT kind {kind!r}; known: {', '.join(NAT_KINDS)}")
        params = NAT_KINDS[kind]
        if params is None:
            return PublicSite(self, public_ip)
        mapping, filtering, port_preserving = params
        return self.add_nat(public_ip, mapping=mapping, filtering=filtering,
                            hairpin=kind in HAIRPIN_KINDS, port_preserving=port_preserving)

    def _add_private_host(self, nat: Nat, ip: str) -> SimHost:
        """Called by ``Nat.add_host``."""
        host = SimHost(self, [ip], nat)
        self._private.setdefault(ip, []).append(host)
        self._segments.setdefault(nat, []).append(host)
        return host

    def set_link(self, ip_a: str, ip_b: str, *, latency: float | None = None,
                 jitter: float | None = None, loss: float | None = None) -> None:
        """Override latency/jitter/loss between two addresses (both directions)."""
        key = (ip_a, ip_b) if ip_a < ip_b else (ip_b, ip_a)
        self._links[key] = (latency, jitter, loss)

    def partition(self, sides: dict[str, int]) -> None:
        """Cut the network between sides (see the module docstring); replaces any
        earlier partition."""
        self._sides = {ip: side for ip, side in sides.items() if side}

    def heal(self) -> None:
        """End the partition."""
        self._sides = {}

    def host_at(self, ip: str) -> SimHost:
        """The host at a public address, or the only host with that private address."""
        node = self._public.get(ip)
        if isinstance(node, SimHost):
            return node
        hosts = self._private.get(ip, [])
        if len(hosts) == 1:
            return hosts[0]
        if hosts:
            raise SimulationError(f"{len(hosts)} hosts have private address {ip}; name one")
        raise SimulationError(f"no host has address {ip}")

    # -- the datagram path ---------------------------------------------------------------

    def _send(self, host: SimHost, src: Address, data: bytes, dst: Address) -> None:
        """Route one datagram from ``host`` (source ``src``) towards ``dst``."""
        stats = self.stats
        stats.sent += 1
        if host.crashed:
            stats.dropped_crashed += 1
            return
        dst_ip = dst[0]
        if dst_ip in self._groups:
            self._multicast(host, src, data, dst)
            return
        nat = host.nat
        if nat is not None:
            lan = nat._hosts.get(dst_ip)
            if lan is not None:  # same private network: no translation
                self._schedule(src[0], dst_ip, lan, src, dst, data)
                return
            # _loop is set: datagrams flow only after a bind attached it
            src = nat.outbound(src, dst, self._loop.time())  # type: ignore[union-attr]
            if dst_ip == nat.public_ip and not nat.hairpin:
                nat.stats.dropped_hairpin += 1
                stats.dropped_nat += 1
                return
        target = self._public.get(dst_ip)
        if target is None:
            stats.dropped_unroutable += 1
            return
        self._schedule(src[0], dst_ip, target, src, dst, data)

    def _multicast(self, host: SimHost, src: Address, data: bytes, dst: Address) -> None:
        """A copy to every other member of ``dst`` on the sender's segment; never
        translated, never beyond the segment (module docstring, LAN segments)."""
        self.stats.multicast += 1
        members = self._segments.get(host.segment) if host.segment is not None else None
        if not members:
            self.stats.dropped_unroutable += 1
            return
        for other in members:
            if other is not host and dst in other._endpoints:
                self._schedule(src[0], other.ip, other, src, dst, data)

    def _schedule(self, a: str, b: str, target: SimHost | Nat, src: Address, dst: Address,
                  data: bytes) -> None:
        latency, jitter, loss = self.latency, self.jitter, self.loss
        if self._links:
            link = self._links.get((a, b) if a < b else (b, a))
            if link is not None:
                if link[0] is not None:
                    latency = link[0]
                if link[1] is not None:
                    jitter = link[1]
                if link[2] is not None:
                    loss = link[2]
        sides = self._sides
        if sides and sides.get(a, 0) != sides.get(b, 0):
            self.stats.dropped_partition += 1
            return
        rng = self.rng
        if loss and rng.random() < loss:
            self.stats.dropped_loss += 1
            return
        if jitter:
            latency += jitter * (2.0 * rng.random() - 1.0)
            if latency < 0.0:
                latency = 0.0
        # _loop is set: this is only called for a datagram being sent (see _send)
        when = self._loop.time() + latency  # type: ignore[union-attr]
        self._seq += 1
        heappush(self._queue, (when, self._seq, target, src, dst, data))
        if when < self._timer_when:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # _loop is set: timers are armed only for datagrams in flight (see _send)
        self._timer = self._loop.call_at(when, self._deliver_due)  # type: ignore[union-attr]
        self._timer_when = when

    def _deliver_due(self) -> None:
        """Land every datagram due by now, then hand each endpoint its batch.

        On a virtual loop, when nothing else would run before the next datagram lands
        (``VirtualEventLoop._skip_to``), go straight on to it instead of re-arming a
        timer: the same outcome without a loop iteration per datagram. While receivers
        run, what they send only joins the queue (``_timer_when`` is -inf, so
        ``_schedule`` arms nothing): the one timer for the new head is armed at the end,
        not one per reply sent and cancelled at once (a loop timer each, which was a
        third of the datagram path's cost).
        """
        due = self._timer_when  # the loop judged this due; do not re-read a real clock
        self._timer = None
        self._timer_when = _DELIVERING
        queue = self._queue
        skip_to = getattr(self._loop, "_skip_to", None)
        try:
            while True:
                while queue and queue[0][0] <= due:
                    _, _, target, src, dst, data = heappop(queue)
                    target._arrive(src, dst, data)
                touched = self._touched
                self._touched = []
                for endpoint in touched:
                    try:
                        endpoint._flush()
                    except Exception as exc:  # a receiver's bug must not stall the network
                        # _loop is set: this runs as its timer callback
                        self._loop.call_exception_handler({  # type: ignore[union-attr]
                            "message": f"receiver of {endpoint.local_address} raised",
                            "exception": exc})
                if not queue:
                    return
                head = queue[0][0]
                if skip_to is None or not skip_to(head):
                    break
                due = head
        finally:
            self._timer_when = _NEVER
        self._arm(head)
