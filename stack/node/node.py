"""The Node: identity, trust store, one UDP port (STUN + QUIC + DHT), TLS over TCP.

``Node`` is the composer (DESIGN.md section 1): it builds the layers from a
``NodeConfig`` and wires them; none of them knows about the others. It routes protocols
(``stack.node.router``; the built-in ones are in ``stack.node.protocols``), runs its
background work under a ``Supervisor`` and reports what happens as events
(``stack.node.events``).

Lifecycle: ``await node.start()`` binds the UDP port (QUIC, STUN server) and the TCP
port of the same number (TLS); ``await node.stop()`` closes connections gracefully.
The network and clock are injected, so the same Node runs on the simulator (QUIC only:
``NodeConfig(tls=False)``).

Trust (DESIGN.md section 5, seeds 000/001): dialing a peer id enforces it
(``PeerIdMismatch``) and asks ``TrustStore.check_peer``; dialing an address asks
``check_address`` (TOFU pin, "changed" refused); accepting asks ``check_peer``. A refusal
closes the connection and raises ``TrustRefused`` (dial) or drops it (accept). The
checks run off the event loop (``check_*_async``); a decision is emitted as
``TrustChecked`` and acted on only once its records are durable, so after a ``kill -9``
every pin the application saw is on disk. State lives in ``config.stores``
(``Stores.file(data_dir)`` by default; simulations use ``Stores.memory()``).

Bidirectional trust (seed 000): the identify protocol's listener dials the dialer back
(``protocols.autonat``); the dialer learns the outcome (``DialbackResult`` event,
``node.reachability``).

Discovery (issue 5): with ``config.dht`` the Kademlia DHT runs on the same UDP port
(first byte ``DHT_BYTE``). ``await node.join()`` bootstraps from ``config.bootstrap`` and
starts the ``dht.publisher`` service: it publishes our signed announcement (seed 004:
our addresses, the next persisted sequence number), retrying until some DHT node stores
it, then re-publishes when our addresses change; the DHT driver re-signs it as it ages.
``node.resolve(peer_id)`` returns a peer's verified announcement, and ``connect(peer_id)``
falls back to it when the trust store knows no address of that peer.

LAN (issue 12): with ``config.mdns`` the ``mdns`` service advertises our addresses and
browses the link (``discovery.mdns``). ``connect(peer_id)`` tries what mDNS claims of
that peer on our link first (path LAN), then the trust store and the DHT. A claim is
only a claim: the QUIC handshake proves the peer id, and an address that proves another
id is refuted (``mdns.peers.stats['spoofed']``).

Relay (issue 9, ``nat.relay``): with ``config.relay_service`` the node serves circuit
relay v2 (``/p2pstack/relay/hop/1``); with ``config.relays`` it keeps a reservation on
each (``relay.reservation <addr>`` services) and announces its relayed addresses ahead of
its listen addresses. ``connect`` dials a p2p-circuit address through the relay, and a
peer id through the relayed addresses it knows or the DHT announces once the direct ones
failed; the connection's path is RELAYED (``protocols.relay``).

NAT (issue 9 section 1): ``stack.node.natinfo`` learns our NAT behaviour on our own UDP
port at start, after joining and on ``detect_nat()`` (``nat.report`` events, ``status``);
``stack.node.keepalive`` keeps the mapping alive while behind a NAT (service
``nat.keepalive``). In auto mode a joiner serves the DHT only if a *third* node's IP
dialed it back (``protocols.autonat.AutoNat``; with no NAT, the bootstrap node's own
dial-back suffices) and its NAT report does not show a filtering NAT.

Hole punching (issue 9, ``protocols.dcutr``): with ``config.hole_punch`` (default) a
relayed connection is upgraded to a direct one (connection reversal, else a
synchronised punch from our shared UDP port, up to 3 attempts); ``connect(peer_id)``
then returns the direct connection and the relayed one closes after
``hole_punch_grace`` seconds. Every node answers the punch datagrams' reflect requests
(``PUNCH_BYTE`` on the port demux).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog

from stack.base.addresses import PeerAddress, parse_address
from stack.base.clock import Clock, SystemClock
from stack.base.errors import LocalError, StackError, UsageError
from stack.base.files import remove_stale_temps
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, PathKind, PathSocket, Transport
from stack.base.net import (MDNS_GROUP, Address, DatagramEndpoint, DatagramNetwork,
                            MulticastNetwork, Receiver, UdpNetwork, format_address)
from stack.base.port import DHT_BYTE, PUNCH_BYTE, PortDemux
from stack.base.records import Announcement, RecordTooLarge, sign_announcement
from discovery.announcements import announcement_of
from discovery.core import DhtConfig, DhtCore
from discovery.driver import DhtDriver
from discovery.errors import BootstrapFailed, DhtTimeout, PublishFailed, RecordNotFound
from discovery.lan import Candidate, LanPeers, instance_name
from discovery.mdns import MdnsLink, MdnsService
from discovery.mdns_link import DatagramLink
from nat.errors import RelayRefused
from nat.relay.client import ActiveReservation, ReservationKeeper
from nat.relay.limits import RelayLimits, RelayMode
from nat.relay.server import RelayServer
from nat.detect import NatReport
from nat.vocabulary import APDM, NatKind
from stack.node import operations
from stack.node.config import NodeConfig
from stack.node.keepalive import Keepalive
from stack.node.natinfo import NatInfo, NodeNat, vetoes_server
from stack.node.control import ControlServer, Method, socket_path
from stack.node.events import (AnnouncementPublished, ConnectionClosed, ConnectionOpened,
                               DialbackResult, DialbackRole, EventBus, EventWaiter,
                               IdentityReceived, NodeEvent, RelayReservation, ServiceFailed,
                               TrustChecked)
from stack.node.migration import Migration
from stack.node.mobility import Mobility, MovableEndpoint
from stack.node.protocols.announce_push import AnnouncePushProtocol
from stack.node.protocols.autonat import AutoNat, DialBack, Helper
from stack.node.protocols.birthday import Birthday
from stack.node.protocols.dcutr import HolePunch
from stack.node.protocols.echo import PROTO_ECHO, EchoProtocol, echo
from stack.node.protocols.identify import PROTO_IDENTIFY, IdentifyProtocol
from stack.node.protocols.ping import PROTO_PING, PingProtocol, ping_once
from stack.node.protocols.relay import RelayStopProtocol, dial_relayed
from stack.node.turn import NodeTurn
from stack.node.protocols.rendezvous import RendezvousService
from stack.node.rooms import ROOMS_FILE, NodeRooms
from stack.node.roomdocs import STATE_DIR
from stack.node.roomsync import RoomSync
from stack.node.roomtrust import MEMBERS_FILE, RoomTrust
from stack.node.roomdht import NodeRecordValidator, RoomDht
from stack.node.protocols.roomadmit import RoomAdmitProtocol
from stack.node.router import Router
from stack.node.supervisor import Supervisor
from stack.store.stores import Stores
from stack.store.trust import TrustDecision, TrustStore
from stack.transport.certs import CertificateVerifier, CertifiedKey, make_certificate
from stack.transport.errors import DialFailed, PeerIdMismatch, TransportError, TrustRefused
from stack.transport.options import ConnectionLimits, Registry, TransportOptions
from stack.transport.quic import PathReceiver, QuicConn, QuicTransport
from stack.transport.tls import TlsTransport

__all__ = ["Node", "NodeEvent", "ConnectionOpened", "ConnectionClosed", "TrustChecked",
           "IdentityReceived", "DialbackResult", "AnnouncementPublished", "ServiceFailed",
           "PROTO_IDENTIFY", "PROTO_PING", "PROTO_ECHO", "ADDRESS_CHECK_INTERVAL"]

log = structlog.get_logger("p2pstack.node")

ADDRESS_CHECK_INTERVAL = 60.0  # seconds between checks that our addresses are unchanged
# A dial by peer id starts its next address this long after the last, unless that one
# failed first (RFC 8305 suggests 250 ms; go-libp2p delays relayed addresses 500 ms).
DIAL_STAGGER = 0.25
OBSERVERS_TO_CONFIRM = 2       # peer IPs that must report one observed address
MAX_OBSERVED = 16              # observed addresses remembered, confirmed or not
LAN_DIALS = 3                  # mDNS-claimed addresses tried per dial by peer id
E = TypeVar("E")


def _addr_text(addr: Address) -> str:
    return format_address(addr)


class Node:
    """One p2pstack node. See the module docstring."""

    def __init__(self, config: NodeConfig, *, network: DatagramNetwork | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self._network: DatagramNetwork = network if network is not None else UdpNetwork()
        self.clock: Clock = clock if clock is not None else SystemClock()
        if config.identity is not None:
            self.identity = config.identity
        else:
            self.identity, _ = Identity.load_or_create(config.data_dir)
        # Durable state (trust, sequence numbers, replay): files in data_dir unless the
        # config brings its own (simulations: Stores.memory()). The node never does
        # file I/O for them on the event loop: trust checks go through the store's
        # writer thread (check_*_async), sequence numbers are reserved ahead in blocks.
        self.stores = config.stores if config.stores is not None else Stores.file(config.data_dir)
        self.trust = TrustStore(storage=self.stores.trust, policy=config.trust_policy,
                                clock=self.clock)
        if config.dht and config.publish:
            self.stores.sequence.prefetch()  # reserve a block now, on a background thread
        self.options = TransportOptions(
            handshake_timeout=config.handshake_timeout, idle_timeout=config.idle_timeout,
            keep_alive=config.keep_alive,
            limits=ConnectionLimits(config.max_connections, config.max_connections_per_peer,
                                    config.max_streams_per_connection,
                                    config.max_streams_per_peer))
        self.registry = Registry(self.options.limits)
        self.verifier = CertificateVerifier()  # shared: a peer's certificate serves both
        self.demux = PortDemux()
        self.endpoint: DatagramEndpoint | None = None
        self.quic: QuicTransport | None = None
        self.tls: TlsTransport | None = None
        self.stun: Any = None
        self.tls_address: Address | None = None
        self.events = EventBus()
        self.supervisor = Supervisor(self.events)
        self.router = self._build_router()
        # open connections in the order they opened (a dict, not a set: a set of objects
        # iterates by memory address, which made two simulated runs of one seed differ)
        self._connections: dict[Connection, None] = {}
        self._started = False
        self.dht: DhtDriver | None = None
        # Our UDP port as peers saw it (identify's observed address, e.g. a NAT's public
        # mapping), once confirmed (see _learn_observed). Only ever added to what we
        # announce, never used to replace our own addresses.
        self.observed_address: Address | None = None
        self._observations: dict[Address, set[str]] = {}  # claimed address -> observer IPs
        self._certified: CertifiedKey | None = None
        self.published: Announcement | None = None
        self._published_addrs: tuple[str, ...] | None = None
        self._record: bytes | None = None  # our latest signed announcement
        self._bootstrap_addrs: list[Address] = []  # resolved config.bootstrap
        self._replicas = 0                 # DHT nodes that stored it at our last put
        self._table_at_put = 0             # our routing-table size at that put
        # Did a dial-back from our bootstrap node reach us (None: not probed)?
        self.publicly_reachable: bool | None = None
        self.nat: NodeNat | None = None            # our NAT's behaviour and keepalives
        self.natinfo: NatInfo | None = None        # (its parts; after start)
        self.keepalive: Keepalive | None = None
        self.control: ControlServer | None = None
        self._started_at = 0.0
        self.mdns: MdnsService | None = None  # LAN discovery (config.mdns)
        self.migration = Migration(self)  # issue 10: our connections across our move
        # Issue 13: the rooms we are in (rooms.json; memory only with in-memory stores)
        self.rooms = NodeRooms(
            identity=self.identity, clock=self.clock, events=self.events, trust=self.trust,
            connect=self._rendezvous_link, addrs=self._member_addrs,
            run_service=self.supervisor.run,
            spawn=self.supervisor.spawn, timeout=self.options.handshake_timeout,
            path=None if config.stores is not None else config.data_dir / ROOMS_FILE)
        # Issue 13 section 2: members check newcomers themselves, on direct connections
        self.roomtrust = RoomTrust(
            identity=self.identity, clock=self.clock, events=self.events, trust=self.trust,
            rooms=self.rooms, connect=self._rendezvous_link, dial=self.connect_peer,
            connections=lambda: self.connections,
            addrs=self._member_addrs, run_service=self.supervisor.run,
            spawn=self.supervisor.spawn, timeout=self.options.handshake_timeout,
            path=None if config.stores is not None else config.data_dir / MEMBERS_FILE)
        self.router.add(self.roomtrust.protocol)
        # Issue 13 section 1: rooms found through the DHT, the rendezvous a convenience
        self.roomdht = RoomDht(
            identity=self.identity, clock=self.clock, events=self.events, rooms=self.rooms,
            roomtrust=self.roomtrust, dht=lambda: self.dht, resolve=self.resolve,
            link=self.roomtrust.link, connections=lambda: self.connections,
            addrs=self._member_addrs,
            run_service=self.supervisor.run, timeout=self.options.handshake_timeout)
        self.rooms.changed = self.roomdht.wake
        if config.dht:  # with no rendezvous: admissions on direct connections
            self.rooms.direct = lambda name, code, ask: self.roomdht.admit(
                name, code, ask, self.rooms.guard)
            self.roomadmit = RoomAdmitProtocol(self.rooms.serve_direct, self.rooms.has_invite,
                                               self.options.handshake_timeout)
            self.router.add(self.roomadmit)
        # Issue 13 section 4: the room's shared document, synced between members
        self.roomsync = RoomSync(
            identity=self.identity, events=self.events, rooms=self.rooms,
            trust=self.roomtrust, connections=lambda: self.connections,
            link=self.roomtrust.link, run_service=self.supervisor.run,
            spawn=self.supervisor.spawn, timeout=self.options.handshake_timeout,
            path=None if config.stores is not None else config.data_dir / STATE_DIR)
        self.router.add(self.roomsync.protocol)

    def _build_router(self) -> Router:
        """The built-in protocols. A new protocol is one more ``router.add``."""
        router = Router(self.options.handshake_timeout)
        dial_back = None
        if self.config.dial_back:
            dial_back = DialBack(transport_for=self._dial_back_transport, trust=self.trust,
                                 events=self.events, timeout=self.config.dial_back_timeout)
        self.identify = IdentifyProtocol(
            identity=self.identity, clock=self.clock, display_name=self.config.display_name,
            listen_addrs=self.addrs, events=self.events,
            handshake_timeout=self.options.handshake_timeout,
            verdict_timeout=self.config.dial_back_timeout + self.options.handshake_timeout + 5,
            dial_back=dial_back, spawn=self.supervisor.spawn, on_observed=self._learn_observed)
        self.autonat = AutoNat(transport_for=self._dial_back_transport,
                               connect=self._connect_helper, helpers=self._autonat_helpers,
                               own_ips=self._own_ips, clock=self.clock, events=self.events,
                               timeout=self.config.dial_back_timeout,
                               connect_timeout=self.options.handshake_timeout)
        autonat = self.autonat.protocols if self.config.dial_back else \
            self.autonat.client_protocols
        for protocol in (self.identify, PingProtocol(), EchoProtocol(), *autonat):
            router.add(protocol)
        # Issue 10: signed announcements pushed to recent peers, verified, relayed.
        self.announce_push = AnnouncePushProtocol(
            identity=self.identity, clock=self.clock, trust_entry=self.trust.get_async,
            replay=self.stores.replay, connect=self._push_connect,
            connections=lambda: list(self._connections), events=self.events,
            spawn=self.supervisor.spawn, running=lambda: self._started,
            resolve=self.resolve if self.config.dht else None,
            reresolve=self.config.keep_alive is not None)
        router.add(self.announce_push)
        self._add_relay_protocols(router)
        self._add_hole_punching(router)
        self._add_turn()
        # Issue 13: rooms' rendezvous (membership announcements, opaque invite messages)
        self.rendezvous: RendezvousService | None = None
        if self.config.rendezvous:
            self.rendezvous = RendezvousService(clock=self.clock,
                                                timeout=self.options.handshake_timeout)
            router.add(self.rendezvous)
        return router

    def _add_turn(self) -> None:
        """TURN allocations (issue 9, ``stack.node.turn``); a bad URL is a ``UsageError``."""
        def changed() -> None:
            if self.dht is not None and self._record is not None and self._started:
                async def republish() -> None:
                    with contextlib.suppress(StackError):
                        await self.republish_if_moved()
                self.supervisor.spawn(republish())

        self.turn = NodeTurn(urls=self.config.turn, permits=self.config.turn_permit,
                             me=self.peer_id, accept_path=self._accept_path,
                             events=self.events, timeout=self.options.handshake_timeout,
                             spawn=self.supervisor.spawn, on_change=changed)

    def _random(self) -> random.Random:
        """A random source for one component: seeded and reproducible in simulations
        (``rng_seed``), else the OS's CSPRNG. A Mersenne Twister seeded from urandom is
        not enough here: the DHT's txids show its output, and 624 words of output give
        its whole state, so an observer could predict our challenge nonces (a peer's
        signature over one, asked for in advance, would pass as a proof at any address)
        and compute our cookie secret."""
        if self.config.rng_seed is not None:
            return random.Random(self.config.rng_seed)
        return random.SystemRandom()

    def _add_hole_punching(self, router: Router) -> None:
        """Hole punching (issue 9 section 3, ``protocols.dcutr``): relayed connections
        are upgraded to direct ones when ``hole_punch`` is on; every node answers the
        punch datagrams' reflect requests either way."""
        rng = self._random()

        def send(data: bytes, addr: Address) -> None:
            if self.endpoint is not None:
                self.endpoint.send(data, addr)

        async def bind(receiver: Receiver) -> DatagramEndpoint:
            return await self._network.bind((self.config.listen[0], 0), receiver)

        def behaviour() -> tuple[str | None, str | None] | None:
            """What our NAT report says for the birthday technique's choice: a report
            typed symmetric whose mapping test did not finish counts as APDM."""
            report = None if self.natinfo is None else self.natinfo.report
            if report is None:
                return None
            mapping = report.mapping
            if mapping is None and report.type == NatKind.SYMMETRIC:
                mapping = APDM
            return mapping, report.filtering

        birthday = Birthday(bind=bind, send=send, clock=self.clock,
                            rng=random.Random(rng.getrandbits(64)),
                            enabled=self.config.birthday)
        self.holepunch = HolePunch(
            transport=lambda: self.quic, send=send, nat=behaviour, birthday=birthday,
            local_addrs=lambda: [(h, self.udp_address[1])
                                 for h in self._hosts(self.udp_address[0])],
            observed=lambda: self.observed_address, adopt=self._adopt_direct,
            events=self.events, clock=self.clock, spawn=self.supervisor.spawn, rng=rng,
            enabled=self.config.hole_punch, grace=self.config.hole_punch_grace,
            timeout=self.options.handshake_timeout)
        router.add(self.holepunch)

    async def _adopt_direct(self, conn: QuicConn) -> bool:
        """A direct connection we dialed for hole punching: trust-checked (by peer id:
        a punched address is a NAT mapping, not one to remember) and served."""
        try:
            decision = await self.trust.check_peer_async(conn.peer_id)
        except StackError:
            conn.abort("trust store unavailable")
            return False
        self._trust_event(decision, _addr_text(conn.remote_address), inbound=False)
        if not decision.allowed or conn.closed or not self._started:
            conn.abort(f"trust refused: {decision.outcome}")
            return False
        self._serve(conn, inbound=False)
        return True

    def _add_relay_protocols(self, router: Router) -> None:
        """Relay (issue 9): the hop service unless ``relay_service`` is off; the stop
        side always (it accepts circuits only from relays we hold a reservation on)."""
        try:
            mode = RelayMode(self.config.relay_service)
        except ValueError:
            raise UsageError(f"relay_service must be off, limited or full, "
                             f"not {self.config.relay_service!r}") from None
        self.relay_server: RelayServer | None = None
        if mode is not RelayMode.OFF:
            limits = self.config.relay_limits or RelayLimits.for_mode(mode)
            self.relay_server = RelayServer(limits, clock=self.clock,
                                            timeout=self.options.handshake_timeout,
                                            addrs=self.addrs,
                                            accepting=lambda: self.publicly_reachable is not False)
            router.add(self.relay_server)
        self.relays = ReservationKeeper(me=self.peer_id, dial=self._dial_relay, clock=self.clock,
                                        timeout=self.options.handshake_timeout,
                                        on_change=self._relayed_addrs_changed,
                                        running=lambda: self._started)
        router.add(RelayStopProtocol(keeper=self.relays, accept_path=self._accept_path,
                                     timeout=self.options.handshake_timeout,
                                     spawn=self.supervisor.spawn))

    def _accept_path(self, sock: PathSocket,
                     on_closed: Callable[[QuicConn], None]) -> PathReceiver | None:
        return None if self.quic is None else self.quic.accept_path(sock, on_closed)

    async def _dial_relay(self, relay: str) -> Connection:
        return await self.connect(relay, identify=False)

    def _relayed_addrs_changed(self, reservation: ActiveReservation, held: bool) -> None:
        """A reservation was made, renewed or lost: an event, and when our relayed
        addresses changed, a fresh announcement now (not at the next minute's check),
        once we have published at all."""
        self.events.emit(RelayReservation(
            reservation.relay, reservation.address, held, reservation.renewals,
            max(0.0, reservation.expires_at - self.clock.monotonic()) if held else 0.0),
            "info" if held else "warning")
        if held and reservation.renewals:
            return  # a renewal: same address
        if self.dht is not None and self._record is not None and self._started:
            async def republish() -> None:
                with contextlib.suppress(StackError):
                    await self.republish_if_moved()
            self.supervisor.spawn(republish())

    def _start_relays(self) -> None:
        for relay in self.config.relays:
            self._run_reservation(relay)
        for server in self.turn.servers:
            self.supervisor.run(f"turn.allocation {server}",
                                functools.partial(self.turn.service, server))

    def _run_reservation(self, relay: str) -> None:
        self.supervisor.run(f"relay.reservation {relay}",
                            functools.partial(self.relays.service, relay))

    def restart_lost_reservations(self) -> None:
        """Reserve again now on each configured relay holding no live reservation (after
        our move, ``stack.node.mobility``: the service would wait out its backoff)."""
        held = set(self.relays.active)
        for relay in self.config.relays:
            if relay not in held or self.relays.active[relay].conn.closed:
                self._run_reservation(relay)

    @property
    def reachability(self) -> dict[PeerId, DialbackResult]:
        """The latest dial-back verdict each peer gave us (seed 000)."""
        return self.identify.reachability

    @property
    def uptime(self) -> float:
        """Seconds since ``start()`` (monotonic clock)."""
        return self.clock.monotonic() - self._started_at if self._started else 0.0

    @property
    def replicas(self) -> int:
        """DHT nodes that stored our announcement at its last put."""
        return self._replicas

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    @property
    def udp_address(self) -> Address:
        if self.endpoint is None:
            raise LocalError("node is not started")
        return self.endpoint.local_address

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._started:
            raise LocalError("node already started")
        # What a writer killed mid-write left (one held a copy of a private key).
        for leftover in remove_stale_temps(self.config.data_dir):
            log.info("files.stale_temp_removed", path=str(leftover))
        if self.config.control:
            # First: a second node on this data directory fails here, with that reason,
            # before it takes (or fails to take) any port.
            await self._start_control()
        try:
            if self.config.dht and self.config.publish:
                # A node that cannot number its announcements (a corrupt ``sequence``, a
                # read-only data directory) could never be found: it fails here, with
                # the file named, instead of running unfindable.
                await self.stores.sequence.ready()
            await self._start_parts()
        except BaseException:
            if self.control is not None:
                await self.control.stop()
                self.control = None
            raise
        self._started_at = self.clock.monotonic()
        self._started = True
        self._start_relays()
        self.mobility = Mobility(self)  # issue 10: notice moves, re-announce, push
        self.supervisor.run("mobility.watch", self.mobility.watch)
        # after mobility: a NAT report's public mapping goes through report_mapped_address
        self.supervisor.spawn(self.detect_nat("start"))
        if self.nat is not None:
            self.supervisor.run("nat.watch", self.nat.watch)
        if self.keepalive is not None:
            self.supervisor.run("nat.keepalive", self.keepalive.service)
        self.rooms.resume()
        self.roomtrust.start()
        self.roomdht.start()
        self.roomsync.start()
        log.info("node.started", peer_id=str(self.peer_id), addrs=self.addrs())

    async def _start_parts(self) -> None:
        certified = make_certificate(self.identity, self.clock.now())  # one for QUIC and TLS
        self._certified = certified
        host, port = self.config.listen
        attempts = 8 if port == 0 and self.config.tls else 1
        for attempt in range(attempts):
            # UDP first; TLS takes the same port number on TCP. With port 0 the number
            # the kernel picked for UDP may be taken on TCP: try another one.
            # movable: rebound on a new IP if ours goes away (issue 10, stack.node.mobility)
            self.endpoint = MovableEndpoint(await self._network.bind((host, port), self.demux))
            if not self.config.tls:
                break
            try:
                await self._start_tls((host, self.endpoint.local_address[1]), certified)
                break
            except LocalError:
                self.endpoint.close()
                self.endpoint = None
                if attempt == attempts - 1:
                    raise
        assert self.endpoint is not None
        if self.config.quic:
            self.quic = QuicTransport(send=self.endpoint.send, certified=certified,
                                      clock=self.clock, options=self.options,
                                      registry=self.registry, on_connection=self._accepted,
                                      verifier=self.verifier,
                                      on_migrated=self.migration.on_migrated)
            self.demux.register_quic(self.quic)
        self._start_natinfo()
        self.demux.register_p2p(PUNCH_BYTE, self.holepunch.receive)
        if self.config.stun_server:
            self._start_stun()
        if self.config.dht:
            self._start_dht()
        await self.router.start()
        if self.config.mdns:
            self._start_mdns()

    def _start_mdns(self) -> None:
        """LAN discovery on the interfaces we listen on: all for the wildcard, that one
        for an IP; none for loopback (no link to find peers on). On a network that
        carries multicast itself (``MulticastNetwork``: the simulator) the records go
        over its group endpoint (``discovery.mdns_link``), else over zeroconf's sockets."""
        host = self.config.listen[0]
        if host.startswith("127.") or host == "localhost":
            log.info("mdns.off", reason=f"listening on {host} only")
            return
        link: MdnsLink | None = None  # zeroconf's own sockets
        network = self._network
        if isinstance(network, MulticastNetwork):  # the simulator's LAN segments

            async def join(receiver: Receiver) -> DatagramEndpoint:
                return await network.join_group(MDNS_GROUP, receiver)

            link = DatagramLink(join, network.interface_networks)
        rng = self._random()
        self.mdns = MdnsService(LanPeers(self.peer_id), instance=instance_name(self.peer_id),
                                addrs=self.addrs, name=self.config.display_name,
                                clock=self.clock, rng=rng, link=link,
                                interfaces=None if host == "0.0.0.0" else [host])
        self.supervisor.run("mdns", self.mdns.run)

    async def _start_tls(self, addr: Address, certified: CertifiedKey) -> None:
        tls = TlsTransport(certified=certified, clock=self.clock, options=self.options,
                           registry=self.registry, on_connection=self._accepted,
                           verifier=self.verifier)
        self.tls_address = await tls.listen(addr)
        self.tls = tls

    def _start_stun(self) -> None:
        # nat/ sits beside stack.transport; only the Node (the composer) may join them.
        from nat.stun.server import ServerConfig, StunServer
        from nat.stun.service import StunService
        assert self.endpoint is not None
        local = self.endpoint.local_address
        assert self.natinfo is not None
        self.stun = StunService(StunServer(ServerConfig(primary=local)), self.clock,
                                on_response=self.natinfo.on_stun_response)
        self.stun.add_endpoint(self.endpoint)
        self.demux.register_stun(self.stun.receiver(local))

    def _start_natinfo(self) -> None:
        """NAT discovery and keepalives on our own port (``natinfo.NodeNat``)."""
        self.nat = NodeNat(self)
        self.natinfo, self.keepalive = self.nat.info, self.nat.keepalive

    async def detect_nat(self, reason: str = "asked") -> NatReport | None:
        """Learn our NAT behaviour now (RFC 5780 on our own UDP port) from
        ``config.stun_servers``, our bootstrap nodes and a few DHT servers on distinct
        IPs; emits ``NatReported``. None when there is no server to ask."""
        if self.nat is None:
            raise LocalError("node is not started")
        return await self.nat.detect(reason)

    async def bootstrap_addresses(self) -> list[Address]:
        """``config.bootstrap`` resolved (once)."""
        if not self._bootstrap_addrs:
            self._bootstrap_addrs = [await self._network.resolve(parse_address(t).address)
                                     for t in self.config.bootstrap]
        return self._bootstrap_addrs

    async def resolve_udp(self, addr: Address) -> Address:
        """``addr`` with its host name resolved through the network seam."""
        return await self._network.resolve(addr)

    def _autonat_helpers(self, conn: Connection) -> list[Helper]:
        """Who may dial ``conn``'s peer back for us: verified DHT contacts near it."""
        if self.dht is None:
            return []
        table = self.dht.core.table
        near = table.closest(int.from_bytes(conn.peer_id.dht_key, "big"), 8, True)
        return [Helper(PeerId.from_bytes(c.peer_id), c.addr) for c in near]

    async def _connect_helper(self, helper: Helper) -> Connection:
        return await self.connect(PeerAddress(*helper.address, "quic", helper.peer_id),
                                  identify=False)

    async def _start_control(self) -> None:
        methods: dict[str, Method] = {
            "status": lambda params: _answer(operations.status(self, **params)),
            "connect": lambda params: operations.connect(self, **params),
            "ping": lambda params: operations.ping(self, **params),
            "lookup": lambda params: operations.lookup(self, **params),
            "discover": lambda params: operations.discover(self, **params),
            "sign_announcement": lambda params: operations.sign_announcement(self, **params),
            "nat": lambda params: operations.nat(self, **params),
            "room_create": lambda params: self.rooms.create(**params),
            "room_invite": lambda params: self.rooms.invite(**params),
            "room_join": lambda params: self.rooms.join(**params),
            "room_pin": lambda params: self.rooms.pin(**params),
            "room_invite_wait": lambda params: self.rooms.invite_wait(**params),
            "room_list": lambda params: _answer(self.rooms.list(**params)),
            "room_graph": lambda params: _answer(self.roomtrust.graph(**params)),
            "room_kick": lambda params: self.roomtrust.kick(**params),
            "room_set": lambda params: self.roomsync.set(**params),
            "room_get": lambda params: _answer(self.roomsync.get(**params)),
            "room_watch": lambda params: self.roomsync.watch(**params),
        }
        control = ControlServer(socket_path(self.config.data_dir),
                                {name: _checked(name, m) for name, m in methods.items()},
                                self.events)
        await control.start()
        self.control = control

    def _start_dht(self) -> None:
        assert self.endpoint is not None
        rng = self._random()
        server = self.config.dht_server
        if server is None:  # auto: proven in join() unless we found the network
            server = not self.config.bootstrap
        core = DhtCore(self.identity, NodeRecordValidator(), rng, DhtConfig(server=server))
        self.dht = DhtDriver(core, self.endpoint, self.clock)
        self.demux.register_p2p(DHT_BYTE, self.dht.receive_batch)

    # -------------------------------------------------------------------- discovery

    def _dht(self) -> DhtDriver:
        if self.dht is None:
            raise LocalError("the DHT is not enabled on this node (NodeConfig.dht)")
        return self.dht

    async def join(self, timeout: float = 30.0) -> int:
        """Bootstrap from ``config.bootstrap`` (if any) and publish our announcement.

        Returns the routing-table size after bootstrapping (0 for the first node of a
        network). Raises ``BootstrapFailed`` if no bootstrap node answered.
        """
        dht = self._dht()
        peers = 0
        if self.config.bootstrap:
            addrs = await self.bootstrap_addresses()
            if self.config.dht_server is None:
                dht.core.set_server(await self._probe_reachability(addrs[0]))
            peers = await dht.bootstrap(addrs, timeout)
            self.supervisor.spawn(self.detect_nat("join"))  # DHT servers on more IPs
            self.roomdht.wake()  # our rooms' records: someone to ask now
        if self.config.publish:
            dht.set_record_source(self._sign_announcement)
            self.supervisor.run("dht.publisher", lambda: self._keep_published(timeout))
        return peers

    async def _probe_reachability(self, addr: Address) -> bool:
        """Are we publicly reachable? Connect to ``addr`` over QUIC, ask it for a
        dial-back from a third node's IP (``AutoNat.probe``: our nonce must arrive from
        an IP other than ``addr``'s) and wait for its own dial-back verdict (seed 000),
        which counts only when our NAT report shows no translation. A NAT report that
        ``vetoes_server`` says no whatever the dial-backs said. Only a node others can
        reach may enter their DHT routing tables; anything short of that says no."""
        reachable = False
        if self.quic is not None:
            verdict = self.next_event(DialbackResult, role=DialbackRole.DIALER,
                                      timeout=self.config.dial_back_timeout
                                      + 2 * self.options.handshake_timeout)
            try:
                async with asyncio.timeout(self.options.handshake_timeout):
                    conn = await self.connect(PeerAddress(*addr, "quic"))
                third = await self.autonat.probe(conn)  # a dial-back from a third IP
                event = await verdict
                reachable = third.ok or (event.ok is True and event.peer_id == conn.peer_id
                                         and self.nat is not None and await self.nat.no_nat())
                reachable = reachable and not vetoes_server(
                    None if self.natinfo is None else self.natinfo.report)
                conn.abort("reachability probe done")
            except (StackError, TimeoutError) as exc:
                log.info("dht.reachability_probe_failed", address=_addr_text(addr),
                         error=str(exc) or type(exc).__name__)
            finally:
                verdict.cancel()
        log.info("dht.mode", server=reachable, probed=_addr_text(addr))
        self.publicly_reachable = reachable
        return reachable

    def announced_addrs(self) -> tuple[str, ...]:
        """The addresses our announcement carries: a confirmed observed address (a NAT's
        public mapping) first, then our listen addresses, without ``/p2p/<id>`` (the
        record names its peer id already; this saves bytes)."""
        out = []
        if self.observed_address is not None and self.quic is not None:
            out.append(PeerAddress(*self.observed_address, "quic").multiaddr())
        out.extend(self.relays.addrs())  # before our own: a NATed node's way in
        out.extend(self.turn.addrs())
        for text in self.addrs():
            parsed = parse_address(text)
            text = PeerAddress(parsed.host, parsed.port, parsed.transport).multiaddr()
            if text not in out:
                out.append(text)
        return tuple(out)

    def _member_addrs(self) -> list[str]:
        """The addresses a room membership announcement carries: those of our DHT
        announcement (observed public mapping, relayed, then listen addresses). Listen
        addresses alone would send a member behind another NAT to a private address,
        which on its own network may be its own host."""
        return list(self.announced_addrs())

    def _sign_announcement(self, previous: list[PeerId] | tuple[PeerId, ...] = ()) -> bytes:
        """A fresh announcement of our current addresses with the next sequence number
        (``previous``: seed 004's previousConnections). What would push the record past
        the DHT's 1000 bytes is left out: peers of ``previous`` first, then addresses."""
        addrs = self.announced_addrs()
        seq = self.stores.sequence.next()  # from the reserved block: no I/O here
        previous = tuple(previous)
        while True:
            try:
                record = sign_announcement(self.identity, seq, addrs, self.clock.now(),
                                           display_name=self.config.display_name,
                                           previous=previous)
                break
            except RecordTooLarge:
                if previous:
                    previous = previous[:-1]
                    continue
                if not addrs:
                    raise
                addrs = addrs[:-1]
        self.published = announcement_of(record)
        self._published_addrs = self.announced_addrs()
        self._record = record
        return record

    async def announce(self, timeout: float = 30.0) -> int:
        """Sign and publish our announcement now; returns how many DHT nodes stored it.
        ``PublishFailed`` when none did."""
        dht = self._dht()
        await self.stores.sequence.ready()  # a block reservation in flight, off the loop
        stored = await dht.publish(self._sign_announcement(), timeout)
        self._replicas, self._table_at_put = stored, len(dht.core.table)
        assert self.published is not None
        self.events.emit(AnnouncementPublished(self.peer_id, self.published.seq, stored,
                                               self.published.addrs))
        return stored

    async def _keep_published(self, timeout: float) -> None:
        """Publish once some DHT node can store it: the first node of a network retries
        (1 s, doubling to 60 s) until a peer has joined. Later refreshes come from the
        driver (``set_record_source``)."""
        delay = 1.0
        while True:
            try:
                await self.announce(timeout)
                break
            except PublishFailed as exc:
                log.debug("dht.publish_retry", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            await self._rejoin_if_alone(timeout)
            delay = min(delay * 2, 60.0)
        while True:  # then watch our addresses: a new one is announced within a minute
            await asyncio.sleep(ADDRESS_CHECK_INTERVAL)
            try:
                if not await self.republish_if_moved(timeout):
                    await self._replicate_if_grown(timeout)
            except StackError as exc:
                log.warning("dht.republish_failed", error=str(exc))

    async def _rejoin_if_alone(self, timeout: float) -> None:
        """An empty routing table (every peer failed its RPCs, e.g. while our bootstrap
        node was down) knows nobody to publish to: bootstrap again (seed 002: peers that
        lose each other find each other again)."""
        dht = self._dht()
        if len(dht.core.table) or not self._bootstrap_addrs:
            return
        with contextlib.suppress(BootstrapFailed, DhtTimeout):
            await dht.bootstrap(self._bootstrap_addrs, timeout)

    async def _replicate_if_grown(self, timeout: float) -> None:
        """Put the same record again when it sits on fewer than k nodes and our routing
        table has grown since the last put.

        Why: a node that publishes while the network is small (the first nodes of a
        network always do) stores its record on the few nodes there are; as nodes join,
        those need no longer be among the k closest to its key, so lookups that converge
        on the k closest miss it until the driver's next re-put (hours). This is
        Kademlia's store-on-join, done by the publisher (issue 5: republishing is the
        publisher's job). It costs nothing once the record has k replicas."""
        dht = self._dht()
        table = len(dht.core.table)
        if (self._record is None or self._replicas >= dht.core.config.k
                or table <= self._table_at_put):
            return
        self._replicas, self._table_at_put = await dht.publish(self._record, timeout), table
        log.debug("dht.replicated", replicas=self._replicas, table=table)

    async def republish_if_moved(self, timeout: float = 30.0) -> bool:
        """Publish again if our addresses differ from the published ones (e.g. after a
        NAT rebinding or a new interface). Returns whether it published."""
        if self._published_addrs == self.announced_addrs():
            return False
        await self.announce(timeout)
        return True

    def report_mapped_address(self, addr: Address, source: str) -> None:
        """An observer (a STUN answer, a keepalive, identify) saw our UDP port at ``addr``
        (issue 10): announced from now on; a different mapping than the last one is a
        move (``address.changed``, cause ``mapped``) and re-announces at once."""
        if self._started:
            self.mobility.report_mapped(addr, source)

    async def _push_connect(self, target: PeerId | PeerAddress) -> Connection:
        return await self.connect(target, identify=False)

    async def resolve(self, peer_id: PeerId | str, timeout: float = 30.0) -> Announcement:
        """``peer_id``'s announcement from the DHT, signature and freshness verified.
        ``RecordNotFound``, ``DhtTimeout``."""
        pid = PeerId.parse(peer_id) if isinstance(peer_id, str) else peer_id
        return announcement_of(await self._dht().resolve(pid, timeout))

    async def stop(self, grace: float = 1.0) -> None:
        """Close every connection (streams get ``grace`` seconds), then the ports."""
        if not self._started:
            return
        self._started = False
        if self.control is not None:  # first: no new request reaches a stopping node
            await self.control.stop()
            self.control = None
        if self.dht is not None:
            self.dht.close()
        # Transports first: their graceful close lets open streams finish, and our
        # protocol handlers must still be running to finish them. Then whatever is left.
        closers = []
        if self.quic is not None:
            closers.append(self.quic.close(grace))
        if self.tls is not None:
            closers.append(self.tls.close(grace))
        await asyncio.gather(*closers, return_exceptions=True)
        await self.supervisor.stop()
        await self.router.stop()
        if self.endpoint is not None:
            self.endpoint.close()
        log.info("node.stopped", peer_id=str(self.peer_id))

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- addresses

    def _hosts(self, host: str) -> list[str]:
        """The IPs a listener on ``host`` is reachable at: for the wildcard, the host's
        interface addresses (through the network seam), loopback only when it is the
        only one (an announced 127.0.0.1 reaches a *different* node on a dialer's host)."""
        if host != "0.0.0.0":
            return [host]
        ips = [ip for ip in self._network.local_ips() if not ip.startswith("127.")]
        return ips or ["127.0.0.1"]

    def own_ips(self) -> list[str]:
        """The IPs our UDP port is bound to (the interfaces' for a wildcard bind)."""
        return self._own_ips()

    def _own_ips(self) -> list[str]:
        host = self.udp_address[0]
        return self._network.local_ips() if host == "0.0.0.0" else [host]

    def addrs(self) -> list[str]:
        """Our full listen multiaddrs (QUIC first), with ``/p2p/<our id>``."""
        if self.config.advertise is not None:
            return list(self.config.advertise)
        out: list[str] = []
        if self.endpoint is None:
            return out
        host, port = self.endpoint.local_address
        for h in self._hosts(host):
            if self.quic is not None:
                out.append(PeerAddress(h, port, "quic", self.peer_id).multiaddr())
            if self.tls_address is not None:
                out.append(PeerAddress(h, self.tls_address[1], "tls", self.peer_id).multiaddr())
        return out

    # ------------------------------------------------------------------- events

    def subscribe(self) -> asyncio.Queue[NodeEvent]:
        """A queue receiving every later event."""
        return self.events.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[NodeEvent]) -> None:
        self.events.unsubscribe(queue)

    def next_event(self, kind: type[E], *, timeout: float | None = None,
                   **match: Any) -> EventWaiter[E]:
        """The next event of ``kind`` whose fields equal ``match``; registers when called
        (call it before the action, await it after). ``TimeoutError`` after ``timeout``."""
        return self.events.next_event(kind, timeout=timeout, **match)

    # -------------------------------------------------------------- connections

    def _transport(self, name: str) -> QuicTransport | TlsTransport:
        transport = {"quic": self.quic, "tls": self.tls}.get(name)
        if transport is None:
            raise UsageError(f"transport {name!r} is not enabled on this node")
        return transport

    def _trust_event(self, decision: TrustDecision, address: str, inbound: bool) -> None:
        self.events.emit(TrustChecked(decision.peer_id, decision.outcome,
                                      decision.allowed, address, inbound),
                         "info" if decision.allowed else "warning")

    def _accepted(self, conn: Connection) -> None:
        """A transport authenticated an inbound connection: trust check, then serve."""
        address = _addr_text(conn.remote_address)
        # Where an inbound connection comes from is not recorded as a dialable address:
        # a dial-back comes from a fresh UDP port (protocols.autonat), a TLS peer from an
        # ephemeral TCP port, a NATed peer from a mapping. Dialing one of those later by
        # peer id spends a whole handshake timeout on a dead port. Dialable addresses
        # are the ones we dialed, the dial-back proved, and the DHT's signed records.
        if conn.peer_id == self.peer_id:  # our own dial looped back: nothing to trust
            conn.abort("connection from ourselves")
            return
        # Decided off the loop and durable before the application hears of it.
        pending = self.trust.check_peer_async(conn.peer_id)
        if pending.done():  # a memory store: decided now, as before
            self._admit(conn, address, pending)
        else:
            pending.add_done_callback(lambda fut: self._admit(conn, address, fut))

    def _admit(self, conn: Connection, address: str,
               pending: asyncio.Future[TrustDecision]) -> None:
        """An inbound connection's trust decision is in (and durable): serve or drop."""
        try:
            decision = pending.result()
        except StackError as exc:  # e.g. the trust store is locked by another process
            log.error("trust.error", peer_id=str(conn.peer_id), error=str(exc))
            conn.abort("trust store unavailable")
            return
        self._trust_event(decision, address, inbound=True)
        if not decision.allowed:
            conn.abort(f"trust refused: {decision.outcome}")
            return
        if conn.closed or not self._started:  # it went away while we were deciding
            return
        self._serve(conn, inbound=True)

    def _serve(self, conn: Connection, inbound: bool) -> None:
        self._connections[conn] = None
        address = _addr_text(conn.remote_address)
        self.events.emit(ConnectionOpened(conn.peer_id, conn.transport, address, inbound,
                                          conn.path.kind))
        self.router.connection_opened(conn)
        self.turn.connected(conn)  # a direct peer may come back through our TURN relay

        def closed(c: Any) -> None:
            self._connections.pop(conn, None)
            self.events.emit(ConnectionClosed(conn.peer_id, conn.transport, address,
                                              c.close_reason or "closed"))

        conn.add_close_callback(closed)  # type: ignore[attr-defined]
        self.supervisor.spawn(self._accept_streams(conn))

    async def connect(self, target: str | PeerId | PeerAddress, *,
                      transport: str | None = None, identify: bool = True,
                      lan: bool = False) -> Connection:
        """Dial ``target`` (multiaddr, ``HOST:PORT``, peer id) and authenticate it.

        A peer id (given, or in the multiaddr) is enforced; a bare address is TOFU-checked.
        With ``identify`` the identity exchange runs (and the listener dials us back).
        Raises ``TransportError`` subclasses (``PeerIdMismatch``, ``TrustRefused``,
        ``HandshakeFailed`` ...) or ``UsageError`` for a target it cannot dial. ``lan``:
        the address is on our link (found by mDNS); the connection's path is LAN (QUIC).
        """
        if not self._started:
            raise LocalError("node is not started")
        if isinstance(target, PeerId):
            target = PeerAddress(peer_id=target)
        elif isinstance(target, str):
            target = parse_address(target)
        if target.relay is not None:
            return await self._connect_relayed(target, identify)
        if (target.host is None and target.peer_id is not None and transport in (None, "quic")
                and (punched := self.holepunch.direct(target.peer_id)) is not None):
            return punched  # the direct path hole punching made
        name = transport or target.transport or "quic"
        if target.host is None:
            return await self._connect_known(target, name, identify)
        conn: Connection
        if target.turn and name != "quic":
            raise UsageError(f"{target.multiaddr()} is a TURN relayed address: QUIC only")
        if (lan or target.turn) and name == "quic" and self.quic is not None:
            kind = PathKind.TURN if target.turn else PathKind.LAN
            conn = await self.quic.dial_path(self.quic.port_socket(target.address, kind),
                                             target.peer_id)
        else:
            conn = await self._transport(name).dial(target.address, target.peer_id)
        if conn.peer_id == self.peer_id:
            conn.abort("dialed ourselves")
            raise UsageError(f"{target.multiaddr()} is this node itself")
        # The address as dialed (a name resolved to its IP), so that "localhost:P" and
        # "127.0.0.1:P" are one TOFU pin; a TURN address as its p2p-turn multiaddr, so
        # that a later dial by peer id knows it for one.
        address = target.multiaddr() if target.turn else _addr_text(conn.remote_address)
        return await self._admit_outbound(conn, address,
                                          by_peer_id=target.peer_id is not None,
                                          identify=identify)

    async def _admit_outbound(self, conn: Connection, address: str, *, by_peer_id: bool,
                              identify: bool) -> Connection:
        """The trust check of a connection we dialed (the peer id we asked for, or TOFU
        on the address), decided off the loop and durable before we report or serve it;
        then serve it and run identify. ``TrustRefused`` closes it."""
        try:
            if by_peer_id:
                decision = await self.trust.check_peer_async(conn.peer_id, address=address)
            else:
                decision = await self.trust.check_address_async(address, conn.peer_id)
        except StackError:
            conn.abort("trust store unavailable")
            raise
        except BaseException:  # cancelled while the decision was being stored
            conn.abort("cancelled")
            raise
        self._trust_event(decision, address, inbound=False)
        if not decision.allowed:
            conn.abort(f"trust refused: {decision.outcome}")
            raise TrustRefused(str(decision.outcome), _refusal_message(decision, address))
        self._serve(conn, inbound=False)
        if identify:
            await self.identify.exchange(conn)
        return conn

    async def _rendezvous_link(self, target: str) -> Connection:
        """A connection we dialed to ``target``'s peer id that is still open (direct, not
        closing), else a new dial. The rooms ask their rendezvous often (every invite,
        announcement and welcome); a connection per ask piled up past the per-peer
        connection limit."""
        peer = parse_address(target).peer_id
        for conn in self._connections:
            if (peer is not None and conn.peer_id == peer and conn.is_client
                    and not conn.closing and conn.path.kind is not PathKind.RELAYED):
                return conn
        return await self.connect(target)

    async def connect_peer(self, peer: PeerId, addrs: Sequence[str]) -> Connection:
        """Dial ``peer`` at ``addrs`` (addresses it signed elsewhere, e.g. in a room
        membership; with or without ``/p2p/<peer>``), raced in order DIAL_STAGGER apart
        so that one that does not answer costs a stagger, not a handshake timeout.
        ``DialFailed`` lists every address tried and why it failed."""
        if peer == self.peer_id:
            raise UsageError(f"{peer} is this node itself")
        dials: list[tuple[str, Callable[[], Awaitable[Connection]]]] = []
        for text in addrs:
            try:
                target = parse_address(text)
            except UsageError:
                continue  # signed by the peer, still not ours to trust: skip what is bad
            if target.peer_id in (None, peer):
                full = PeerAddress(target.host, target.port, target.transport, peer,
                                   target.relay, target.turn).multiaddr()
                dials.append((text, functools.partial(self.connect, full)))
        if not dials:
            raise LocalError(f"no address of {peer} to dial")
        attempts: list[tuple[str, Exception]] = []
        conn = await _race(dials, DIAL_STAGGER, attempts)
        if conn is None:
            raise DialFailed(peer, attempts)
        return conn

    async def _connect_known(self, target: PeerAddress, name: str,
                             identify: bool) -> Connection:
        """Dial a peer id: the addresses the trust store knows (the one our dial-back
        proved first), then those of its DHT announcement. ``DialFailed`` lists every
        address tried and why it failed."""
        assert target.peer_id is not None
        peer = target.peer_id
        entry = await self.trust.get_async(peer)  # read off the loop
        known = list(reversed(entry.addresses)) if entry is not None else []
        known[:0] = self.announce_push.addresses(target.peer_id)  # its latest push (issue 10)
        if entry is not None and entry.reachable and entry.dialback_address:
            known.insert(0, entry.dialback_address)  # proven by our dial-back
        attempts: list[tuple[str, Exception]] = []
        tried: set[Address] = set()
        if (conn := await self._dial_lan(target.peer_id, name, identify, attempts,
                                         tried)) is not None:
            return conn  # what mDNS claims on our link first: the LAN path beats the rest

        tried_relayed: set[str] = set()

        async def dial(candidates: list[str]) -> Connection | None:
            """Race the direct addresses among ``candidates``, then (joining the race
            after them, DIAL_STAGGER apart) its relayed ones."""
            dials: list[tuple[str, Callable[[], Awaitable[Connection]]]] = []
            for text in _dialable(candidates, name):
                address = parse_address(text).address
                if address not in tried:
                    tried.add(address)
                    dials.append((_addr_text(address), functools.partial(
                        self.connect, PeerAddress(*address, name, peer),
                        identify=identify)))
            for text in _relayed(candidates, peer):
                # not through ourselves: we are its relay (the reservation's connection)
                if text not in tried_relayed and parse_address(text).relay != self.peer_id:
                    tried_relayed.add(text)
                    dials.append((text, functools.partial(self.connect, text,
                                                          identify=identify)))
            return await _race(dials, DIAL_STAGGER, attempts)

        if (conn := await dial(known)) is not None:
            return conn
        if self.dht is not None:
            # Where is it now? Its signed announcement in the DHT says (seed 004).
            try:
                announcement = await self.resolve(target.peer_id)
            except (RecordNotFound, DhtTimeout) as exc:
                if not attempts:
                    raise
                attempts.append(("DHT lookup", exc))
            else:
                if (conn := await dial(list(announcement.addrs))) is not None:
                    return conn
        if not attempts:
            raise LocalError(f"no known address for {target.peer_id}; "
                             "dial a multiaddr or HOST:PORT first, or use --bootstrap")
        raise DialFailed(target.peer_id, attempts)

    async def _dial_lan(self, peer_id: PeerId, name: str, identify: bool,
                        attempts: list[tuple[str, Exception]],
                        tried: set[Address]) -> Connection | None:
        """Dial the addresses mDNS claims ``peer_id`` has on our link (verified ones
        first, at most ``LAN_DIALS``), all at once: the first handshake that proves the
        id wins, so a claim pointing at a silent address costs no handshake timeout. A
        handshake proving another id refutes its claim (counted ``spoofed``); an address
        that does not answer is forgotten. Dials still running when one has won finish
        in the background (a second connection that succeeds is closed)."""
        if self.mdns is None or name != "quic":
            return None
        peers = self.mdns.peers
        candidates = peers.candidates(peer_id)[:LAN_DIALS]
        if not candidates:
            return None

        async def one(cand: Candidate) -> Connection | Exception:
            address = (cand.host, cand.port)
            try:
                conn = await self.connect(PeerAddress(*address, "quic", peer_id),
                                          identify=identify, lan=True)
            except PeerIdMismatch as exc:
                peers.refute(peer_id, cand.host, cand.port, "quic", self.clock.monotonic())
                log.warning("mdns.spoofed", claimed=str(peer_id), proved=str(exc.actual),
                            address=_addr_text(address))
                return exc
            except StackError as exc:
                if not cand.verified and not isinstance(exc, TrustRefused):
                    peers.forget(peer_id, cand.host, cand.port, "quic")
                return exc
            peers.confirm(peer_id, cand.host, cand.port, "quic")
            return conn

        def late(task: asyncio.Task[Connection | Exception]) -> None:
            if not task.cancelled() and not isinstance(result := task.result(), Exception):
                result.abort("another LAN address answered first")

        dials = {self.supervisor.spawn(one(c)): c for c in candidates}
        tried.update((c.host, c.port) for c in candidates)
        pending = set(dials)
        winner: Connection | None = None
        try:
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    result = task.result()
                    if isinstance(result, Exception):
                        attempts.append((f"{dials[task].host}:{dials[task].port}", result))
                    elif winner is None:
                        winner = result
                    else:
                        result.abort("another LAN address answered first")
        finally:
            for task in pending:
                task.add_done_callback(late)
        return winner

    async def _connect_relayed(self, target: PeerAddress, identify: bool) -> Connection:
        """QUIC to ``target`` (a p2p-circuit address) through its relay: reuse our
        connection to the relay or dial it, CONNECT, then the end-to-end handshake
        (``protocols.relay.dial_relayed``). The trust store records the relayed address.
        ``RelayRefused`` names a relay's refusal."""
        assert target.relay is not None and target.peer_id is not None
        if target.peer_id == self.peer_id:
            raise UsageError(f"{target.multiaddr()} is this node itself")
        quic = self._transport("quic")
        assert isinstance(quic, QuicTransport)
        # One we dialed: an inbound connection from the relay may be its dial-back,
        # from a port that serves no protocols.
        relay = next((c for c in self._connections
                      if c.peer_id == target.relay and c.is_client and not c.closed), None)
        if relay is None:
            relay = await self.connect(PeerAddress(target.host, target.port, target.transport,
                                                   target.relay), identify=False)
        conn = await dial_relayed(quic, relay, target.peer_id,
                                  timeout=self.options.handshake_timeout,
                                  spawn=self.supervisor.spawn)
        return await self._admit_outbound(conn, target.multiaddr(), by_peer_id=True,
                                          identify=identify)

    # ----------------------------------------------------------------- protocols

    def _learn_observed(self, conn: Connection, observed: str, dialed_back: bool) -> None:
        """A peer saw our UDP port at ``observed``. It becomes ``observed_address`` (and
        is announced) once confirmed: a dial-back to it succeeded, or peers at
        ``OBSERVERS_TO_CONFIRM`` different IPs saw the same address (an EIM mapping; a
        symmetric NAT shows each peer another port and is never confirmed). One peer's
        word alone is a claim, not a proof."""
        if conn.transport != "quic":
            return
        with contextlib.suppress(UsageError):
            addr = parse_address(observed).address
            if addr == self.udp_address or addr[0] in self._own_ips():
                return
            observers = self._observations.setdefault(addr, set())
            if len(observers) < OBSERVERS_TO_CONFIRM:
                observers.add(conn.remote_address[0])
            while len(self._observations) > MAX_OBSERVED:  # oldest claims go first
                del self._observations[next(iter(self._observations))]
            confirmed = dialed_back or len(observers) >= OBSERVERS_TO_CONFIRM
            if confirmed and addr != self.observed_address:
                log.info("address.observed", address=observed, by=str(conn.peer_id),
                         dialed_back=dialed_back, observers=len(observers))
                self.observed_address = addr

    async def _accept_streams(self, conn: Connection) -> None:
        with contextlib.suppress(TransportError):
            while True:
                stream = await conn.accept_stream()
                self.supervisor.spawn(self.router.dispatch(conn, stream))

    @contextlib.asynccontextmanager
    async def _dial_back_transport(self, name: str) -> AsyncIterator[Transport]:
        """Where a dial-back leaves from. QUIC: a fresh UDP port, because an answer from
        the port the peer has just sent to passes any cone NAT's filter and proves
        nothing about whether others can reach it. (TCP dials use a fresh port anyway.)"""
        if name != "quic":
            yield self._transport(name)
            return
        assert self.endpoint is not None and self._certified is not None
        demux = PortDemux()
        endpoint = await self._network.bind((self.endpoint.local_address[0], 0), demux)
        transport = QuicTransport(send=endpoint.send, certified=self._certified,
                                  clock=self.clock, options=self.options,
                                  registry=Registry(self.options.limits),
                                  on_connection=lambda c: c.abort("dial-back port"),
                                  verifier=self.verifier)
        demux.register_quic(transport)
        try:
            yield transport
        finally:
            await transport.close(0)
            endpoint.close()

    async def _connection(self, target: str | PeerId | PeerAddress | Connection,
                          transport: str | None) -> Connection:
        if isinstance(target, (str, PeerId, PeerAddress)):
            return await self.connect(target, transport=transport)
        return target

    async def ping(self, target: str | PeerId | PeerAddress | Connection, *,
                   transport: str | None = None) -> tuple[Connection, float]:
        """One ping round trip; returns the connection and the RTT in seconds."""
        conn = await self._connection(target, transport)
        async with asyncio.timeout(self.options.handshake_timeout):
            return conn, await ping_once(conn)

    async def echo(self, target: str | PeerId | PeerAddress | Connection, message: bytes, *,
                   transport: str | None = None) -> tuple[Connection, bytes, float]:
        """Send ``message`` on the echo protocol; returns (connection, reply, RTT seconds)."""
        conn = await self._connection(target, transport)
        reply, rtt = await echo(conn, message, self.options.handshake_timeout)
        return conn, reply, rtt

    @property
    def connections(self) -> list[Connection]:
        return list(self._connections)


async def _answer(result: dict[str, Any]) -> dict[str, Any]:
    return result


def _checked(name: str, method: Method) -> Method:
    """``method`` with its params checked: unknown or mistyped ones are a usage error,
    not a TypeError inside the node."""
    async def call(params: dict[str, Any]) -> dict[str, Any]:
        try:
            work = method(params)
        except TypeError as exc:
            raise UsageError(f"{name}: {exc}") from None
        return await work
    return call


def _dialable(candidates: list[str], transport: str) -> list[str]:
    """The direct addresses of ``transport`` among ``candidates``, in order. Loopback
    addresses only when the peer announced nothing else: a loopback peer is on our
    host, but a peer with other addresses is not, and its 127.0.0.1 would reach a
    different node here."""
    parsed = []
    for text in candidates:
        with contextlib.suppress(UsageError):
            address = parse_address(text)
            if (address.host is not None and address.relay is None and not address.turn
                    and address.transport in (None, transport)):
                parsed.append((text, address.host.startswith("127.")))
    if all(loopback for _, loopback in parsed):
        return [text for text, _ in parsed]
    return [text for text, loopback in parsed if not loopback]


async def _race(dials: list[tuple[str, Callable[[], Awaitable[Connection]]]],
                stagger: float, attempts: list[tuple[str, Exception]]) -> Connection | None:
    """The first of ``dials`` (label, start) to connect, or None; each failure is added
    to ``attempts``. Dials start in order, the next ``stagger`` seconds after the last
    (or at once when one fails), so a dead address first costs ``stagger``, not a whole
    handshake timeout (Happy Eyeballs, RFC 8305). The losers are cancelled, and one that
    connected anyway is closed."""
    pending: dict[asyncio.Task[Connection], str] = {}
    queue = list(dials)
    winner: Connection | None = None
    try:
        while winner is None and (queue or pending):
            if queue:
                label, start = queue.pop(0)
                pending[asyncio.ensure_future(start())] = label
            done, _ = await asyncio.wait(pending, timeout=stagger if queue else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                label = pending.pop(task)
                exc = task.exception()
                if exc is None:
                    if winner is None:
                        winner = task.result()
                    else:
                        task.result().abort("a faster dial won")
                elif isinstance(exc, (TransportError, RelayRefused)):
                    attempts.append((label, exc))
                else:
                    raise exc
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                late = await task
                late.abort("a faster dial won")
    return winner


def _relayed(candidates: list[str], peer_id: PeerId) -> list[str]:
    """The p2p-circuit and p2p-turn addresses of ``peer_id`` among ``candidates``, in
    order, once each."""
    out: list[str] = []
    for text in candidates:
        with contextlib.suppress(UsageError):
            address = parse_address(text)
            if ((address.relay is not None or address.turn) and address.peer_id == peer_id
                    and text not in out):
                out.append(text)
    return out


def _refusal_message(decision: TrustDecision, address: str) -> str:
    if str(decision.outcome) == "changed":
        return (f"WARNING: Certificate changed for peer {address}! "
                f"Expected: {decision.expected_fingerprint} "
                f"Received: {decision.received_fingerprint}. "
                "This could indicate a security issue! Refused; re-trust with "
                "'p2pstack trust approve' if the change is expected.")
    if str(decision.outcome) == "pending":
        return (f"peer {decision.peer_id} at {address} is pending approval "
                "('p2pstack trust approve')")
    return f"peer {decision.peer_id} at {address} is {decision.outcome}"
