"""``/p2pstack/dcutr/1``: upgrade a relayed connection to a direct one (issue 9 section 3).

Direct Connection Upgrade through Relay, after libp2p's ``relay/DCUtR.md`` (its facts;
our own wire, ``nat.punch.core``). When a relayed connection opens, the side that
*accepted* it (B, the NATed target, like libp2p) opens this protocol on it; the side that
dialed it (A) answers. Per attempt (at most ``MAX_ATTEMPTS``, each with a fresh RTT):

1. Both learn their candidates: the address the relay sees of their shared UDP port (a
   REFLECT datagram to the relay's port, answered by every node's punch handler), their
   confirmed observed address, and their interface addresses.
2. CONNECT / CONNECT: B measures the relayed round trip. If A says it is public (the
   relay sees it at one of its own interface addresses), B first dials A directly
   (connection reversal); the path is DIRECT.
3. SYNC: A dials B's candidates at once as the QUIC client, from the node's own shared
   port (so the NAT mapping its peers learnt is the one used); B waits RTT/2, then sends
   PUNCH datagrams from its shared port to A's candidates, and its QUIC transport
   accepts A's Initials from A's IPs without a Retry as PUNCHED (``expect_punch``). A
   also dials where B's punches come from (a symmetric NAT's fresh port).
4. A reports the result. On success both sides keep the direct connection (the node's
   ``connect(peer_id)`` returns it) and the relayed one closes after ``grace`` seconds;
   otherwise the next attempt, and after the last the connection stays relayed.

Birthday (port-restricted cone <-> symmetric, ``stack.node.protocols.birthday``): both
CONNECT messages also carry the sender's NAT behaviour (``"nat": [mapping, filtering]``
from its NAT report, or null) and whether it offers a birthday attempt now
(``"birthday"``: enabled, and its one slot is free: A reserves it when it offers).
When both offer and the behaviours make that pair, B sends ``{"t": "sync", "birthday":
true}`` and the attempt is a birthday one instead of the plain punch::

    S -> E  {"t": "ready"}      S (symmetric) opened its sockets and sent a first round
    ... E probes random ports of S's public IP from its port; S dials QUIC over the
        socket a probe reached
    S -> E  {"t": "result", "ok": bool, "reason": str}

(S and E are whichever of A and B has that part.) Each of the ``MAX_ATTEMPTS`` may be a
birthday one; a plain SYNC releases A's reservation.

Events: ``holepunch.started`` / ``succeeded`` / ``failed`` (attempt, rtt, reason, path,
elapsed since the relayed connection opened), and ``holepunch.birthday.succeeded`` /
``failed`` for a birthday attempt. Not done here: TURN; symmetric <-> symmetric stays
relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from stack.base.clock import Clock
from stack.base.identity import PeerId
from stack.base.errors import StackError
from stack.base.interfaces import Connection, PathKind, Stream
from stack.base.net import Address, Datagram, format_address
from nat.punch.birthday import SOCKETS_ROLE, Behaviour, BirthdayProber, role
from nat.punch.core import (MAX_ATTEMPTS, MAX_MESSAGE, PROTO_DCUTR, PUNCH, REFLECT_REPLY,
                            REFLECT_REQUEST, MalformedPunch, Puncher, decode_datagram,
                            decode_message, encode_message, encode_reflect_reply,
                            encode_reflect_request, sync_delay)
from stack.node.events import (BirthdayFailed, BirthdaySucceeded, EventBus, HolePunchFailed,
                               HolePunchStarted, HolePunchSucceeded)
from stack.node.protocols.birthday import Birthday
from stack.node.router import open_protocol
from stack.transport.errors import TransportError
from stack.transport.quic import QuicConn, QuicTransport

__all__ = ["PROTO_DCUTR", "HolePunch"]

log = structlog.get_logger("p2pstack.holepunch")

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]
REFLECT_TRIES = 4
REFLECT_WAIT = 0.5      # seconds per reflect try
NO_ADDRESS = "the peer has no usable address"
START_WAIT = 3.0        # seconds ``outcome`` waits for an upgrade to start at all


class HolePunch:
    """The protocol handler (A's side), the connection hook (B's side) and the handler
    of the node's PUNCH_BYTE datagrams. ``attempt_timeout``: seconds an attempt's dial
    may take; ``grace``: seconds the relayed connection stays open after an upgrade."""

    protocol_id = PROTO_DCUTR

    def __init__(self, *, transport: Callable[[], QuicTransport | None],
                 send: Callable[[bytes, Address], None],
                 local_addrs: Callable[[], list[Address]],
                 observed: Callable[[], Address | None],
                 adopt: Callable[[QuicConn], Awaitable[bool]],
                 events: EventBus, clock: Clock, spawn: Spawn, rng: random.Random,
                 nat: Callable[[], Behaviour] = lambda: None,
                 birthday: Birthday | None = None, enabled: bool = True,
                 attempt_timeout: float = 5.0, grace: float = 5.0, timeout: float = 10.0) -> None:
        self._transport = transport
        self._send = send
        self._local_addrs = local_addrs
        self._observed = observed
        self._adopt = adopt
        self._nat = nat
        self.birthday = birthday
        self._events = events
        self._clock = clock
        self._spawn = spawn
        self._rng = rng
        self.enabled = enabled
        self.attempt_timeout = attempt_timeout
        self.grace = grace
        self._timeout = timeout
        self._reflects: dict[bytes, asyncio.Future[Address]] = {}
        self._punchers: dict[bytes, tuple[Puncher, Callable[[Address], None] | None]] = {}
        self._waiting: dict[PeerId, asyncio.Future[QuicConn]] = {}
        self._opened: dict[Connection, float] = {}   # relayed connection -> opened at
        # peer -> direct connections hole punching (or reversal) made, oldest first; a
        # loser of a race that the dialer aborts leaves on its close
        self.upgraded: dict[PeerId, list[Connection]] = {}
        # peer -> how the latest upgrade of a relayed connection to it ended
        self.results: dict[PeerId, HolePunchSucceeded | HolePunchFailed] = {}
        self.upgraded_at: dict[PeerId, float] = {}   # peer -> when (monotonic)
        self.attempting: set[PeerId] = set()   # an upgrade to it started and has not ended
        self.dropped = 0

    # ---------------------------------------------------------------- the node's hooks
    def direct(self, peer: PeerId) -> Connection | None:
        """The open connection hole punching made to ``peer``, if any."""
        conns = self.upgraded.get(peer, [])
        conns[:] = [c for c in conns if not c.closed]
        if not conns:
            self.upgraded.pop(peer, None)
            return None
        return conns[0]

    async def outcome(self, peer: PeerId,
                      timeout: float) -> HolePunchSucceeded | HolePunchFailed | None:
        """How the upgrade of the relayed connection to ``peer`` ended, waiting up to
        ``timeout`` seconds for it; None if it has not ended by then."""
        succeeded = self._events.next_event(HolePunchSucceeded, peer_id=peer, timeout=timeout)
        failed = self._events.next_event(HolePunchFailed, peer_id=peer, final=True,
                                         timeout=timeout)
        started = self._events.next_event(HolePunchStarted, peer_id=peer,
                                          timeout=min(timeout, START_WAIT))
        try:
            known = self.results.get(peer)
            if known is not None:
                return known
            if peer not in self.attempting:
                # the peer opens the exchange within a round trip of the relayed
                # connection; one that has not by now does no hole punching
                try:
                    await started
                except TimeoutError:
                    return None
                known = self.results.get(peer)
                if known is not None:
                    return known
            won: asyncio.Future[HolePunchSucceeded] = asyncio.ensure_future(succeeded._wait())
            lost: asyncio.Future[HolePunchFailed] = asyncio.ensure_future(failed._wait())
            waits: set[asyncio.Future[Any]] = {won, lost}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for future in (won, lost):
                if future.done() and not future.cancelled() and future.exception() is None:
                    lost.cancel()
                    won.cancel()
                    return future.result()
            return None
        finally:
            succeeded.cancel()
            failed.cancel()
            started.cancel()

    def _remember(self, conn: Connection) -> None:
        conns = self.upgraded.setdefault(conn.peer_id, [])
        if conn not in conns:
            conns.append(conn)

    def on_connection(self, conn: Connection) -> None:
        kind = conn.path.kind
        if kind is PathKind.RELAYED:
            self.results.pop(conn.peer_id, None)  # a new relayed connection, a new upgrade
            self.attempting.discard(conn.peer_id)
            self._opened[conn] = self._clock.monotonic()
            conn.add_close_callback(lambda _c: self._opened.pop(conn, None))  # type: ignore[attr-defined]
            if (self.enabled and not conn.is_client and self._transport() is not None
                    and self.direct(conn.peer_id) is None):  # none yet: upgrade this one
                self._spawn(self._initiate(conn))
        elif not conn.is_client and isinstance(conn, QuicConn):
            waiting = self._waiting.get(conn.peer_id)
            if kind is PathKind.PUNCHED or (waiting is not None and kind is PathKind.DIRECT):
                self._remember(conn)
                if waiting is not None and not waiting.done():
                    waiting.set_result(conn)

    def receive(self, batch: list[Datagram]) -> None:
        """PUNCH_BYTE datagrams from the shared port (a ``Receiver``)."""
        now = self._clock.monotonic()
        for data, addr in batch:
            try:
                datagram = decode_datagram(data)
            except MalformedPunch:
                self.dropped += 1
                continue
            if datagram.kind == REFLECT_REQUEST:
                self._send(encode_reflect_reply(datagram.nonce, addr), addr)
            elif datagram.kind == REFLECT_REPLY:
                future = self._reflects.get(datagram.nonce)
                if future is not None and not future.done() and datagram.address is not None:
                    future.set_result(datagram.address)
            elif datagram.kind == PUNCH:
                entry = self._punchers.get(datagram.nonce)
                if entry is None:
                    self.dropped += 1  # a punch that came late, or noise: dropped quietly
                    continue
                puncher, on_new = entry
                puncher.receive(datagram, addr, now)
                while (event := puncher.next_event()) is not None:
                    if on_new is not None:
                        on_new(event.address)

    # ---------------------------------------------------------------- candidates
    async def _reflect(self, server: Address) -> Address | None:
        nonce = os.urandom(8)
        future: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
        self._reflects[nonce] = future
        try:
            for _ in range(REFLECT_TRIES):
                self._send(encode_reflect_request(nonce), server)
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), REFLECT_WAIT)
            return None
        finally:
            del self._reflects[nonce]

    async def _candidates(self, conn: Connection) -> tuple[list[Address], bool, bool]:
        """Our candidates (relay-observed, observed, interface), whether we look public
        (the relay sees us at one of our own interface addresses) and whether the relay
        answered (if not, the next attempt asks again)."""
        local = self._local_addrs()
        out: list[Address] = []
        seen = await self._reflect(conn.path.address)
        for addr in (seen, self._observed(), *local):
            if addr is not None and addr not in out:
                out.append(addr)
        return out[:8], seen is not None and seen in local, seen is not None

    def _usable(self, addrs: list[Address]) -> list[Address]:
        """The peer's candidates less our own addresses (a peer behind another NAT with
        the same private address would have us dial ourselves)."""
        own = set(self._local_addrs())
        return [a for a in addrs if a not in own]

    # ---------------------------------------------------------------- B: the initiator
    async def _initiate(self, conn: Connection) -> None:
        peer = conn.peer_id
        opened = self._opened.get(conn, self._clock.monotonic())
        rtt: float | None = None
        try:
            stream = await open_protocol(conn, PROTO_DCUTR)
        except TransportError as exc:
            self._failed(peer, 1, None, f"no dcutr stream: {exc}", True, "initiator")
            return
        try:
            ours, _public, reflected = await self._candidates(conn)
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if not reflected and attempt > 1:  # every REFLECT of the last try was lost
                    ours, _public, reflected = await self._candidates(conn)
                if conn.closed:
                    self._failed(peer, attempt, rtt, "relayed connection closed", True,
                                 "initiator")
                    return
                self.attempting.add(peer)
                self._events.emit(HolePunchStarted(peer, attempt, "initiator"))
                outcome, rtt = await self._initiator_attempt(conn, stream, ours, attempt)
                if isinstance(outcome, QuicConn):
                    self._succeeded(conn, outcome, attempt, rtt, opened, "initiator")
                    return
                self._failed(peer, attempt, rtt, outcome, attempt == MAX_ATTEMPTS,
                             "initiator")
        except (TransportError, TimeoutError, MalformedPunch) as exc:
            self._failed(peer, 0, rtt, f"exchange failed: {exc or type(exc).__name__}",
                         True, "initiator")
        finally:
            with contextlib.suppress(TransportError):
                await stream.close()

    async def _initiator_attempt(self, conn: Connection, stream: Stream, ours: list[Address],
                                 attempt: int) -> tuple[QuicConn | str, float]:
        quic = self._transport()
        assert quic is not None
        peer = conn.peer_id
        token = os.urandom(8)
        started = self._clock.monotonic()
        own_nat = self._nat()
        await stream.write_message(encode_message(
            {"t": "connect", "addrs": [format_address(a) for a in ours], "token": token,
             "attempt": attempt, "nat": _nat_json(own_nat),
             "birthday": self.birthday is not None and self.birthday.available()}))
        async with asyncio.timeout(self._timeout):
            reply = decode_message(await stream.read_message(MAX_MESSAGE), "connect")
        rtt = self._clock.monotonic() - started
        theirs = self._usable(reply["addrs"])
        if not theirs:
            await stream.write_message(encode_message({"t": "abort"}))
            return NO_ADDRESS, rtt
        if attempt == 1 and reply.get("public") is True:
            direct = await self._reverse(quic, peer, theirs)
            if direct is not None:
                await stream.write_message(encode_message({"t": "reversed"}))
                return direct, rtt
        part = (role(own_nat, _nat_of(reply), attempt) if reply.get("birthday") is True
                else None)
        if part is not None and self.birthday is not None and self.birthday.reserve(peer):
            try:
                await stream.write_message(encode_message({"t": "sync", "birthday": True}))
            except BaseException:
                self.birthday.release(peer)
                raise
            return await self._birthday_attempt(conn, stream, part, token, theirs, rtt,
                                                attempt), rtt
        waiting: asyncio.Future[QuicConn] = asyncio.get_running_loop().create_future()
        self._waiting[peer] = waiting
        puncher = Puncher(token, self._rng)
        puncher.expect(theirs)
        self._punchers[token] = (puncher, None)
        until = self._clock.monotonic() + self.attempt_timeout + rtt
        quic.expect_punch(sorted({a[0] for a in theirs}), until)
        try:
            await stream.write_message(encode_message({"t": "sync"}))
            await asyncio.sleep(sync_delay(rtt))
            punching = self._spawn(self._punch(puncher, theirs, until))
            result = asyncio.ensure_future(stream.read_message(MAX_MESSAGE))
            try:
                async with asyncio.timeout(self.attempt_timeout + 2 * rtt + 1.0):
                    either: set[asyncio.Future[Any]] = {waiting, result}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    if not waiting.done():
                        msg = decode_message(result.result(), "result")
                        if msg.get("ok") is True:
                            await asyncio.wait_for(waiting, 2 * rtt + 1.0)
                        else:
                            return str(msg.get("reason") or "no direct path"), rtt
                    if not result.done():
                        await result  # A's word, so both sides agree on the attempt
            except TimeoutError:
                if not waiting.done():
                    return "timed out", rtt
            finally:
                puncher.stop()
                punching.cancel()
                if not result.done():
                    result.cancel()
            return waiting.result(), rtt
        finally:
            self._punchers.pop(token, None)
            if self._waiting.get(peer) is waiting:
                del self._waiting[peer]

    # ---------------------------------------------------------------- birthday (either side)
    async def _birthday_attempt(self, conn: Connection, stream: Stream, part: str,
                                token: bytes, theirs: list[Address], rtt: float,
                                attempt: int) -> QuicConn | str:
        """One birthday attempt in ``part`` (``nat.punch.birthday``: "sockets" or
        "probe"); the reservation taken for it is released at the end. The direct
        connection, or why there is none."""
        assert self.birthday is not None
        peer = conn.peer_id
        started = self._clock.monotonic()
        probes: int | None = None
        try:
            quic = self._transport()
            if not theirs or quic is None:
                outcome: QuicConn | str = NO_ADDRESS
                if part == SOCKETS_ROLE:  # the cone side waits for our word
                    await stream.write_message(encode_message(
                        {"t": "result", "ok": False, "reason": NO_ADDRESS}))
            elif part == SOCKETS_ROLE:
                outcome = await self._birthday_sockets(stream, quic, peer, token,
                                                       theirs[0], rtt)
            else:
                outcome, probes = await self._birthday_probe(stream, quic, peer, token,
                                                             theirs[0][0], rtt)
        finally:
            self.birthday.release(peer)
        if isinstance(outcome, QuicConn):
            self._events.emit(BirthdaySucceeded(
                peer, attempt, part, format_address(outcome.remote_address),
                self._clock.monotonic() - started, probes))
        else:
            self._events.emit(BirthdayFailed(peer, attempt, part, outcome, probes), "info")
        return outcome

    @staticmethod
    def _birthday_wait(rtt: float) -> float:
        """How long the symmetric side's sockets wait for a probe once open: READY's
        way to the cone side, the probes' whole schedule and their way back, and a
        margin for loss and jitter (seconds)."""
        return BirthdayProber.schedule() + 2 * rtt + 1.0

    async def _birthday_sockets(self, stream: Stream, quic: QuicTransport, peer: PeerId,
                                token: bytes, cone: Address, rtt: float) -> QuicConn | str:
        assert self.birthday is not None
        try:
            sockets = await self.birthday.open_sockets(token, cone, self._birthday_wait(rtt))
        except StackError as exc:
            reason = f"birthday: cannot open sockets: {exc}"
            await stream.write_message(encode_message(
                {"t": "result", "ok": False, "reason": reason}))
            return reason
        try:
            await stream.write_message(encode_message({"t": "ready"}))
        except BaseException:
            sockets.cancel()
            raise
        direct, reason = await sockets.dial(quic, peer, self.attempt_timeout)
        ok = direct is not None and await self._adopt(direct)
        if direct is not None and not ok:
            reason = "birthday: the connection was not adopted"
        await stream.write_message(encode_message(
            {"t": "result", "ok": ok, "reason": "" if ok else reason}))
        if not ok:
            return reason
        assert direct is not None
        return direct

    async def _birthday_probe(self, stream: Stream, quic: QuicTransport, peer: PeerId,
                              token: bytes, ip: str,
                              rtt: float) -> tuple[QuicConn | str, int | None]:
        assert self.birthday is not None
        waiting: asyncio.Future[QuicConn] = asyncio.get_running_loop().create_future()
        self._waiting[peer] = waiting
        probing: asyncio.Task[int] | None = None
        try:
            async with asyncio.timeout(self._timeout):
                raw = await stream.read_message(MAX_MESSAGE)
            if not _is(raw, "ready"):
                msg = decode_message(raw, "result")
                return str(msg.get("reason") or "birthday: the peer gave up"), None
            # the peer dials from a port we have never seen: accept it as agreed
            wait = self._birthday_wait(rtt) + self.attempt_timeout
            quic.expect_punch([ip], self._clock.monotonic() + wait)
            probing = self._spawn(self.birthday.probe(token, ip))
            async with asyncio.timeout(wait + rtt + 1.0):  # the peer's RESULT
                msg = decode_message(await stream.read_message(MAX_MESSAGE), "result")
            sent = self.birthday.probes_sent
            if msg.get("ok") is not True:
                return str(msg.get("reason") or "birthday: no path"), sent
            try:
                return await asyncio.wait_for(waiting, 2 * rtt + 1.0), sent
            except TimeoutError:
                return "birthday: the peer's connection never arrived", sent
        except TimeoutError:
            return "birthday: timed out", None if probing is None else self.birthday.probes_sent
        except MalformedPunch as exc:
            return f"birthday: unexpected message: {exc}", None
        finally:
            if probing is not None:
                probing.cancel()
            if self._waiting.get(peer) is waiting:
                del self._waiting[peer]

    async def _punch(self, puncher: Puncher, targets: list[Address], until: float) -> None:
        puncher.start(self._clock.monotonic(), targets, until)
        while True:
            for data, addr in puncher.outgoing():
                self._send(data, addr)
            when = puncher.next_timer()
            if when is None:
                return
            await asyncio.sleep(max(0.0, when - self._clock.monotonic()))
            puncher.handle_timer(self._clock.monotonic())

    async def _reverse(self, quic: QuicTransport, peer: PeerId,
                       addrs: list[Address]) -> QuicConn | None:
        """Connection reversal: the peer says it is public, so dial it directly."""
        for addr in addrs:
            try:
                conn = await quic.dial_path(quic.port_socket(addr), peer,
                                            timeout=self.attempt_timeout)
            except TransportError:
                continue
            if await self._adopt(conn):
                return conn
        return None

    # ---------------------------------------------------------------- A: the dialer
    async def handle(self, conn: Connection, stream: Stream) -> None:
        try:
            await self._answer(conn, stream)
        finally:
            with contextlib.suppress(TransportError):
                await stream.close()  # our FIN: the initiator's next read ends

    async def _answer(self, conn: Connection, stream: Stream) -> None:
        peer = conn.peer_id
        opened = self._opened.get(conn, self._clock.monotonic())
        ours: tuple[list[Address], bool, bool] | None = None
        quic = self._transport()
        while True:
            raw = await stream.next_message(MAX_MESSAGE)  # B's next attempt, or FIN
            if raw is None or quic is None:
                return
            try:
                msg = decode_message(raw, "connect")
            except MalformedPunch:
                return
            attempt = int(msg.get("attempt") or 1)
            token = msg.get("token")
            if not isinstance(token, bytes) or len(token) != 8:
                return
            self.attempting.add(peer)
            self._events.emit(HolePunchStarted(peer, attempt, "dialer"))
            started = self._clock.monotonic()
            if ours is None or not ours[2]:  # first, or the relay did not answer last time
                ours = await self._candidates(conn)
            part = None
            if msg.get("birthday") is True and self.birthday is not None:
                part = role(self._nat(), _nat_of(msg), attempt)
                if part is not None and not self.birthday.reserve(peer):
                    part = None
            reversal: asyncio.Future[QuicConn] | None = None
            if ours[1]:  # we look public: the peer may dial us back (connection reversal)
                reversal = asyncio.get_running_loop().create_future()
                self._waiting[peer] = reversal
            nxt = b""
            try:  # the slot we offered is kept only for a birthday SYNC
                await stream.write_message(encode_message(
                    {"t": "connect", "addrs": [format_address(a) for a in ours[0]],
                     "public": ours[1], "nat": _nat_json(self._nat()),
                     "birthday": part is not None}))
                async with asyncio.timeout(self._timeout + self.attempt_timeout):
                    nxt = await stream.read_message(MAX_MESSAGE)
            finally:
                if part is not None and not _birthday_sync(nxt):
                    assert self.birthday is not None
                    self.birthday.release(peer)
            rtt = self._clock.monotonic() - started
            kind = _kind(nxt)
            if kind == "reversed" and reversal is not None:
                # its dial reached us; our side of the handshake may end a moment later
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reversal), self.attempt_timeout)
            if reversal is not None and self._waiting.get(peer) is reversal:
                del self._waiting[peer]
            if kind == "reversed":
                self._reversed(conn, opened, attempt, rtt)
                return
            if kind == "abort":  # it found none of our addresses usable: maybe next time
                self._failed(peer, attempt, rtt, NO_ADDRESS, attempt >= MAX_ATTEMPTS,
                             "dialer")
                continue
            if kind != "sync":
                self._failed(peer, attempt, rtt, f"initiator sent {kind}", True, "dialer")
                return
            if part is not None and _birthday_sync(nxt):
                outcome = await self._birthday_attempt(conn, stream, part, token,
                                                       self._usable(msg["addrs"]), rtt, attempt)
                if isinstance(outcome, QuicConn):
                    self._succeeded(conn, outcome, attempt, rtt, opened, "dialer")
                    return
                self._failed(peer, attempt, rtt, outcome, attempt >= MAX_ATTEMPTS, "dialer")
                continue
            direct, reason = await self._dial(quic, peer, token, self._usable(msg["addrs"]))
            ok = direct is not None and await self._adopt(direct)
            await stream.write_message(encode_message(
                {"t": "result", "ok": ok, "reason": "" if ok else reason}))
            if ok:
                assert direct is not None
                self._succeeded(conn, direct, attempt, rtt, opened, "dialer")
                return
            self._failed(peer, attempt, rtt, reason, attempt >= MAX_ATTEMPTS, "dialer")

    def _reversed(self, conn: Connection, opened: float, attempt: int, rtt: float) -> None:
        """B dialed us back directly: its connection is among ours (inbound DIRECT)."""
        peer = conn.peer_id
        direct = self.direct(peer)
        if direct is None:
            self._failed(peer, attempt, rtt, "reversal reported but not seen", True, "dialer")
            return
        self._succeeded(conn, direct, attempt, rtt, opened, "dialer")

    async def _dial(self, quic: QuicTransport, peer: PeerId, token: bytes,
                    targets: list[Address]) -> tuple[QuicConn | None, str]:
        """Dial every candidate (and where the peer's punches come from) at once; the
        first authenticated connection wins, the others are aborted."""
        if not targets:
            return None, NO_ADDRESS
        done: asyncio.Queue[QuicConn | None] = asyncio.Queue()
        tasks: list[asyncio.Task[Any]] = []

        async def one(addr: Address) -> None:
            try:
                conn = await quic.dial_path(quic.port_socket(addr, PathKind.PUNCHED),
                                            peer, timeout=self.attempt_timeout)
            except TransportError:
                await done.put(None)
                return
            await done.put(conn)

        def start(addr: Address) -> None:
            tasks.append(asyncio.ensure_future(one(addr)))

        puncher = Puncher(token, self._rng)
        puncher.expect(targets)
        self._punchers[token] = (puncher, start)
        winner: QuicConn | None = None
        try:
            for addr in targets:
                start(addr)
            finished = 0
            while finished < len(tasks):
                conn = await done.get()
                finished += 1
                if conn is not None:
                    winner = conn
                    break
        finally:
            self._punchers.pop(token, None)
            for task in tasks:
                task.cancel()
            while not done.empty():
                extra = done.get_nowait()
                if extra is not None and extra is not winner:
                    extra.abort("another path won")
        if winner is None:
            return None, f"no direct path ({len(tasks)} addresses tried)"
        return winner, ""

    # ---------------------------------------------------------------- outcomes
    def _succeeded(self, relayed: Connection, direct: Connection, attempt: int, rtt: float,
                   opened: float, role: str) -> None:
        peer = relayed.peer_id
        self._remember(direct)
        elapsed = self._clock.monotonic() - opened
        event = HolePunchSucceeded(peer, attempt, rtt, direct.path.kind,
                                   format_address(direct.remote_address), elapsed, role)
        _remember_bounded(self.results, peer, event)
        self.attempting.discard(peer)
        _remember_bounded(self.upgraded_at, peer, self._clock.monotonic())
        self._events.emit(event)

        async def close_later() -> None:
            await asyncio.sleep(self.grace)
            await relayed.close()

        self._spawn(close_later())

    def _failed(self, peer: PeerId, attempt: int, rtt: float | None, reason: str, final: bool,
                role: str) -> None:
        event = HolePunchFailed(peer, attempt, rtt, reason, final, role)
        if final:
            _remember_bounded(self.results, peer, event)
            self.attempting.discard(peer)
        self._events.emit(event, "warning" if final else "info")


def _nat_json(behaviour: Behaviour) -> list[str | None] | None:
    return None if behaviour is None else [behaviour[0], behaviour[1]]


def _nat_of(msg: dict[str, Any]) -> Behaviour:
    """The peer's claimed NAT behaviour from its CONNECT (null, or two strings/nulls):
    anything else counts as unknown (no birthday attempt)."""
    value = msg.get("nat")
    if (isinstance(value, list) and len(value) == 2
            and all(v is None or isinstance(v, str) for v in value)):
        return value[0], value[1]
    return None


def _is(raw: bytes, kind: str) -> bool:
    try:
        decode_message(raw, kind)
    except MalformedPunch:
        return False
    return True


def _birthday_sync(raw: bytes) -> bool:
    """Whether ``raw`` is B's SYNC for a birthday attempt."""
    try:
        return decode_message(raw, "sync").get("birthday") is True
    except MalformedPunch:
        return False


def _kind(raw: bytes) -> str:
    for kind in ("sync", "reversed", "abort"):
        with contextlib.suppress(MalformedPunch):
            decode_message(raw, kind)
            return kind
    return "garbage"


MAX_REMEMBERED = 1024  # peers whose last hole-punch outcome is kept (status shows them)


def _remember_bounded(table: dict[Any, Any], key: Any, value: Any) -> None:
    """``table[key] = value`` as the newest entry, the oldest dropped past
    ``MAX_REMEMBERED``: one entry per peer ever met would grow without end."""
    table.pop(key, None)
    table[key] = value
    while len(table) > MAX_REMEMBERED:
        del table[next(iter(table))]
