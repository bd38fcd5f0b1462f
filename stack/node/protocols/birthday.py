"""The birthday technique's I/O (issue 9 section 3), inside a DCUtR attempt.

``stack.node.protocols.dcutr`` runs it instead of the plain punch when the two sides'
NAT reports (exchanged in its CONNECT messages) make a port-restricted cone <->
symmetric pair (``nat.punch.birthday.role``); the core and the reasoning behind the
roles are in ``nat.punch.birthday``. In short:

* the symmetric side (``sockets``) binds ``SOCKETS`` extra UDP sockets, PUNCHes the cone
  side's public address from each, tells it "ready" over the relayed stream, and when a
  probe reaches one socket dials the QUIC connection (client, path PUNCHED) over that
  socket, which it keeps for the connection's life (closed with it); the rest close at
  once, as do all of them when no probe came;
* the cone side (``probe``) starts on "ready": it accepts the peer's Initials from the
  peer's public IP as an agreed punch (``QuicTransport.expect_punch``) and sends
  rate-limited probes from the node's own port to random ports of that IP until the
  peer reports the result.

At most one birthday attempt runs per node at a time (``reserve``: 256 sockets and 1024
probes are not for many peers at once); a second pair meanwhile gets the plain punch.
``enabled`` False (``NodeConfig.birthday``, ``p2pstack node --no-birthday``) never
offers it. The connection on a birthday socket is not on the node's shared port, so
after our own move (``stack.node.migration``) it is left to live or die with its
socket, like a relayed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

from stack.base.clock import Clock
from stack.base.identity import PeerId
from stack.base.interfaces import Path, PathKind
from stack.base.net import Address, Datagram, DatagramEndpoint, Receiver
from stack.base.port import PUNCH_BYTE, Kind, classify
from nat.punch.birthday import SOCKETS, BirthdayProber, BirthdaySockets
from nat.punch.core import MalformedPunch, decode_datagram
from stack.transport.errors import TransportError
from stack.transport.quic import QuicConn, QuicTransport

log = structlog.get_logger("p2pstack.holepunch")

__all__ = ["Birthday", "Bind"]

Bind = Callable[[Receiver], Awaitable[DatagramEndpoint]]


class _SocketPath:
    """A ``PathSocket`` over one birthday socket to the address its probe came from."""

    __slots__ = ("path", "_endpoint", "_address")

    def __init__(self, endpoint: DatagramEndpoint, address: Address) -> None:
        self.path = Path(PathKind.PUNCHED, address)
        self._endpoint = endpoint
        self._address = address

    def send(self, data: bytes) -> None:
        self._endpoint.send(data, self._address)


class Birthday:
    """The node's birthday attempts (see the module docstring). ``bind`` opens one
    ephemeral UDP socket on our listen IP; None (no such network) never offers it."""

    def __init__(self, *, bind: Bind | None, send: Callable[[bytes, Address], None],
                 clock: Clock, rng: random.Random, enabled: bool = True,
                 sockets: int = SOCKETS) -> None:
        self._bind = bind
        self._send = send
        self._clock = clock
        self._rng = rng
        self.enabled = enabled and bind is not None
        self.sockets = sockets
        self._owner: PeerId | None = None
        self.probes_sent = 0   # by the latest (or running) probe
        self.stats = {"attempts": 0, "hits": 0, "probes": 0, "socket_sends": 0,
                      "socket_rounds_failed": 0}

    # ------------------------------------------------------------- one at a time
    def available(self) -> bool:
        return self.enabled and self._owner is None

    def reserve(self, peer: PeerId) -> bool:
        """Take the node's one birthday slot for ``peer`` (True if it is ours now)."""
        if not self.enabled or self._owner not in (None, peer):
            return False
        self._owner = peer
        return True

    def release(self, peer: PeerId) -> None:
        if self._owner == peer:
            self._owner = None

    # ------------------------------------------------------------- symmetric side
    async def open_sockets(self, token: bytes, target: Address, wait: float) -> _Sockets:
        """Bind the sockets and send their first round toward ``target``; they keep
        sending for ``wait`` seconds after they are open (``deadline``)."""
        assert self._bind is not None
        self.stats["attempts"] += 1
        sockets = _Sockets(self, BirthdaySockets(token, self.sockets, self._rng))
        try:
            for index in range(self.sockets):
                sockets.endpoints.append(await self._bind(sockets.receiver(index)))
        except Exception:
            sockets.close_all()
            raise
        now = self._clock.monotonic()
        sockets.deadline = now + wait
        sockets.core.start(now, target, sockets.deadline)
        sockets.flush()
        sockets.task = asyncio.ensure_future(sockets.rounds())
        sockets.task.add_done_callback(self._rounds_ended)
        return sockets

    def _rounds_ended(self, task: asyncio.Future[None]) -> None:
        """The sockets' send rounds are cancelled when the attempt ends; one that failed
        instead is counted and logged, not left for the garbage collector to report."""
        if not task.cancelled() and task.exception() is not None:
            self.stats["socket_rounds_failed"] += 1
            log.warning("holepunch.birthday.rounds_failed", error=repr(task.exception()))

    # ------------------------------------------------------------- cone side
    async def probe(self, token: bytes, ip: str) -> int:
        """Probe random ports of ``ip`` from our port until done or cancelled; the
        number of probes sent."""
        self.stats["attempts"] += 1
        prober = BirthdayProber(token, ip, self._rng)
        prober.start(self._clock.monotonic())
        try:
            while True:
                for data, addr in prober.outgoing():
                    self._send(data, addr)
                self.probes_sent = prober.sent
                when = prober.next_timer()
                if when is None:
                    return prober.sent
                await asyncio.sleep(max(0.0, when - self._clock.monotonic()))
                prober.handle_timer(self._clock.monotonic())
        finally:
            self.stats["probes"] += prober.sent


class _Sockets:
    """One attempt's sockets: rounds, the winner, then the QUIC dial over it."""

    def __init__(self, owner: Birthday, core: BirthdaySockets) -> None:
        self._owner = owner
        self.core = core
        self.endpoints: list[DatagramEndpoint] = []
        self.hit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self._quic: Callable[[list[bytes]], None] | None = None
        self._winner: int | None = None

    def receiver(self, index: int) -> Receiver:
        def receive(batch: list[Datagram]) -> None:
            if index == self._winner and self._quic is not None:
                quic = [d for d, a in batch if classify(d) is Kind.QUIC
                        and self.core.hit is not None and a == self.core.hit.address]
                if quic:
                    self._quic(quic)
                return
            for data, addr in batch:
                if not data or data[0] != PUNCH_BYTE:
                    self.core.ignored += 1
                    continue
                try:
                    self.core.receive(index, decode_datagram(data), addr)
                except MalformedPunch:
                    self.core.ignored += 1
            if self.core.next_event() is not None and not self.hit.done():
                assert self.core.hit is not None
                self._owner.stats["hits"] += 1
                self.hit.set_result(self.core.hit.index)
        return receive

    def flush(self) -> None:
        for index, data, addr in self.core.outgoing():
            self.endpoints[index].send(data, addr)
            self._owner.stats["socket_sends"] += 1

    async def rounds(self) -> None:
        clock = self._owner._clock
        while (when := self.core.next_timer()) is not None:
            await asyncio.sleep(max(0.0, when - clock.monotonic()))
            self.core.handle_timer(clock.monotonic())
            self.flush()

    async def dial(self, quic: QuicTransport, peer: PeerId,
                   timeout: float) -> tuple[QuicConn | None, str]:
        """Wait for a probe to hit one socket (until ``deadline``), then dial the QUIC
        connection over it. The winner's socket closes with the connection; every
        other socket closes now."""
        clock = self._owner._clock
        try:
            try:
                index = await asyncio.wait_for(asyncio.shield(self.hit),
                                               max(0.0, self.deadline - clock.monotonic()))
            except TimeoutError:
                return None, (f"birthday: no probe reached any of {len(self.endpoints)} "
                              "sockets")
            hit = self.core.hit
            assert hit is not None
            endpoint = self.endpoints[index]
            sock = _SocketPath(endpoint, hit.address)
            self._quic = quic.path_receiver(sock)
            self._winner = index
            self._close_losers()
            try:
                conn = await quic.dial_path(sock, peer, timeout=timeout)
            except TransportError as exc:
                endpoint.close()
                return None, f"birthday: QUIC over the winning socket failed: {exc}"
            except BaseException:  # cancelled: the socket goes with the attempt
                endpoint.close()
                raise
            conn.add_close_callback(lambda _c: endpoint.close())
            return conn, ""
        finally:
            self.core.stop()
            if self.task is not None:
                self.task.cancel()
            if self._winner is None:
                self.close_all()

    def cancel(self) -> None:
        """Give the attempt up before dialing (the stream to the peer failed)."""
        self.core.stop()
        if self.task is not None:
            self.task.cancel()
        self.close_all()

    def _close_losers(self) -> None:
        for index, endpoint in enumerate(self.endpoints):
            if index != self._winner:
                endpoint.close()

    def close_all(self) -> None:
        for endpoint in self.endpoints:
            with contextlib.suppress(OSError):
                endpoint.close()
