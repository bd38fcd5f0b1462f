"""NAT behaviour discovery (RFC 5780 section 4, RFC 4787 terms): sans-I/O core + driver.

The core runs three phases on one local endpoint (one NAT mapping):

1. **Binding (test I).** Servers are asked one after another until one answers; that one
   is the *primary*: its XOR-MAPPED-ADDRESS is the public address, ``nat`` is "mapped
   address != local address". Nothing answers -> ``type = "udp-blocked"``. (One at a
   time, so no other server's address has opened the NAT's filter before phase 2. A
   plain server listed *before* the RFC 5780 one, on the RFC 5780 server's alternate
   IP, would still open it: list the RFC 5780 server first.)
2. **Filtering** (only if the primary gave OTHER-ADDRESS = (ip', port')), both at once:
   change-ip(+port) answered from (ip', port') -> endpoint-independent; else
   change-port answered from (ip, port') -> address-dependent, else
   address-and-port-dependent. It runs before phase 3 because phase 3 sends to
   (ip', port'), which would open exactly the filter being tested.
3. **Mapping and hairpinning**, all at once: test II to (ip', port), test III to
   (ip', port'); same mapped address as test I -> endpoint-independent, test III same as
   test II -> address-dependent, else address-and-port-dependent. Every other server
   gets a Binding request too: with no OTHER-ADDRESS anywhere, mapping comes from
   comparing mapped addresses across servers (all equal -> endpoint-independent;
   servers on one IP and different ports disagreeing -> address-and-port-dependent,
   agreeing while different IPs disagree -> address-dependent; only different IPs that
   disagree -> "not endpoint-independent": mapping null, type symmetric). Hairpinning:
   a Binding request to our own mapped address; seeing it arrive (or a node's answer to
   it) -> true, timeout -> false. Not tested without a NAT.

Every request retransmits on the RFC 8489 schedule (``RetransmitConfig``), so loss only
costs time. Whatever cannot be tested is null in the report, with a line in ``notes``.
Classic names (DESIGN.md section 6): no NAT -> open; EIM+EIF full-cone, EIM+ADF
restricted-cone, EIM+APDF port-restricted-cone; ADM or APDM -> symmetric.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from stack.base.clock import Clock
from stack.base.net import Address, Datagram, DatagramEndpoint, DatagramNetwork, format_address

from nat.errors import NatUsageError
from nat.stun.codec import Class, Decoded, StunDecodeError, decode
from nat.stun.transaction import (
    BindingError,
    BindingSuccess,
    RetransmitConfig,
    StunClient,
    StunEvent,
    TransactionTimeout,
)
from nat.vocabulary import ADF, ADM, APDF, APDM, CLASSIC_CONE, EIF, EIM, Behaviour, NatKind

__all__ = [
    "EIM", "ADM", "APDM", "EIF", "ADF", "APDF",
    "NatReport",
    "DetectionDone",
    "NatDetector",
    "detect_nat",
    "detect_on",
]

_NOT_EIM = "not-endpoint-independent"  # internal: ADM or APDM, undecided


@dataclass(frozen=True)
class NatReport:
    """The result. ``to_json()`` gives exactly the six keys of the CLI's JSON object.

    ``public_address``: mapped address from the primary server (None if udp-blocked).
    ``nat``: mapped != local. ``mapping`` / ``filtering``: RFC 4787 behaviour or None
    when untestable. ``hairpin``: None when untested. ``type``: classic name,
    ``udp-blocked``, or None when it cannot be named. ``notes``: why things are None.
    """

    public_address: Address | None
    nat: bool | None
    mapping: str | None
    filtering: str | None
    hairpin: bool | None
    type: str | None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "public_address": (format_address(self.public_address)
                               if self.public_address else None),
            "nat": self.nat,
            "mapping": self.mapping,
            "filtering": self.filtering,
            "hairpin": self.hairpin,
            "type": self.type,
        }


@dataclass(frozen=True)
class DetectionDone:
    """Emitted once, when the report is final."""

    report: NatReport


@dataclass
class _Test:
    name: str  # "bind", "filter-ip", "filter-port", "map-2", "map-3", "map-port", "hairpin"
    server: Address


@dataclass
class _Results:
    mapped: dict[Address, Address] = field(default_factory=dict)  # server -> mapped
    primary: Address | None = None
    other: Address | None = None
    filter_ip: bool | None = None  # None: not run (or server refused)
    filter_port: bool | None = None
    map_2: Address | None = None
    map_3: Address | None = None
    map_port: Address | None = None
    hairpin: bool | None = None
    errors: int = 0


class NatDetector:
    """RFC 5780 behaviour discovery, sans-I/O.

    ``servers``: STUN servers in order of preference. ``local``: the concrete local
    address of the endpoint (not 0.0.0.0: ``nat`` compares against it). ``config``:
    retransmission schedule of every test. ``rng``: for reproducible transaction ids.
    ``local_ips``: further IPs that are ours (an endpoint bound to a wildcard): a mapped
    address at one of them with our port is no translation either.
    """

    def __init__(self, servers: list[Address], local: Address, *,
                 config: RetransmitConfig | None = None,
                 rng: random.Random | None = None, test_hairpin: bool = True,
                 local_ips: tuple[str, ...] = ()) -> None:
        if not servers:
            raise NatUsageError("NAT detection needs at least one STUN server")
        self._servers = list(dict.fromkeys(servers))
        self._local = local
        self._local_ips = frozenset(local_ips) | {local[0]}
        self._client = StunClient(config, rng)
        self._test_hairpin = test_hairpin
        self._tests: dict[bytes, _Test] = {}
        self._results = _Results()
        self._phase = "idle"
        self._next_server = 0
        self._events: deque[DetectionDone] = deque()
        self.report: NatReport | None = None
        self.dropped: Counter[str] = self._client.dropped

    # -- core interface ------------------------------------------------------------------

    def start(self, now: float) -> None:
        if self._phase != "idle":
            raise NatUsageError("detection already started")
        self._phase = "bind"
        self._bind_next(now)

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one datagram that arrived on the detection endpoint."""
        if self.report is not None:
            self.dropped["after-done"] += 1
            return
        try:
            decoded = decode(data)
        except StunDecodeError as exc:
            self.dropped[exc.reason] += 1
            return
        self.receive_decoded(decoded, addr, now)

    def receive_decoded(self, decoded: Decoded, addr: Address, now: float) -> None:
        """Like ``receive`` for a message the caller already decoded (a node's port
        demultiplexer decodes STUN once and routes it by transaction id)."""
        if self.report is not None:
            self.dropped["after-done"] += 1
            return
        txid = decoded.transaction_id
        if decoded.message.message_class == Class.REQUEST:
            test = self._tests.get(txid)
            if test is not None and test.name == "hairpin":
                # Our own request came back through the NAT: it hairpins.
                self._client.cancel(txid)
                del self._tests[txid]
                self._results.hairpin = True
                self._advance(now)
            else:
                self.dropped["request"] += 1
            return
        self._client.receive_decoded(decoded, addr, now)
        self._advance(now)

    def owns(self, transaction_id: bytes) -> bool:
        """Is this one of our tests' transactions (where to route a response)?"""
        return transaction_id in self._tests

    def outgoing(self) -> list[tuple[bytes, Address]]:
        return self._client.outgoing()

    def next_timer(self) -> float | None:
        return self._client.next_timer()

    def handle_timer(self, now: float) -> None:
        self._client.handle_timer(now)
        self._advance(now)

    def next_event(self) -> DetectionDone | None:
        return self._events.popleft() if self._events else None

    # -- phases --------------------------------------------------------------------------

    def _request(self, name: str, server: Address, now: float, **kwargs: Any) -> None:
        txid = self._client.request(server, now, **kwargs)
        self._tests[txid] = _Test(name, server)

    def _bind_next(self, now: float) -> None:
        server = self._servers[self._next_server]
        self._next_server += 1
        self._request("bind", server, now)

    def _advance(self, now: float) -> None:
        while (event := self._client.next_event()) is not None:
            self._record(event)
        if self._tests or self.report is not None:
            return  # the current phase still waits for answers
        res = self._results
        if self._phase == "bind":
            if res.primary is None:
                if self._next_server < len(self._servers):
                    self._bind_next(now)
                    return
                self._finish(self._blocked())
                return
            self._phase = "filter"
            self._start_filtering(now)
            if self._tests:
                return
        if self._phase == "filter":
            self._phase = "map"
            self._start_mapping(now)
            if self._tests:
                return
        self._finish(self._build_report())

    def _record(self, event: StunEvent) -> None:
        test = self._tests.pop(event.transaction_id, None)
        if test is None:
            return
        res = self._results
        if isinstance(event, TransactionTimeout):
            if test.name == "filter-ip":
                res.filter_ip = False
            elif test.name == "filter-port":
                res.filter_port = False
            elif test.name == "hairpin":
                res.hairpin = False
            return
        if isinstance(event, BindingError):
            res.errors += 1  # e.g. 420: the server cannot change address: test not run
            return
        assert isinstance(event, BindingSuccess)
        if test.name == "bind":
            res.mapped[test.server] = event.mapped_address
            if res.primary is None:
                res.primary = test.server
                other = event.other_address
                if other is not None and other != test.server:
                    res.other = other
        elif test.name == "filter-ip":
            res.filter_ip = True
        elif test.name == "filter-port":
            res.filter_port = True
        elif test.name == "map-2":
            res.map_2 = event.mapped_address
        elif test.name == "map-3":
            res.map_3 = event.mapped_address
        elif test.name == "map-port":
            res.map_port = event.mapped_address
        elif test.name == "hairpin":
            res.hairpin = True  # a node answered its own request: it got there

    def _start_filtering(self, now: float) -> None:
        res = self._results
        primary, other = res.primary, res.other
        if primary is None or other is None:
            return
        if other[0] != primary[0]:
            change_port = other[1] != primary[1]
            self._request("filter-ip", primary, now, change_ip=True, change_port=change_port,
                          expect_from=other)
        if other[1] != primary[1]:
            self._request("filter-port", primary, now, change_port=True,
                          expect_from=(primary[0], other[1]))

    def _start_mapping(self, now: float) -> None:
        res = self._results
        primary, other = res.primary, res.other
        assert primary is not None
        if other is not None:
            if other[0] != primary[0]:
                self._request("map-2", (other[0], primary[1]), now)
                if other[1] != primary[1]:
                    self._request("map-3", other, now)
            else:
                self._request("map-port", (primary[0], other[1]), now)
        for server in self._servers[self._next_server:]:
            self._request("bind", server, now)
        self._next_server = len(self._servers)
        public = res.mapped[primary]
        if self._test_hairpin and self._translated(public):
            self._request("hairpin", public, now)

    def _finish(self, report: NatReport) -> None:
        self.report = report
        self._phase = "done"
        self._events.append(DetectionDone(report))

    # -- the verdict ---------------------------------------------------------------------

    def _blocked(self) -> NatReport:
        res = self._results
        if res.errors:
            return NatReport(None, None, None, None, None, None,
                             ("every STUN server answered with an error response",))
        return NatReport(None, None, None, None, None, NatKind.UDP_BLOCKED,
                         ("no STUN server answered",))

    def _build_report(self) -> NatReport:
        res = self._results
        assert res.primary is not None
        public = res.mapped[res.primary]
        nat = self._translated(public)
        notes: list[str] = []
        mapping = self._mapping(nat, notes)
        filtering = self._filtering(notes)
        hairpin = res.hairpin if nat else None
        if not nat:
            notes.append("no NAT: hairpinning not tested")
        elif not self._test_hairpin:
            notes.append("hairpinning not tested")
        if not nat:
            kind: str | None = NatKind.OPEN
        elif mapping in (ADM, APDM, _NOT_EIM):
            kind = NatKind.SYMMETRIC
        elif mapping == EIM and filtering is not None:
            kind = CLASSIC_CONE[Behaviour(filtering)]
        else:
            kind = None
            notes.append("classic type unknown: mapping or filtering untestable")
        if mapping == _NOT_EIM:
            mapping = None
        return NatReport(public, nat, mapping, filtering, hairpin, kind, tuple(notes))

    def _translated(self, mapped: Address) -> bool:
        return mapped != self._local and not (mapped[1] == self._local[1]
                                              and mapped[0] in self._local_ips)

    def _mapping(self, nat: bool, notes: list[str]) -> str | None:
        res = self._results
        assert res.primary is not None
        m1 = res.mapped[res.primary]
        if not nat:
            return EIM  # RFC 5780 section 4.3: no translation, so nothing depends on the peer
        if res.map_2 is not None:
            if res.map_2 == m1:
                return EIM
            if res.map_3 is not None:
                return ADM if res.map_3 == res.map_2 else APDM
            notes.append("server has no alternate port: ADM and APDM not told apart")
            return _NOT_EIM
        if res.map_port is not None:
            if res.map_port != m1:
                return APDM
            notes.append("server has no alternate IP: EIM and ADM not told apart")
            return None
        return self._mapping_across_servers(notes)

    def _mapping_across_servers(self, notes: list[str]) -> str | None:
        mapped = self._results.mapped
        if len(mapped) < 2:
            notes.append("mapping untestable: one server answered and gave no OTHER-ADDRESS")
            return None
        if len(set(mapped.values())) == 1:
            return EIM
        by_ip: dict[str, set[Address]] = {}
        for server, m in mapped.items():
            by_ip.setdefault(server[0], set()).add(m)
        same_ip_groups = [ms for ip, ms in by_ip.items()
                          if sum(1 for s in mapped if s[0] == ip) > 1]
        if any(len(ms) > 1 for ms in same_ip_groups):
            return APDM
        if same_ip_groups:
            return ADM
        notes.append("servers on different IPs only: ADM and APDM not told apart")
        return _NOT_EIM

    def _filtering(self, notes: list[str]) -> str | None:
        res = self._results
        if res.other is None:
            notes.append("filtering untestable: no server gave OTHER-ADDRESS (RFC 5780)")
            return None
        if res.filter_ip:
            return EIF
        if res.filter_port is True:
            if res.filter_ip is None:
                notes.append("server has no alternate IP: EIF and ADF not told apart")
                return None
            return ADF
        if res.filter_port is False:
            return APDF
        if res.filter_ip is False:
            notes.append("server has no alternate port: ADF and APDF not told apart")
        else:
            notes.append("filtering untestable: the server refused CHANGE-REQUEST")
        return None


async def detect_nat(endpoint_factory: Any, servers: list[Address], clock: Clock, *,
                     config: RetransmitConfig | None = None,
                     rng: random.Random | None = None,
                     local_ip: str | None = None) -> NatReport:
    """Run a ``NatDetector`` on a fresh endpoint; return the report.

    ``endpoint_factory``: ``async (receiver) -> DatagramEndpoint`` (e.g. a lambda around
    ``network.bind((host, 0), receiver)``); the endpoint is closed on return.
    ``local_ip``: the concrete local IP when the endpoint is bound to a wildcard (the
    detector compares the mapped address with the local one).
    Time comes from ``clock`` and ``asyncio.sleep`` waits for the core's timer, so the
    same driver runs on the simulator's virtual-time loop.
    """
    wake = asyncio.Event()
    inbox: list[Datagram] = []

    def receiver(batch: list[Datagram]) -> None:
        inbox.extend(batch)
        wake.set()

    endpoint: DatagramEndpoint = await endpoint_factory(receiver)
    try:
        bound_ip, bound_port = endpoint.local_address
        detector = NatDetector(servers, (local_ip or bound_ip, bound_port), config=config,
                               rng=rng)
        detector.start(clock.now())
        while detector.report is None:
            for data, addr in detector.outgoing():
                endpoint.send(data, addr)
            if detector.report is not None:
                break
            deadline = detector.next_timer()
            timeout = None if deadline is None else max(0.0, deadline - clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
            wake.clear()
            now = clock.now()
            batch, inbox[:] = list(inbox), []
            for data, addr in batch:
                detector.receive(data, addr, now)
            if deadline is not None and now >= deadline:
                detector.handle_timer(now)
        for data, addr in detector.outgoing():
            endpoint.send(data, addr)
        return detector.report
    finally:
        endpoint.close()


async def detect_on(network: DatagramNetwork, bind: Address, servers: list[Address],
                    clock: Clock, **kwargs: Any) -> NatReport:
    """``detect_nat`` on an endpoint bound at ``bind`` on ``network``."""
    return await detect_nat(lambda r: network.bind(bind, r), servers, clock, **kwargs)
