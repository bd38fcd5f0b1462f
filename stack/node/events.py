"""Node events (frozen dataclasses, DESIGN.md habit 3) and the bus that delivers them.

Every event is logged under its name (``connection.opened`` ...) with its fields and
delivered to every ``subscribe()`` queue. ``next_event(kind, timeout=..., **match)``
waits for one event: it registers *when called*, so call it before the action whose
event you want and await the result after::

    verdict = node.next_event(DialbackResult, role="dialer", timeout=10)
    conn = await node.connect(addr)
    result = await verdict          # TimeoutError after 10 s
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Generic, TypeVar

import structlog

from stack.base.identity import PeerId
from stack.base.interfaces import PathKind
from stack.store.trust import Outcome

__all__ = ["ConnectionOpened", "ConnectionClosed", "TrustChecked", "IdentityReceived",
           "DialbackResult", "DialbackRole", "AnnouncementPublished", "ServiceFailed",
           "ControlRequest", "ControlOutcome", "RelayReservation", "NatReported",
           "ReachabilityChecked", "MappingChanged", "AddressChanged", "AnnouncementReceived",
           "HolePunchStarted", "HolePunchSucceeded", "HolePunchFailed",
           "BirthdaySucceeded", "BirthdayFailed",
           "ConnectionMigrated", "ConnectionReplaced", "TurnAllocationChanged", "RoomAdmitted",
           "RoomAdmissionFailed", "RoomPinIssued", "RoomPinRequested", "RoomMemberVerified",
           "RoomStatementRefused", "RoomReached", "RoomGraphChanged", "RoomStateChanged",
           "RoomSynced", "NodeEvent",
           "EventBus", "EventWaiter", "EVENT_NAMES"]

log = structlog.get_logger("p2pstack.node")


class DialbackRole(StrEnum):
    LISTENER = "listener"  # we dialed the peer back
    DIALER = "dialer"      # the peer dialed us back and told us the outcome


@dataclass(frozen=True)
class ConnectionOpened:
    peer_id: PeerId
    transport: str
    address: str           # remote HOST:PORT
    inbound: bool
    path: PathKind = PathKind.DIRECT


@dataclass(frozen=True)
class ConnectionClosed:
    peer_id: PeerId
    transport: str
    address: str
    reason: str


@dataclass(frozen=True)
class TrustChecked:
    """The trust store's decision on a connection (outcome: new/verified/changed/...)."""
    peer_id: PeerId
    outcome: Outcome
    allowed: bool
    address: str
    inbound: bool


@dataclass(frozen=True)
class IdentityReceived:
    """A verified identity exchange (seed 004); ``addrs`` are claimed, not yet verified."""
    peer_id: PeerId
    addrs: tuple[str, ...]
    display_name: str


@dataclass(frozen=True)
class DialbackResult:
    """Seed 000's reverse connection. ``role="listener"``: we dialed ``peer_id`` back;
    ``role="dialer"``: ``peer_id`` dialed us back and told us the outcome. ``ok`` is
    None when the peer ended the exchange without a verdict (it does not dial back)."""
    peer_id: PeerId
    ok: bool | None
    address: str | None
    error: str | None
    role: DialbackRole


@dataclass(frozen=True)
class AnnouncementPublished:
    """Our announcement (sequence ``seq``) is stored on ``stored`` DHT nodes."""
    peer_id: PeerId
    seq: int
    stored: int
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class ServiceFailed:
    """A supervised background service raised; it restarts in ``retry_in`` seconds.
    ``failures`` counts its consecutive failures (1 on the first)."""
    service: str
    error: str
    failures: int
    retry_in: float


@dataclass(frozen=True)
class NatReported:
    """NAT behaviour discovery (RFC 5780, ``nat.detect``) ran on the node's own UDP port.

    The fields are ``nat.detect.NatReport``'s (addresses as ``HOST:PORT``; RFC 4787
    words for ``mapping`` / ``filtering``; None where untestable, ``notes`` say why).
    ``servers``: STUN servers asked; ``reason``: why it ran (``start``, ``join``,
    ``asked``, ``mapping-changed``, ``refresh``; after our move: ``moved``, ``woke``)."""
    public_address: str | None
    nat: bool | None
    mapping: str | None
    filtering: str | None
    hairpin: bool | None
    type: str | None
    notes: tuple[str, ...]
    servers: int
    reason: str


@dataclass(frozen=True)
class ReachabilityChecked:
    """A third-party dial-back (AutoNAT v2 style): we asked ``asked`` to have another
    peer dial us. ``ok``: our nonce arrived over a connection from ``from_address``, an
    IP other than ``asked``'s; False: it did not (``error`` says what the peers said)."""
    asked: PeerId
    ok: bool
    helper: PeerId | None
    from_address: str | None
    error: str | None


@dataclass(frozen=True)
class MappingChanged:
    """A keepalive answer showed our NAT mapping toward ``target`` moved from ``old`` to
    ``new`` (the NAT forgot it, or rebooted). ``interval`` is the keepalive interval in
    force from now on (seconds)."""
    target: str
    old: str
    new: str
    interval: float


class ControlOutcome(StrEnum):
    OK = "ok"                # answered with a result
    ERROR = "error"          # answered with a named error
    CANCELLED = "cancelled"  # the client left before the answer; its work was cancelled
    REFUSED = "refused"      # a client of another user; nothing was read


@dataclass(frozen=True)
class ControlRequest:
    """The control API (``stack.node.control``) finished one request."""
    method: str
    outcome: ControlOutcome
    error: str | None = None


@dataclass(frozen=True)
class RelayReservation:
    """Our reservation on ``relay`` (issue 9): made or renewed (``held``; ``renewals``
    counts renewals on its connection, 0 for a new one) or lost (not ``held``: its
    connection closed, or the service stopped). ``address`` is our relayed address through
    it; ``expires_in`` seconds from now."""
    relay: PeerId
    address: str
    held: bool
    renewals: int
    expires_in: float


@dataclass(frozen=True)
class AddressChanged:
    """We moved (issue 10): ``old`` and ``new`` are address texts (interface IPs joined
    by commas, or a mapped ``HOST:PORT``); ``cause`` is ``interface``, ``mapped``,
    ``send_error`` or ``sleep_wake`` (``stack.node.mobility``)."""
    old: str
    new: str
    cause: str


@dataclass(frozen=True)
class AnnouncementReceived:
    """A pushed announcement (``/p2pstack/announce/1``), direct or relayed, and the
    verdict: a seed-004 result code (``valid``, ``nonce_reused``, ...) or ``banned`` /
    ``rate_limited``. ``peer_id`` is the announcer (claimed unless valid; None when it did
    not decode), ``via`` the peer that sent it to us, ``relay_chain`` the relays in path
    order, ``redialed`` whether we dialed the announcer at its new address."""
    peer_id: PeerId | None
    result: str
    via: PeerId
    seq: int | None = None
    addrs: tuple[str, ...] = ()
    relay_chain: tuple[PeerId, ...] = ()
    redialed: bool = False


@dataclass(frozen=True)
class HolePunchStarted:
    """An attempt (1-3) to upgrade the relayed connection to ``peer_id`` to a direct path
    (issue 9 section 3). ``role``: "initiator" (we accepted the relayed connection and
    drive the exchange, and punch) or "dialer" (we dial the peer's candidates)."""
    peer_id: PeerId
    attempt: int
    role: str


@dataclass(frozen=True)
class HolePunchSucceeded:
    """A direct connection to ``peer_id`` formed: ``path`` is PUNCHED, or DIRECT for a
    connection reversal; ``rtt`` the relayed round trip measured for this attempt (s);
    ``elapsed`` seconds since the relayed connection opened; ``address`` the peer's."""
    peer_id: PeerId
    attempt: int
    rtt: float
    path: PathKind
    address: str
    elapsed: float
    role: str


@dataclass(frozen=True)
class HolePunchFailed:
    """An attempt failed (``reason``); ``final`` when no attempt is left (the connection
    stays relayed and keeps working)."""
    peer_id: PeerId
    attempt: int
    rtt: float | None
    reason: str
    final: bool
    role: str


@dataclass(frozen=True)
class BirthdaySucceeded:
    """A birthday attempt (port-restricted cone <-> symmetric, ``nat.punch.birthday``)
    found a path to ``peer_id``. ``role`` "sockets" (we are the symmetric side: our
    extra sockets, the QUIC client) or "probe" (the cone side: our probes, the QUIC
    server); ``address`` the peer's end of the path; ``elapsed`` seconds since the
    attempt began; ``probes`` the probes we sent (None on the sockets side)."""
    peer_id: PeerId
    attempt: int
    role: str
    address: str
    elapsed: float
    probes: int | None = None


@dataclass(frozen=True)
class BirthdayFailed:
    """A birthday attempt to ``peer_id`` found no path (``reason``: no probe reached a
    socket, the QUIC handshake over it failed, sockets could not be opened, ...); the
    DCUtR attempt it was fails with the same reason."""
    peer_id: PeerId
    attempt: int
    role: str
    reason: str
    probes: int | None = None


@dataclass(frozen=True)
class ConnectionMigrated:
    """A QUIC connection to ``peer_id`` moved to a new path and kept its streams (RFC 9000
    section 9, issue 10). ``role`` "client": we moved and migrated it; ``elapsed`` is the
    seconds until the peer acknowledged a packet from our new path. ``role`` "server":
    the peer moved from ``old_address`` to ``address`` and we validated it (no elapsed)."""
    peer_id: PeerId
    address: str           # the peer's HOST:PORT as we send to it now
    role: str
    elapsed: float | None = None
    old_address: str | None = None


@dataclass(frozen=True)
class ConnectionReplaced:
    """A connection to ``peer_id`` that a move made unusable was replaced (issue 10):
    closed, with ``new_path`` the connection that carries on (``Path`` text, e.g.
    ``direct 198.51.100.11:39001``), or None when no new one could be made. ``error``:
    what failed (the migration, and the redial when there is no new path). ``cause``:
    ``migration_failed`` (we moved; it was ours to migrate and the peer acknowledged
    nothing from the new path), ``server_side`` (we moved and were its
    server: QUIC moves only clients), ``tcp`` (we moved; a TLS-over-TCP connection cannot
    follow), ``slept`` (we slept longer than the idle timeout: the peer has closed its
    side, so no migration is tried), ``peer_moved`` (the peer's announcement names a new
    address; we dialed the old one). One event per replaced connection."""
    peer_id: PeerId
    old_path: str
    new_path: str | None
    cause: str
    error: str | None = None


@dataclass(frozen=True)
class TurnAllocationChanged:
    """Our allocation on the TURN server ``server`` (``turn:USER@HOST:PORT``, no password;
    issue 9, ``stack.node.turn``) was made (``held``; ``address`` is the relayed address we
    announce) or failed or was lost (not ``held``; ``error`` names why: wrong
    credentials, no answer, lost on refresh)."""
    server: str
    address: str
    held: bool
    error: str


@dataclass(frozen=True)
class RoomAdmitted:
    """An admission into ``room`` succeeded (issue 13). ``role`` "inviter": we admitted
    ``peer_id`` with invite ``number``; "newcomer": ``peer_id`` admitted us. Either way
    that peer is now in the trust store with source ``invite``."""
    room: str
    peer_id: PeerId
    role: str
    number: int


@dataclass(frozen=True)
class RoomAdmissionFailed:
    """An admission failed; ``reason`` is the named refusal (``wrong_code``: a wrong
    guess spent invite ``number``, ``invite_used``, ``invite_expired``, ``tampered_message``
    ...). For the inviter this is the report of the failed attempt."""
    room: str
    number: int
    reason: str
    role: str


@dataclass(frozen=True)
class RoomPinIssued:
    """The inviter's node shows the PIN of a ``--pin`` invite (issue 13, ``rooms.pin``):
    ``newcomer`` ran the PAKE with invite ``number`` and is admitted only if its user types
    ``pin`` before ``expires`` (Unix seconds). Read it out to the person you invited."""
    room: str
    number: int
    newcomer: PeerId
    pin: str
    expires: float


@dataclass(frozen=True)
class RoomPinRequested:
    """The newcomer's side: the inviter asks for the ``digits``-digit PIN its node shows
    (``p2pstack room join`` prompts for it; ``room_pin`` on the control API answers)."""
    room: str
    number: int
    digits: int
    expires: float


@dataclass(frozen=True)
class RoomMemberVerified:
    """``peer_id`` entered our own view of ``room`` (issue 13): ``via`` "introduced" (a
    member's introduction we checked; ``by`` is that inviter), "inviter" (our own inviter,
    once its welcome reached us), "welcome" (listed in our inviter ``by``'s welcome),
    "admitted" (we admitted it, and it reached us directly). It is in the
    trust store with source ``invite``; ``connected``: we hold a connection to it."""
    room: str
    peer_id: PeerId
    via: str
    by: PeerId | None
    connected: bool


@dataclass(frozen=True)
class RoomStatementRefused:
    """A room statement ``sender`` sent us was refused (issue 13): ``statement`` "intro",
    "welcome", "greet", "joined" ...; ``reason`` the named refusal
    (``forged_introduction``, ``not_member``, ``removed``, ...)."""
    room: str
    sender: PeerId
    statement: str
    reason: str


@dataclass(frozen=True)
class RoomReached:
    """We reached ``peer_id``, a member of our roster of ``room``, directly, having found
    it ``via`` "dht" (the room's DHT record, ``stack.node.roomdht``): no rendezvous."""
    room: str
    peer_id: PeerId
    via: str


@dataclass(frozen=True)
class RoomGraphChanged:
    """Our trust graph of ``room`` changed (issue 13 section 3): ``cause`` "vouch" (we
    took ``peer_id``'s newer signed statement of whom it verified), "removed" (``peer_id``
    left the room by a removal we accepted, or was cut off with the member it came in by)."""
    room: str
    peer_id: PeerId
    cause: str


@dataclass(frozen=True)
class RoomStateChanged:
    """A key of ``room``'s shared document changed (issue 13 section 4): ``value`` None
    for a deletion; ``origin`` the member whose update brought it, None for our own."""
    room: str
    key: str
    value: str | None
    origin: PeerId | None


@dataclass(frozen=True)
class RoomSynced:
    """A state-vector exchange of ``room`` with member ``peer_id`` finished (either side
    opened it): both now hold the same updates, as of that moment."""
    room: str
    peer_id: PeerId


NodeEvent = (ConnectionOpened | ConnectionClosed | TrustChecked | IdentityReceived
             | DialbackResult | AnnouncementPublished | ServiceFailed | ControlRequest
             | RelayReservation | NatReported | ReachabilityChecked | MappingChanged
             | AddressChanged | AnnouncementReceived | HolePunchStarted | HolePunchSucceeded
             | HolePunchFailed | BirthdaySucceeded | BirthdayFailed | ConnectionMigrated
             | ConnectionReplaced
             | TurnAllocationChanged | RoomAdmitted | RoomAdmissionFailed | RoomPinIssued
             | RoomPinRequested
             | RoomMemberVerified | RoomStatementRefused | RoomGraphChanged | RoomReached
             | RoomStateChanged | RoomSynced)

#: the log name of each event type
EVENT_NAMES: dict[type, str] = {
    ConnectionOpened: "connection.opened", ConnectionClosed: "connection.closed",
    TrustChecked: "trust.checked", IdentityReceived: "identity.received",
    DialbackResult: "dialback.result", AnnouncementPublished: "dht.published",
    ServiceFailed: "service.failed", ControlRequest: "control.request",
    RelayReservation: "relay.reservation",
    NatReported: "nat.report", ReachabilityChecked: "autonat.result",
    MappingChanged: "nat.mapping_changed", AddressChanged: "address.changed",
    AnnouncementReceived: "announce.received", HolePunchStarted: "holepunch.started",
    HolePunchSucceeded: "holepunch.succeeded", HolePunchFailed: "holepunch.failed",
    BirthdaySucceeded: "holepunch.birthday.succeeded",
    BirthdayFailed: "holepunch.birthday.failed",
    ConnectionMigrated: "connection.migrated", ConnectionReplaced: "connection.replaced",
    TurnAllocationChanged: "turn.allocation",
    RoomAdmitted: "room.admitted", RoomAdmissionFailed: "room.admission_failed",
    RoomPinIssued: "room.pin_issued", RoomPinRequested: "room.pin_requested",
    RoomReached: "room.reached",
    RoomMemberVerified: "room.member_verified", RoomStatementRefused: "room.statement_refused",
    RoomGraphChanged: "room.graph_changed", RoomStateChanged: "room.state_changed",
    RoomSynced: "room.synced",
}

E = TypeVar("E")


class EventBus:
    """Delivers events to queues and one-shot waiters; logs each one by name."""

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[NodeEvent]] = []
        self._waiters: list[EventWaiter[Any]] = []

    def subscribe(self) -> asyncio.Queue[NodeEvent]:
        """A queue receiving every later event."""
        queue: asyncio.Queue[NodeEvent] = asyncio.Queue()
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[NodeEvent]) -> None:
        with contextlib.suppress(ValueError):
            self._queues.remove(queue)

    def next_event(self, kind: type[E], *, timeout: float | None = None,
                   **match: Any) -> EventWaiter[E]:
        """The next event of type ``kind`` whose fields equal ``match`` (see the module
        docstring: it registers now). ``TimeoutError`` after ``timeout`` seconds."""
        waiter = EventWaiter(self, kind, match, timeout)
        self._waiters.append(waiter)
        return waiter

    def _forget(self, waiter: EventWaiter[Any]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def emit(self, event: NodeEvent, level: str = "info") -> None:
        fields = {k: (str(v) if isinstance(v, (PeerId, Enum)) else
                      [str(p) for p in v] if k == "relay_chain" else v)  # plain text in logs
                  for k, v in event.__dict__.items()}
        getattr(log, level)(EVENT_NAMES[type(event)], **fields)
        for queue in self._queues:
            queue.put_nowait(event)
        for waiter in list(self._waiters):
            waiter._offer(event)


_MISSING = object()


class EventWaiter(Generic[E]):
    """An awaitable for one event, registered on creation. ``cancel()`` unregisters
    it without awaiting (e.g. when the action it waited for failed)."""

    def __init__(self, bus: EventBus, kind: type[E], match: dict[str, Any],
                 timeout: float | None) -> None:
        self._bus = bus
        self._kind = kind
        self._match = match
        self._timeout = timeout
        self._future: asyncio.Future[E] = asyncio.get_running_loop().create_future()

    def _offer(self, event: object) -> None:
        if (not self._future.done() and isinstance(event, self._kind)
                and all(getattr(event, k, _MISSING) == v for k, v in self._match.items())):
            self._future.set_result(event)
            self._bus._forget(self)

    def __await__(self) -> Generator[Any, None, E]:
        return self._wait().__await__()

    async def _wait(self) -> E:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._future
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._bus._forget(self)
        if not self._future.done():
            self._future.cancel()
