"""``/p2pstack/announce/1``: signed announcements pushed to the peers who matter (issue 10).

When a node moves (``stack.node.mobility``) it signs a new announcement (seed 004's
``peer_reconnection``, next sequence number, ``previous`` = the peers it was connected to)
and **pushes** it to every peer it had a connection with in the last ``recent`` seconds
(seed 004's "broadcast"). A receiver verifies it with the full seed-004 rules against its
trust store and replay state (``stack.base.replay.Verifier``, kept in ``Stores.replay``)
and, when valid, remembers where that peer is now (``addresses(peer)``; ``Node.connect``
by peer id tries them first), closes its connections to the old address and redials the
new one at once if it had one (a connection that died or went stale).

**Relayed**: a receiver that verified an announcement forwards it, wrapped in a relay
envelope it signs (seed 004's ``relayed_announcement``), over its open connections to the
peers the announcement names in ``previous`` and, while some of those are not among its
connections, to its other peers (at most ``max_forward``), as long as the result has at
most ``MAX_RELAY_HOPS`` relays. Each node accepts an announcement once (the verifier's
nonce check), so a flood ends after one forward per node.

**DHT**: with keep-alives on (so an idle timeout means the path died, not that both
ends fell silent), a connection that died of its idle timeout starts a re-resolve of that
peer through the DHT with backoff (``reresolve_delays``); a record naming another address
is dialed.

Wire: the dialer opens a stream, names the protocol, writes one message (the record, at
most ``MAX_RELAYED_SIZE`` bytes), and reads one message: the verdict's code in ASCII.

Verdicts (``AnnouncementReceived.result``, counted in ``stats``), cheapest first:

==============================  ==============================================  ===========
code                            when                                            action
==============================  ==============================================  ===========
``banned``                      the sending peer is banned                      ignore
``rate_limited``                the sender's push bucket is empty (before any   ignore
                                crypto), or the verifier's per-announcer bucket
``invalid_relay_signature``     a relay signature fails, or the sender is not   ban sender
                                the outermost signer (it forwards what it did
                                not wrap, or a bare announcement not its own)
``invalid_signature``           a forgery or tampering; inside a relay chain    ignore; ban
                                the relay forwarded garbage                     if relayed
``malformed``                   not a record; inside a relay chain, as above    as above
``relay_chain_too_long``        more than ``MAX_RELAY_HOPS`` relays             ignore
``unknown_peer``                the announcer is not in our trust store         ignore
``timestamp_out_of_range``      too old or too new                              ignore
``nonce_reused``                a replay                                        ignore
``sequence_number_not_          a rollback                                      ignore
incremented``
``valid``                       verified                                        redial
==============================  ==============================================  ===========

Storm control: incoming pushes per sending peer (``receive_rate``/``receive_burst``),
outgoing pushes per target (``push_rate``/``push_burst``), at most one redial per announcer
per ``redial_interval``, one re-resolve task per peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from stack.base.addresses import PeerAddress, parse_address
from stack.base.clock import Clock
from stack.base.errors import StackError, UsageError
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, PathKind, Stream
from stack.base.net import Address
from stack.base.ratelimit import TokenBuckets
from stack.base.records import (ANNOUNCEMENT_TYPE, MAX_RELAYED_SIZE, Announcement, Envelope,
                                MalformedRecord, RecordTooLarge, RelayedAnnouncement, Result,
                                decode_announcement, relay)
from stack.base.replay import Outcome, Verifier, VerifierConfig
from stack.node.events import AnnouncementReceived, ConnectionReplaced, EventBus
from stack.node.router import open_protocol
from stack.store.replay import ReplayStore
from stack.store.trust_model import TrustEntry

__all__ = ["PROTO_ANNOUNCE", "PushConfig", "AnnouncePushProtocol", "BANNED", "RATE_LIMITED"]

log = structlog.get_logger("p2pstack.announce")

PROTO_ANNOUNCE = b"/p2pstack/announce/1"
BANNED = "banned"
RATE_LIMITED = str(Result.RATE_LIMITED)
MAX_REPLY = 64  # bytes: a result code
BAN_GRACE = 0.5  # seconds between banning a peer and closing its connections


@dataclass(frozen=True)
class PushConfig:
    """Attributes:
        recent: seconds; peers we had a connection with this recently get our pushes
            (issue 10: the last hour).
        push_timeout: seconds for one push (dial, send, verdict).
        push_rate, push_burst: outgoing pushes per target peer (per second, burst).
        receive_rate, receive_burst: incoming pushes per sending peer, before any crypto.
        redial_interval: seconds; at most one redial per announcer in this time.
        ban_time: seconds a relay that forwarded garbage stays banned.
        max_forward: peers a relay forwards one announcement to, at most.
        max_push: recent peers a move is pushed to, at most (the most recent ones: peer
            ids cost nothing to mint, so connections alone must not buy a push each).
        max_tracked: peers remembered (last connection, lost, banned), oldest dropped.
        reresolve_delays: seconds between DHT re-resolves of a peer whose connection died.
        verifier: the seed-004 verifier's settings (``MAX_RELAY_HOPS`` = its
            ``max_relay_hops``, 3).
    """

    recent: float = 3600.0
    push_timeout: float = 5.0
    push_rate: float = 0.2
    push_burst: float = 3.0
    receive_rate: float = 0.5
    receive_burst: float = 5.0
    redial_interval: float = 10.0
    ban_time: float = 3600.0
    max_forward: int = 8
    max_push: int = 64
    max_tracked: int = 4096
    reresolve_delays: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)


Connect = Callable[[PeerId | PeerAddress], Coroutine[Any, Any, Connection]]
Resolve = Callable[[PeerId], Coroutine[Any, Any, Announcement]]


def _direct(addrs: Iterable[str]) -> list[Address]:
    """The direct QUIC addresses among ``addrs``, in order."""
    out: list[Address] = []
    for text in addrs:
        with contextlib.suppress(UsageError):
            a = parse_address(text)
            if (a.host is not None and a.relay is None and a.transport in (None, "quic")
                    and a.address not in out):
                out.append(a.address)
    return out


class AnnouncePushProtocol:
    """Both sides of ``/p2pstack/announce/1`` (see the module docstring).

    Collaborators are passed in (the Node composes them): our identity and clock, the
    trust store's ``get_async`` (read off the loop), the replay store, ``connect`` (dial
    a peer id or an address, no identify), ``connections`` (our open ones), ``resolve``
    (the DHT; None without one), ``reresolve`` (use it when a connection dies), the
    event bus, ``spawn`` (the supervisor's) and ``running``.
    """

    protocol_id = PROTO_ANNOUNCE

    def __init__(self, *, identity: Identity, clock: Clock,
                 trust_entry: Callable[[PeerId], Awaitable[TrustEntry | None]],
                 replay: ReplayStore, connect: Connect,
                 connections: Callable[[], list[Connection]], events: EventBus,
                 spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
                 running: Callable[[], bool], resolve: Resolve | None = None,
                 reresolve: bool = False,
                 config: PushConfig | None = None) -> None:
        self.config = cfg = config or PushConfig()
        self._identity = identity
        self._clock = clock
        self._trust_entry = trust_entry
        self._replay = replay
        self._connect = connect
        self._connections = connections
        self._events = events
        self._spawn = spawn
        self._running = running
        self._resolve = resolve if reresolve else None
        self.verifier: Verifier = Verifier(cfg.verifier)
        self.stats: Counter[str] = Counter()  # verdicts received, plus pushed/forwarded/...
        # peer -> last connected (monotonic), least recent first
        self._seen: OrderedDict[PeerId, float] = OrderedDict()
        self._lost: OrderedDict[PeerId, float] = OrderedDict()  # peer -> when one died
        self._hints: dict[PeerId, tuple[int, tuple[str, ...]]] = {}  # peer -> (seq, addrs)
        self._banned: OrderedDict[PeerId, float] = OrderedDict()  # peer -> until (mono)
        self._incoming = TokenBuckets(cfg.receive_rate, cfg.receive_burst)
        self._outgoing = TokenBuckets(cfg.push_rate, cfg.push_burst)
        self._redials = TokenBuckets(1.0 / cfg.redial_interval, 1.0)
        self._reresolving: set[PeerId] = set()
        self.on_seen: Callable[[], None] | None = None  # a connection opened (mobility)

    # ------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        with contextlib.suppress(StackError, ValueError):  # a corrupt state: start fresh
            self.verifier = self._replay.load(self.config.verifier)

    async def stop(self) -> None:
        with contextlib.suppress(StackError, OSError):
            await self._save()

    async def _save(self) -> None:
        """The replay state, durable: memory stores at once, files off the loop."""
        if hasattr(self._replay, "path"):  # a file: atomic write in a thread
            snapshot = Verifier.restore(self.verifier.dump(), self.config.verifier)
            await asyncio.to_thread(self._replay.save, snapshot)
        else:
            self._replay.save(self.verifier)

    # ------------------------------------------------------------- peer tracking

    def _note(self, table: OrderedDict[PeerId, float], peer: PeerId, value: float) -> None:
        table[peer] = value
        table.move_to_end(peer)
        if len(table) > self.config.max_tracked:
            table.popitem(last=False)

    def on_connection(self, conn: Connection) -> None:
        peer = conn.peer_id
        self._note(self._seen, peer, self._clock.monotonic())
        if self.on_seen is not None:
            self.on_seen()
        add = getattr(conn, "add_close_callback", None)
        if add is not None:
            add(lambda c: self._closed(conn))

    def _closed(self, conn: Connection) -> None:
        now = self._clock.monotonic()
        peer = conn.peer_id
        self._note(self._seen, peer, now)
        reason = (getattr(conn, "close_reason", "") or "").lower()
        if "idle timeout" in reason and self._running():  # it died, we did not close it
            self._note(self._lost, peer, now)
            if self._resolve is not None and not self._live(peer):
                self._reresolve_soon(peer, conn.remote_address)

    def recent_peers(self) -> list[PeerId]:
        """Peers we had a connection with in the last ``config.recent`` seconds, the
        most recent first, at most ``config.max_push``."""
        horizon = self._clock.monotonic() - self.config.recent
        seen = self._seen
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)
        me = self._identity.peer_id
        return [p for p in reversed(seen) if p != me][:self.config.max_push]

    def has_recent(self) -> bool:
        """Whether any peer was connected in the last ``config.recent`` seconds (O(1))."""
        seen = self._seen
        return bool(seen) and (next(reversed(seen.values()))
                               >= self._clock.monotonic() - self.config.recent)

    def addresses(self, peer: PeerId) -> tuple[str, ...]:
        """Where ``peer`` said it is, in its latest verified announcement (or ())."""
        hint = self._hints.get(peer)
        return hint[1] if hint is not None else ()

    def _live(self, peer: PeerId) -> list[Connection]:
        return [c for c in self._connections() if c.peer_id == peer and not c.closed]

    # ------------------------------------------------------------------- pushing

    async def push_all(self, record: bytes, *, replace: bool = False,
                       route: Callable[[PeerId], Awaitable[Connection | None]] | None = None
                       ) -> dict[PeerId, str]:
        """Push ``record`` (our announcement) to every recent peer at once; returns each
        peer's verdict, or the error that kept it from answering. With ``replace`` (our
        old path is gone) a peer that accepted it keeps only the push's connection from
        us among those open when the push began: they ran over the old path (the peer
        closes its side of them too, but its close goes to our old address); one opened
        meanwhile (a relay reservation's redial) is on the new path and stays.
        ``route(peer)``, when given, names the connection to push over (one that migrated
        to our new path, or replaced the old ones: ``stack.node.migration``); the
        replacing was done there, so a peer it names a connection for is pushed to
        without ``replace``."""
        peers = self.recent_peers()

        async def one(peer: PeerId) -> str:
            conn = None if route is None else await route(peer)
            return await self.push(peer, record, conn, replace=replace and conn is None)

        results = await asyncio.gather(*(one(p) for p in peers))
        return dict(zip(peers, results, strict=True))

    async def push(self, peer: PeerId, record: bytes, conn: Connection | None = None, *,
                   replace: bool = False) -> str:
        """Send ``record`` to ``peer``; its verdict. Over ``conn`` if given; else, unless
        ``replace`` (our old path is gone), over a live connection to it; else, or when
        that fails, over a fresh dial."""
        if not self._outgoing.allow(peer, self._clock.monotonic()):
            self.stats["push_rate_limited"] += 1
            return "not sent: rate limited"
        # with ``replace``, the connections on the old path: any opened from here on
        # (a relay reservation's own redial, say) runs on the new one and stays
        old_path = self._live(peer)
        if conn is None and not replace:  # our path still works: reuse a connection
            conn = next(iter(sorted(old_path, key=lambda c: not c.is_client)), None)
        try:
            async with asyncio.timeout(self.config.push_timeout):
                reply = None
                if conn is not None and not conn.closed:
                    with contextlib.suppress(StackError):
                        reply = await self._send(conn, record)
                if reply is None:
                    conn = await self._connect(peer)
                    reply = await self._send(conn, record)
        except (StackError, TimeoutError) as exc:
            self.stats["push_failed"] += 1
            log.debug("announce.push_failed", peer_id=str(peer), error=str(exc) or "timeout")
            return f"not sent: {type(exc).__name__}"
        self.stats["pushed"] += 1
        verdict = reply.decode("ascii", errors="replace")
        if replace and verdict == Result.VALID:
            for old in old_path:
                if old is not conn and not old.closed:
                    old.abort("replaced by a connection on the new path")
        return verdict

    @staticmethod
    async def _send(conn: Connection, record: bytes) -> bytes:
        stream = await open_protocol(conn, PROTO_ANNOUNCE)
        await stream.write_message(record)
        reply = await stream.read_message(MAX_REPLY)
        await stream.close()
        return reply

    # ----------------------------------------------------------------- receiving

    async def handle(self, conn: Connection, stream: Stream) -> None:
        via = conn.peer_id
        now = self._clock.monotonic()
        if self._banned.get(via, 0.0) > now:
            verdict, outcome, data = BANNED, None, b""
        elif not self._incoming.allow(via, now):
            verdict, outcome, data = RATE_LIMITED, None, b""
        else:
            data = await stream.read_message(MAX_RELAYED_SIZE)
            outcome = await self._verify(data, via)
            verdict = str(outcome.result)
        await stream.write_message(verdict.encode())
        await stream.close()
        self._conclude(verdict, outcome, conn, data)

    async def _verify(self, data: bytes, via: PeerId) -> Outcome:
        """Seed 004's rules, after one of our own: the sender signed the outermost layer
        (it is the announcer, or the last relay). Checked first, on the decoded envelope
        only, so a peer forwarding someone else's record unwrapped cannot burn its nonce.
        The claimed announcer's trust entry is read off the loop before the verifier
        asks whether it is known."""
        try:
            env = Envelope.decode(data)
            if env.payload_type == ANNOUNCEMENT_TYPE:
                signer = decode_announcement(data)[1].peer_id
            else:
                signer = RelayedAnnouncement.decode_payload(env.payload).relayed_by
        except MalformedRecord:
            return Outcome(Result.MALFORMED)
        if signer != via:
            return Outcome(Result.INVALID_RELAY_SIGNATURE)
        announcer = self._announcer(data)
        entry = await self._trust_entry(announcer) if announcer is not None else None
        known = entry is not None and entry.trusted
        return self.verifier.verify(data, self._clock.now(), require_known=True,
                                    is_known=lambda peer: known and peer == announcer)

    def _announcer(self, data: bytes) -> PeerId | None:
        """The peer id an announcement claims, through at most one relay more than
        allowed (the verifier refuses longer chains anyway); None if it does not decode."""
        try:
            for _ in range(self.config.verifier.max_relay_hops + 2):
                env = Envelope.decode(data)
                if env.payload_type == ANNOUNCEMENT_TYPE:
                    return Announcement.decode_payload(env.payload).peer_id
                data = RelayedAnnouncement.decode_payload(env.payload).original
        except MalformedRecord:
            return None
        return None

    def _conclude(self, verdict: str, outcome: Outcome | None, conn: Connection,
                  data: bytes) -> None:
        via = conn.peer_id
        self.stats[verdict] += 1
        relayed = outcome is not None and (bool(outcome.relay_chain) or (
            outcome.peer_id is not None and outcome.peer_id != via))
        if verdict == Result.INVALID_RELAY_SIGNATURE or (
                relayed and verdict in (Result.INVALID_SIGNATURE, Result.MALFORMED)):
            self._ban(via, verdict)
        if outcome is None or not outcome.ok:
            self._events.emit(AnnouncementReceived(
                outcome.peer_id if outcome else None, verdict, via,
                relay_chain=outcome.relay_chain if outcome else ()), "warning")
            return
        ann = outcome.announcement
        assert ann is not None
        self._hints[ann.peer_id] = (ann.seq, ann.addrs)
        redialed = self._replace(ann, conn)
        self._events.emit(AnnouncementReceived(ann.peer_id, verdict, via, ann.seq, ann.addrs,
                                               outcome.relay_chain, redialed))
        self._spawn(self._after_valid(data, ann, outcome.relay_chain, via))

    async def _after_valid(self, data: bytes, ann: Announcement,
                           chain: tuple[PeerId, ...], via: PeerId) -> None:
        with contextlib.suppress(StackError, OSError):
            await self._save()
        await self._forward(data, ann, chain, via)

    def _ban(self, peer: PeerId, why: str) -> None:
        self._note(self._banned, peer, self._clock.monotonic() + self.config.ban_time)
        self.stats["bans"] += 1
        log.warning("announce.relay_banned", peer_id=str(peer), reason=why)
        self._spawn(self._drop(peer))

    async def _drop(self, peer: PeerId) -> None:
        """Close a banned peer's connections, once our verdict had time to reach it."""
        await asyncio.sleep(BAN_GRACE)
        for conn in self._live(peer):
            conn.abort("banned: forwarded a bad announcement")

    def _replace(self, ann: Announcement, carrier: Connection) -> bool:
        """The connections we dialed to ``ann.peer_id`` at an address it no longer
        announces are stale: close them (not ``carrier``, which just brought the push: it is alive).
        Redial the new address if we had one (stale or died) and no connection we dialed
        reaches it yet. Whether we redial."""
        peer = ann.peer_id
        new = _direct(ann.addrs)
        if not new:
            return False
        had = peer in self._lost
        ours = False
        stale: list[Connection] = []
        for conn in self._live(peer):
            # Only connections we dialed went to an address: an inbound one comes from
            # whatever port the peer dialed from (a dial-back port, a NAT mapping).
            if conn.path.kind is not PathKind.DIRECT or conn is carrier or not conn.is_client:
                continue
            if conn.remote_address not in new:
                had = True
                stale.append(conn)
                conn.abort("peer moved")
            else:
                ours = True
        if not had or ours or not self._redials.allow(peer, self._clock.monotonic()):
            self._report_replaced(peer, stale, carrier, None)
            return False
        self._lost.pop(peer, None)
        self.stats["redialed"] += 1
        self._spawn(self._redial(peer, new, tuple(stale)))
        return True

    def _report_replaced(self, peer: PeerId, stale: Iterable[Connection],
                         new: Connection | None, error: str | None) -> None:
        """One ``connection.replaced`` (cause ``peer_moved``) per connection closed
        because ``peer`` moved; ``new`` carries on (None: ``error`` says why not)."""
        for old in stale:
            self._events.emit(ConnectionReplaced(peer, str(old.path),
                                                 None if new is None else str(new.path),
                                                 "peer_moved", error), "warning")

    async def _redial(self, peer: PeerId, addrs: list[Address],
                      stale: tuple[Connection, ...] = ()) -> Connection | None:
        error = None
        for host, port in addrs:
            try:
                async with asyncio.timeout(self.config.push_timeout):
                    conn = await self._connect(PeerAddress(host, port, "quic", peer))
                self._report_replaced(peer, stale, conn, None)
                return conn
            except (StackError, TimeoutError) as exc:
                error = f"{host}:{port}: {str(exc) or 'timeout'}"
                log.debug("announce.redial_failed", peer_id=str(peer),
                          address=f"{host}:{port}", error=str(exc) or "timeout")
        self.stats["redial_failed"] += 1
        self._report_replaced(peer, stale, None, error)
        return None

    # ----------------------------------------------------------------- relaying

    async def _forward(self, data: bytes, ann: Announcement, chain: tuple[PeerId, ...],
                       via: PeerId) -> None:
        if len(chain) >= self.config.verifier.max_relay_hops:
            return  # one more wrap would be a chain too long
        me = self._identity.peer_id
        exclude = {me, ann.peer_id, via, *chain}
        targets = set(ann.previous) - exclude
        if not targets:
            return
        conns: dict[PeerId, Connection] = {}
        for conn in self._connections():
            if not conn.closed and conn.peer_id not in exclude:
                conns.setdefault(conn.peer_id, conn)
        chosen = [p for p in conns if p in targets]
        if targets - set(chosen):  # some targets are not ours: ask our other peers too
            chosen += [p for p in conns if p not in targets]
        chosen = chosen[:self.config.max_forward]
        if not chosen:
            return
        try:
            wrapped = relay(self._identity, data, self._clock.now())
        except (RecordTooLarge, MalformedRecord):
            return
        self.stats["forwarded"] += len(chosen)
        await asyncio.gather(*(self.push(p, wrapped, conns[p]) for p in chosen))

    # ---------------------------------------------------------------- DHT

    def _reresolve_soon(self, peer: PeerId, dead: Address) -> None:
        if peer in self._reresolving:
            return
        self._reresolving.add(peer)
        self._spawn(self._reresolve(peer, dead))

    async def _reresolve(self, peer: PeerId, dead: Address) -> None:
        """Find ``peer`` again through the DHT (seed 002), with backoff: dial what its
        record announces, once it names an address other than the one that died or a
        newer sequence number than we know."""
        assert self._resolve is not None
        try:
            for delay in self.config.reresolve_delays:
                await asyncio.sleep(delay)
                if not self._running() or self._live(peer):
                    return
                self.stats["reresolved"] += 1
                try:
                    ann = await self._resolve(peer)
                except (StackError, TimeoutError):
                    continue
                known = self._hints.get(peer)
                addrs = [a for a in _direct(ann.addrs) if a != dead]
                if known is not None and ann.seq > known[0]:
                    self._hints[peer] = (ann.seq, ann.addrs)
                if addrs and await self._redial(peer, addrs) is not None:
                    return
        finally:
            self._reresolving.discard(peer)
