"""Know your NAT (issue 9 section 1): RFC 5780 discovery on the node's own UDP port.

``NatInfo`` runs ``nat.detect.NatDetector`` on the endpoint QUIC and the DHT use, so the
mapping it reports is the one peers see. STUN responses reach it from the port
demultiplexer: the node's STUN service hands every response to ``on_stun_response``
(requests stay with the server, which also answers our own hairpin probe), and a node
that serves no STUN registers ``receiver()`` instead. Responses are routed by
transaction id to whichever client owns them: the detector, or another client
(``add_client``: the keepalive).

Servers (the node picks them): ``NodeConfig.stun_servers`` (coturn-style RFC 5780
servers: filtering too) first, then the plain STUN servers every p2pstack node runs on
its port (bootstrap nodes, then DHT contacts on distinct IPs: mapping from comparing
their answers; filtering stays null unless an RFC 5780 server was given). One run
at a time; each finished run is the new ``report``, emitted as ``NatReported``
(``nat.report``) and passed to ``on_report``.

After a move to a new address (``detect("moved")``, ``stack.node.mobility``) the run
asks the RFC 5780 servers again: a new source address is a new mapping, with a filter no
earlier run opened. After a sleep (``detect("woke")``) the mapping may have survived, so
only plain servers are asked, and ``merge`` keeps what is still true.

Re-runs on the same port cannot test filtering again: the first run's phase 3 sent to
the RFC 5780 server's alternate address, which opened exactly the filter a second test
would probe (for as long as the NAT keeps the mapping). So once filtering is known the
node asks plain servers only (``wants_rfc5780``) and ``merge`` keeps the known filtering
while the public address stays the same; a moved mapping is a fresh one, tested anew.

``vetoes_server(report)``: what the report says against serving the DHT: any filtering
but endpoint-independent, or a mapping that depends on the destination. Unknown (null)
is no veto: the dial-back decides (``stack.node.protocols.autonat``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from stack.base.clock import Clock
from stack.base.net import Address, Datagram, Receiver, format_address, parse_host_port
from stack.node.events import EventBus, NatReported
from stack.node.keepalive import Keepalive

from nat.detect import NatDetector, NatReport
from nat.stun.codec import Decoded, StunDecodeError, decode
from nat.stun.transaction import RetransmitConfig
from nat.vocabulary import ADM, APDM, CLASSIC_CONE, EIF, EIM, Behaviour, NatKind

if TYPE_CHECKING:
    from stack.node.node import Node

log = structlog.get_logger("p2pstack.node")

__all__ = ["NatInfo", "NodeNat", "vetoes_server", "merge", "STUN_TEST_TIMEOUT",
           "DEFAULT_STUN_PORT", "PLAIN_SERVERS"]

STUN_TEST_TIMEOUT = 5.0  # seconds one detection test may take (retransmits inside)
DEFAULT_STUN_PORT = 3478
PLAIN_SERVERS = 3        # DHT servers (distinct IPs) asked beside the bootstrap nodes
WATCH_INTERVAL = 60.0    # seconds between checks whether a run could learn more

Owns = Callable[[bytes], bool]
Feed = Callable[[Decoded, Address], None]


def vetoes_server(report: NatReport | None) -> bool:
    """True when ``report`` shows a NAT that others cannot reach through unasked: it
    filters (address- or address-and-port-dependent) or maps per destination."""
    if report is None or not report.nat:
        return False
    if report.type == NatKind.SYMMETRIC:
        return True
    if report.mapping is not None and report.mapping != EIM:
        return True
    return report.filtering is not None and report.filtering != EIF


def merge(old: NatReport | None, new: NatReport) -> NatReport:
    """``new``, with what ``old`` knew and ``new`` could not test (mapping, filtering,
    hairpinning) while both saw the same public address (or both a symmetric NAT); the
    classic type re-derived."""
    if old is None or new.nat is None:
        return new
    # a symmetric NAT shows each server another address: same NAT while both say so
    both_symmetric = old.type == new.type == NatKind.SYMMETRIC
    if old.public_address != new.public_address and not both_symmetric:
        return new
    mapping = new.mapping or old.mapping
    filtering = new.filtering or old.filtering
    hairpin = new.hairpin if new.hairpin is not None else old.hairpin
    kind = new.type
    if not new.nat:
        kind = NatKind.OPEN
    elif new.type == NatKind.SYMMETRIC or mapping in (ADM, APDM):
        kind = NatKind.SYMMETRIC
    elif mapping == EIM and filtering is not None:
        kind = CLASSIC_CONE[Behaviour(filtering)]
    elif kind is None:
        kind = old.type
    notes = tuple(n for n in new.notes if not (
        (filtering and n.startswith("filtering untestable"))
        or (mapping and n.startswith("mapping untestable"))
        or (kind and n.startswith("classic type unknown"))))
    if filtering and not new.filtering:
        notes += ("filtering from an earlier run on this mapping",)
    return NatReport(new.public_address, new.nat, mapping, filtering, hairpin, kind, notes)


class NatInfo:
    """See the module docstring. ``send(data, addr)`` sends from the node's endpoint;
    ``local`` is its bound address, ``own_ips()`` the IPs a wildcard bind stands for."""

    def __init__(self, *, send: Callable[[bytes, Address], None], local: Address,
                 own_ips: Callable[[], list[str]], clock: Clock, events: EventBus,
                 on_report: Callable[[NatReport], None] | None = None,
                 rng: random.Random | None = None,
                 config: RetransmitConfig | None = None) -> None:
        self._send = send
        self._local = local
        self._own_ips = own_ips
        self._clock = clock
        self._events = events
        self._on_report = on_report
        self._rng = rng
        self._config = config or RetransmitConfig(timeout=STUN_TEST_TIMEOUT)
        self.servers: tuple[Address, ...] = ()  # asked in the latest run
        self._clients: list[tuple[Owns, Feed]] = []
        self._detector: NatDetector | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.report: NatReport | None = None
        self.reason: str | None = None   # why the current report was made
        self.runs = 0
        self.dropped = 0                 # STUN answers nobody asked for

    # ------------------------------------------------------------------ routing

    def add_client(self, owns: Owns, feed: Feed) -> None:
        """Route STUN messages whose transaction id ``owns`` says is its own to ``feed``."""
        self._clients.append((owns, feed))

    def on_stun_response(self, decoded: Decoded, addr: Address) -> None:
        """A STUN response (or, without a STUN server, any STUN message) on our port."""
        txid = decoded.transaction_id
        detector = self._detector
        if detector is not None and detector.owns(txid):
            detector.receive_decoded(decoded, addr, self._clock.now())
            self._wake.set()
            return
        for owns, feed in self._clients:
            if owns(txid):
                feed(decoded, addr)
                return
        self.dropped += 1

    def receiver(self) -> Receiver:
        """A demux receiver for a node that serves no STUN: everything is ours."""
        def receive(batch: list[Datagram]) -> None:
            for data, addr in batch:
                with contextlib.suppress(StunDecodeError):
                    self.on_stun_response(decode(data), addr)
        return receive

    # ---------------------------------------------------------------- detection

    async def detect(self, rfc5780: list[Address], plain: list[Address],
                     reason: str) -> NatReport | None:
        """One run against ``rfc5780`` (only while ``wants_rfc5780``, or when the mapping
        moved) then ``plain`` servers (duplicates and our own address left out); None
        when there is no server to ask. A ``join`` or ``refresh`` run that would ask
        nobody new keeps the report it has."""
        async with self._lock:  # decided in the lock: a run before ours may know more
            if not (self.wants_rfc5780 or reason in ("mapping-changed", "moved")):
                rfc5780 = []
            if (reason in ("join", "refresh") and self.report is not None
                    and set(rfc5780 + plain) <= set(self.servers)):
                return self.report
            own = set(self._own_ips())
            ordered = [s for s in dict.fromkeys([*rfc5780, *plain])
                       if not (s[1] == self._local[1] and (s[0] in own or s[0] == "0.0.0.0"))]
            if not ordered:
                return None
            self.servers = tuple(ordered)
            local_ip = self._local[0]
            if local_ip == "0.0.0.0":
                local_ip = next((ip for ip in own if not ip.startswith("127.")), "127.0.0.1")
            detector = NatDetector(ordered, (local_ip, self._local[1]), config=self._config,
                                   rng=self._rng, local_ips=tuple(own))
            self._detector = detector
            try:
                report = await self._drive(detector)
            finally:
                self._detector = None
            report = merge(self.report, report)
            self.report, self.reason = report, reason
            self.runs += 1
            self._events.emit(_event(report, len(ordered), reason))
            if self._on_report is not None:
                self._on_report(report)
            return report

    async def _drive(self, detector: NatDetector) -> NatReport:
        """The thin driver: flush, sleep until an answer or the core's timer, repeat."""
        clock = self._clock
        detector.start(clock.now())
        while True:
            for data, addr in detector.outgoing():
                self._send(data, addr)
            if detector.report is not None:
                return detector.report
            deadline = detector.next_timer()
            timeout = None if deadline is None else max(0.0, deadline - clock.now())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if deadline is not None and clock.now() >= deadline:
                detector.handle_timer(clock.now())

    def rebound(self, local: Address | None) -> None:
        """Our port was bound anew (a move, ``stack.node.mobility``): runs from now on
        test from ``local``."""
        if local is not None:
            self._local = local

    @property
    def wants_rfc5780(self) -> bool:
        """Ask the RFC 5780 servers again? Only while filtering is unknown (see above)."""
        return self.report is None or self.report.filtering is None

    def to_json(self) -> dict[str, Any] | None:
        """``status``'s ``nat.behaviour``: the report's keys, its notes and why it ran."""
        if self.report is None:
            return None
        return {**self.report.to_json(), "notes": list(self.report.notes),
                "reason": self.reason}


def _event(report: NatReport, servers: int, reason: str) -> NatReported:
    return NatReported(
        None if report.public_address is None else format_address(report.public_address),
        report.nat, report.mapping, report.filtering, report.hairpin, report.type,
        report.notes, servers, reason)


class NodeNat:
    """The Node's NAT part (built by ``Node.start`` once its port is bound): a
    ``NatInfo`` and a ``Keepalive`` (None when ``config.keepalive`` is off) on the
    node's endpoint, and the rules that use the report:

    * servers: ``config.stun_servers``, the bootstrap nodes, then up to
      ``PLAIN_SERVERS`` verified DHT contacts on IPs not asked yet (``detect``);
    * ``on_report``: an endpoint-independent mapping the servers agree on is the node's
      observed address (announced at the next address check: after a NAT reboot, the
      new one); a report that ``vetoes_server`` takes an auto-mode joiner out of DHT
      server mode (``publicly_reachable`` False);
    * ``no_nat()``: whether the report (waited for briefly) shows no translation, the
      one case where the bootstrap node's own dial-back proves reachability;
    * ``watch()`` (service ``nat.watch``): while there is no report, or its mapping is
      unknown, a ``refresh`` run each minute once new DHT servers are there to ask (the
      first node of a network learns its NAT from those who joined it);
    * keepalives only while ``behind_nat()``, to ``keepalive_targets`` (a few verified
      DHT neighbours, else the bootstrap nodes); a moved mapping re-runs discovery.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self._bootstrap: list[Address] = []  # resolved at the first run
        config, endpoint = node.config, node.endpoint
        assert endpoint is not None
        rng = None if config.rng_seed is None else random.Random(config.rng_seed)
        self.info = NatInfo(send=endpoint.send, local=endpoint.local_address,
                            own_ips=node.own_ips, clock=node.clock, events=node.events,
                            on_report=self.on_report, rng=rng)
        node.demux.register_stun(self.info.receiver())  # a STUN server on the port replaces it
        self.keepalive: Keepalive | None = None
        if config.keepalive is not None:
            self.keepalive = Keepalive(
                send=endpoint.send, clock=node.clock, events=node.events,
                behind_nat=self.behind_nat, targets=self.keepalive_targets,
                interval=config.keepalive, peers=config.keepalive_peers, rng=rng,
                on_change=self._mapping_changed, expected=self.eim_mapping)
            self.info.add_client(self.keepalive.owns, self.keepalive.feed)

    async def detect(self, reason: str) -> NatReport | None:
        node = self._node
        rfc5780 = [await node.resolve_udp(parse_host_port(text, DEFAULT_STUN_PORT))
                   for text in node.config.stun_servers]
        bootstrap = self._bootstrap = list(await node.bootstrap_addresses())
        plain = list(bootstrap)
        if node.dht is not None:  # DHT servers on IPs not asked yet: mapping across them
            ips, table = {ip for ip, _ in plain}, node.dht.core.table
            for contact in table.closest(table.own_id, 20, True):
                if contact.addr[0] not in ips and len(plain) < len(bootstrap) + PLAIN_SERVERS:
                    ips.add(contact.addr[0])
                    plain.append(contact.addr)
        return await self.info.detect(rfc5780, plain, reason)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            report = self.info.report
            if report is None or (report.nat and report.mapping is None
                                  and report.type is None):
                await self.detect("refresh")

    def _mapping_changed(self) -> None:
        self._node.supervisor.spawn(self.detect("mapping-changed"))

    def on_report(self, report: NatReport) -> None:
        node = self._node
        public = report.public_address
        if (report.nat and report.mapping == EIM and public is not None
                and public != node.observed_address and node.quic is not None):
            log.info("address.observed", address=format_address(public), by="stun")
            # through mobility (issue 10): announced from now on, and a different mapping
            # than the last is a move (address.changed, re-announced and pushed at once)
            node.report_mapped_address(public, "stun")
        dht = node.dht
        if (dht is not None and dht.core.server and node.config.dht_server is None
                and node.config.bootstrap and vetoes_server(report)):
            dht.core.set_server(False)
            node.publicly_reachable = False
            log.info("dht.mode", server=False, because=f"NAT {report.type or report.filtering}")

    async def no_nat(self) -> bool:
        waiter = self._node.next_event(NatReported, timeout=self._node.options.handshake_timeout)
        if self.info.report is not None:
            waiter.cancel()
            return self.info.report.nat is False
        with contextlib.suppress(TimeoutError):
            return (await waiter).nat is False
        return False

    def eim_mapping(self) -> Address | None:
        """Our public address when discovery found one mapping for every destination."""
        report = self.info.report
        if report is None or report.mapping != EIM or not report.nat:
            return None
        return report.public_address

    def behind_nat(self) -> bool:
        if self.info.report is not None:
            return self.info.report.nat is True
        return self._node.observed_address is not None

    def keepalive_targets(self, count: int) -> list[Address]:
        dht = self._node.dht
        if dht is not None:
            table = dht.core.table
            near = [c.addr for c in table.closest(table.own_id, count, True)]
            if near:
                return near
        return self._bootstrap[:count]
