"""Noticing that we moved, and telling the peers who matter (issue 10 sections 1 and 2).

``ChangeDetector`` is a pure core: it is fed what the node can observe and returns the
changes, each ``Change(old, new, cause)``:

==============  =======================================================================
cause           what it sees
==============  =======================================================================
``interface``   the set of non-loopback interface IPs (``DatagramNetwork.local_ips()``,
                the network seam, so the simulator drives it) differs from the last poll
``mapped``      an observer (a STUN answer, a keepalive, identify's observed address)
                reports a public mapping other than the last one (NAT rebinding)
``send_error``  the UDP socket's ``send_errors`` counter grew by ``send_error_burst`` or
                more since the last poll (the address it is bound to is gone, no route);
                re-announced only when what we would announce differs from what we did
``sleep_wake``  wall time advanced ``jump_tolerance`` seconds more than monotonic time
                between two polls (a suspended machine: every NAT mapping may be gone)
``rebind``      the application moved our UDP port itself (``Mobility.rebind``)
==============  =======================================================================

``Mobility`` is its driver on a Node: the ``mobility.watch`` service polls every
``poll_interval`` seconds (0.25) while the node had a connection in the last hour, every
``idle_poll_interval`` (5) otherwise; each change is an ``AddressChanged`` event
(``address.changed``) and then, at most once per ``min_reannounce`` seconds (later
changes within it are folded into one re-announcement at its end), the node rebinds its
UDP port on its new IP if it was bound to one that went away (``MovableEndpoint``),
when the old path is gone (any cause but ``mapped``) migrates the QUIC connections it is
the client of and replaces the others (``stack.node.migration``: ``connection.migrated``,
``connection.replaced``), signs a new announcement (next sequence number, ``previous`` =
its recent peers) and pushes it to its recent peers over the connections that carry on
(``protocols.announce_push``), and puts one more (the next number, without ``previous``:
the DHT is public) in the DHT at once, and re-advertises its addresses on the LAN (mDNS,
issue 12). A move that left us no address at all (every
interface down) waits for the next one: nothing could be migrated or pushed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from stack.base.errors import LocalError, StackError
from stack.base.identity import PeerId
from stack.base.interfaces import Connection
from stack.base.net import Address, DatagramEndpoint, EndpointStats, format_address
from stack.node.events import AddressChanged, AnnouncementPublished
from stack.node.migration import route

if TYPE_CHECKING:
    from stack.node.node import Node

__all__ = ["Change", "ChangeDetector", "Mobility", "MovableEndpoint", "CAUSES"]

log = structlog.get_logger("p2pstack.mobility")

CAUSES = ("interface", "mapped", "send_error", "sleep_wake", "rebind")


@dataclass(frozen=True, slots=True)
class Change:
    old: str
    new: str
    cause: str


def _ips_text(ips: Iterable[str]) -> str:
    return ",".join(sorted(ips))


class ChangeDetector:
    """Sans-I/O: feed it observations with the times they were made (see the module
    docstring). ``jump_tolerance`` seconds of wall/monotonic disagreement between two
    polls are ignored (NTP slews, a busy loop); ``send_error_burst`` send errors between
    two polls are a change, at most once per ``send_error_holdoff`` seconds (ICMP errors
    from dead peers count as send errors on a real socket too)."""

    def __init__(self, ips: Iterable[str], *, wall: float, mono: float, send_errors: int = 0,
                 jump_tolerance: float = 5.0, send_error_burst: int = 3,
                 send_error_holdoff: float = 30.0) -> None:
        self.ips = self._public(ips)
        self.mapped: Address | None = None
        self._wall = wall
        self._mono = mono
        self._send_errors = send_errors
        self.jump_tolerance = jump_tolerance
        self.send_error_burst = send_error_burst
        self.send_error_holdoff = send_error_holdoff
        self._send_error_at = float("-inf")
        self.slept = 0.0  # seconds the last ``sleep_wake`` change says the host was away

    @staticmethod
    def _public(ips: Iterable[str]) -> frozenset[str]:
        return frozenset(ip for ip in ips if not ip.startswith("127."))

    def poll(self, ips: Iterable[str], send_errors: int, *, wall: float,
             mono: float) -> list[Change]:
        """What changed since the last poll; at most one change per cause."""
        out: list[Change] = []
        jump = (wall - self._wall) - (mono - self._mono)
        self._wall, self._mono = wall, mono
        current = self._public(ips)
        if current != self.ips:
            out.append(Change(_ips_text(self.ips), _ips_text(current), "interface"))
            self.ips = current
        errors = send_errors - self._send_errors
        self._send_errors = send_errors
        if (errors >= self.send_error_burst and not out
                and mono >= self._send_error_at + self.send_error_holdoff):
            self._send_error_at = mono
            here = _ips_text(current)
            out.append(Change(here, here, "send_error"))
        if jump > self.jump_tolerance:
            self.slept = jump
            here = _ips_text(current)
            out.append(Change(here, here, "sleep_wake"))
            self.mapped = None  # every mapping may be gone: the next report is news
        return out

    def report_mapped(self, addr: Address) -> Change | None:
        """An observer saw our public mapping at ``addr``: a change if it differs from
        the last one reported (the first report is not a move)."""
        old = self.mapped
        self.mapped = addr
        if old is None or old == addr:
            return None
        return Change(format_address(old), format_address(addr), "mapped")


class MovableEndpoint:
    """The node's UDP endpoint, whose socket can be replaced: a node bound to one IP
    (not the wildcard) rebinds the same port on its new IP when that one went away, and
    everything holding the endpoint (QUIC, the DHT, STUN) sends through the new socket."""

    def __init__(self, inner: DatagramEndpoint) -> None:
        self._inner = inner

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    @property
    def stats(self) -> EndpointStats:
        return self._inner.stats

    @stats.setter
    def stats(self, value: EndpointStats) -> None:
        self._inner.stats = value

    def send(self, data: bytes, addr: Address) -> None:
        self._inner.send(data, addr)

    def close(self) -> None:
        self._inner.close()

    def replace(self, inner: DatagramEndpoint) -> None:
        old, self._inner = self._inner, inner
        old.close()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Mobility:
    """``ChangeDetector`` driven on a Node (see the module docstring)."""

    def __init__(self, node: Node, *, poll_interval: float = 0.25,
                 idle_poll_interval: float = 5.0, min_reannounce: float = 1.0) -> None:
        self.node = node
        self.poll_interval = poll_interval
        self.idle_poll_interval = idle_poll_interval
        self.min_reannounce = min_reannounce
        clock = node.clock
        self.detector = ChangeDetector(node._network.local_ips(), wall=clock.now(),
                                       mono=clock.monotonic(), send_errors=self._errors())
        self.changes: list[Change] = []
        self.last_push: dict[str, str] = {}  # peer id text -> verdict of our last push
        self._last_announce = float("-inf")
        self._pending: asyncio.Task[None] | None = None
        self._path_gone = False  # a change since the last push made our old path unusable
        self._sleeper: asyncio.Future[None] | None = None
        self._idle = False
        self._settled = 0  # changes[:_settled] have been handled by a re-announcement

    def _errors(self) -> int:
        endpoint = self.node.endpoint
        return endpoint.stats.send_errors if endpoint is not None else 0

    async def watch(self) -> None:
        """The ``mobility.watch`` service."""
        node = self.node
        loop = asyncio.get_running_loop()
        node.announce_push.on_seen = self.wake
        while True:
            # Quick while there are peers to tell; slowly otherwise (the DHT record is
            # the only one to refresh then): an idle simulated hour stays cheap. A new
            # connection cuts a slow wait short.
            quick = node.announce_push.has_recent()
            self._sleeper = sleeper = loop.create_future()
            timer = loop.call_later(self.poll_interval if quick else self.idle_poll_interval,
                                    _wake, sleeper)
            self._idle = not quick
            try:
                await sleeper
            finally:
                timer.cancel()
            clock = node.clock
            for change in self.detector.poll(node._network.local_ips(), self._errors(),
                                             wall=clock.now(), mono=clock.monotonic()):
                self.moved(change)

    def wake(self) -> None:
        """A peer connected: a slow (idle) wait ends now."""
        if self._idle and self._sleeper is not None:
            _wake(self._sleeper)

    def report_mapped(self, addr: Address, source: str) -> None:
        """An observer (``source``: ``stun``, ``identify``, ``keepalive`` ...) reports our
        public mapping: it becomes our announced observed address, and a different one
        than before is a move."""
        node = self.node
        node.observed_address = addr
        change = self.detector.report_mapped(addr)
        log.debug("address.mapped", address=format_address(addr), source=source,
                  changed=change is not None)
        if change is not None:
            self.moved(change)
        elif (node._published_addrs is not None and node.dht is not None
              and node.announced_addrs() != node._published_addrs):
            # Our first public mapping, learnt after our first put (a filtering NAT's,
            # which no dial-back confirms before it): not a move, but an address the
            # record lacks. Put it now, not at the next minute's address check: a
            # peer resolving us meanwhile gets no public candidate to punch to.
            async def republish() -> None:
                with contextlib.suppress(StackError):
                    await node.republish_if_moved()
            node.supervisor.spawn(republish())

    def moved(self, change: Change) -> None:
        """Emit the event and re-announce (rate-limited, see the module docstring)."""
        node = self.node
        self.changes.append(change)
        if change.cause in ("interface", "sleep_wake"):
            # what peers observed belongs to the old network (re-learned on the new one)
            node.observed_address = None
            node._observations.clear()
        node.events.emit(AddressChanged(change.old, change.new, change.cause), "warning")
        if change.cause == "send_error" and node.announced_addrs() == node._published_addrs:
            return  # errors, but every address we announce is still ours: not a move
        if change.cause != "mapped":
            self._path_gone = True
        if self._pending is not None and not self._pending.done():
            return  # a re-announcement is on its way; it reads the addresses when it runs
        wait = self._last_announce + self.min_reannounce - node.clock.monotonic()
        self._pending = node.supervisor.spawn(self._reannounce(max(0.0, wait)))

    async def rebind(self, addr: Address) -> Address:
        """Move our UDP port to local address ``addr`` now (port 0: any) and handle it as
        a move (``address.changed`` cause ``rebind``): for an application that knows it
        switched networks before the interface poll does. Returns the new address;
        ``LocalError`` if the node is not started, or from the bind."""
        node = self.node
        endpoint = node.endpoint
        if not isinstance(endpoint, MovableEndpoint) or not node._started:
            raise LocalError("node is not started")
        old = endpoint.local_address
        new = await node._network.bind(addr, node.demux)
        endpoint.replace(new)
        self.detector._send_errors = new.stats.send_errors
        self.moved(Change(format_address(old), format_address(new.local_address), "rebind"))
        return new.local_address

    async def _rebind_if_gone(self) -> None:
        """Bound to one IP that is no longer ours: bind the same port on our new one."""
        node = self.node
        endpoint = node.endpoint
        if not isinstance(endpoint, MovableEndpoint):
            return
        ip, port = endpoint.local_address
        ips = node._network.local_ips()
        if ip == "0.0.0.0" or ip in ips or ip.startswith("127."):
            return  # (all of 127/8 is ours while lo is up, not only what it lists)
        fresh = [i for i in ips if not i.startswith("127.")]
        if not fresh:
            return  # no address at all yet: the next interface change will tell
        try:
            new = await node._network.bind((fresh[0], port), node.demux)
        except StackError as exc:
            log.warning("address.rebind_failed", address=f"{fresh[0]}:{port}", error=str(exc))
            return
        endpoint.replace(new)
        self.detector._send_errors = new.stats.send_errors
        log.info("address.rebound", old=f"{ip}:{port}", new=f"{fresh[0]}:{port}")

    async def _reannounce(self, wait: float) -> None:
        if wait > 0:
            await asyncio.sleep(wait)
        await self._rebind_if_gone()
        node = self.node
        replace = self._path_gone
        if replace and not self.detector.ips and self.changes[-1].cause != "rebind":
            log.info("address.none", note="no address to move to: waiting for one")
            return  # _path_gone stays set: the next change settles and pushes
        self._path_gone = False
        # A sleep longer than the idle timeout: every peer has closed its side, so a
        # migration could only wait for its timeout before the redial.
        causes = {c.cause for c in self.changes[self._settled:]}
        self._settled = len(self.changes)
        dead = "sleep_wake" in causes and self.detector.slept >= node.config.idle_timeout
        # First, before any signing or I/O: connections that can migrate start now.
        settling = node.migration.settle_all(migrate=not dead) if replace else {}
        if replace:
            woke = causes <= {"sleep_wake", "send_error"}  # no new address: same mapping?
            node.supervisor.spawn(self._refresh(settling, "woke" if woke else "moved"))
        self._last_announce = node.clock.monotonic()
        if node.mdns is not None:
            node.mdns.readvertise()  # LAN peers hear the new address now, not in 5 min
        push = node.announce_push
        await node.stores.sequence.ready()
        # Two records: the one pushed names our recent peers (seed 004's
        # previousConnections: relays forward it to them); the one the DHT stores, for
        # anyone to read, does not, and carries the next sequence number.
        record = node._sign_announcement(previous=push.recent_peers())
        publish = None
        if node.dht is not None and node.config.publish and node._started:
            publish = node.supervisor.spawn(self._publish(node._sign_announcement()))
        results = await push.push_all(record, replace=replace,
                                      route=(lambda p: route(settling, p)) if settling
                                      else None)
        self.last_push = {str(p): r for p, r in results.items()}
        log.info("announce.pushed", peers=len(results),
                 valid=sum(1 for r in results.values() if r == "valid"))
        if publish is not None:
            with contextlib.suppress(StackError, asyncio.CancelledError):
                await publish

    async def _refresh(self, settling: dict[PeerId, asyncio.Task[Connection | None]],
                       reason: str) -> None:
        """What we know about our network is the old one's: learn the NAT anew
        (``reason`` ``moved``: a new address, its mapping and filtering; ``woke``: the
        mapping, which may have outlived the sleep; ``stack.node.natinfo``) and, first,
        once the connections have settled, reserve again at once on every relay whose
        reservation did not survive the move (not after the relay service's failure
        backoff, up to a minute)."""
        node = self.node
        await asyncio.gather(*settling.values(), return_exceptions=True)
        if not node._started:
            return
        node.restart_lost_reservations()
        if node.nat is not None:
            node.nat.info.rebound(node.endpoint.local_address if node.endpoint else None)
            with contextlib.suppress(StackError):
                await node.nat.detect(reason)

    async def _publish(self, record: bytes) -> None:
        node = self.node
        assert node.dht is not None and node.published is not None
        try:
            stored = await node.dht.publish(record, 30.0)
        except StackError as exc:
            log.warning("dht.republish_failed", error=str(exc))
            return
        node._replicas = stored
        node.events.emit(AnnouncementPublished(node.peer_id, node.published.seq, stored,
                                               node.published.addrs))
