"""One TURN allocation (RFC 8656) through aioice's TURN client, carrying QUIC datagrams.

What the node uses it for: a node whose NAT nobody can punch, and whose users run a TURN
server, allocates there and announces the relayed transport address. A dialer needs no
TURN: the relayed address is a plain UDP address to it, and its QUIC Initials go there
from its own port; the server wraps them in ChannelData or Data indications to us, and
our replies go back the same way. End-to-end QUIC: the server sees ciphertext only.

aioice's ``TurnClientUdpProtocol`` does the wire work (long-term credentials with the
401/438 nonce dance, transactions, ChannelBind, ChannelData framing); this module adds
what a long-running node needs and aioice leaves to its ICE agent:

- Lifetimes (RFC 8656): an allocation lives ``LIFETIME`` seconds (we ask for
  ``ALLOCATION_LIFETIME``; the server may grant less, section 7.2), a permission 300 s
  (section 9), a channel binding 600 s (section 12). One maintenance pass every
  ``REFRESH_FRACTION`` of the shortest of them (240 s by default) refreshes the
  allocation, re-creates every wanted permission and re-binds every channel (which
  refreshes its permission too). aioice's own refresh task and its lazy, on-send channel
  refresh are switched off: they refresh the allocation at 5/6 of its lifetime but let an
  idle peer's permission lapse after 300 s. A failed allocation refresh is
  ``TurnAllocationLost``.
- Permissions: TURN relays only from peer IPs we permitted (CreatePermission). ``permit``
  keeps at most ``max_permissions`` IPs (oldest dropped). Which IPs to permit is the
  caller's decision (``stack.node.turn``). aioice accepts Data indications only from
  peers it has a channel to; we accept them from permitted IPs as well, since a dialer's
  first Initial arrives before we have ever sent to it.
- Paths: every remote address the server relays from gets a ``TurnPathSocket`` (path
  kind TURN) and a receiver from ``accept_path`` (``QuicTransport.accept_path``), so a
  datagram reaches only the connections on its own path. At most ``MAX_PATHS``, oldest
  evicted. A reply to a peer without a channel yet binds one first (aioice queues the
  sends meanwhile); later replies go out at once as ChannelData.
- Failures are named (``nat.turn.errors``): wrong credentials, no answer, refused port,
  lost allocation. Anything the server relays that is not a QUIC packet is counted in
  ``dropped``, as is a send that failed.

Clock: the maintenance loop and timeouts use the running loop's clock (virtual under the
simulator, though the simulator has no TURN server).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aioice import stun
from aioice.turn import UDP_TRANSPORT, TurnClientUdpProtocol, is_channel_data

from nat.turn.errors import TurnAllocationLost, TurnAuthFailed, TurnError, TurnUnreachable
from nat.turn.url import TurnServer
from stack.base.interfaces import Path, PathKind, PathSocket
from stack.base.net import Address, format_address, resolve_ipv4

__all__ = ["TurnAllocation", "TurnPathSocket", "PathReceiverLike", "ALLOCATION_LIFETIME",
           "PERMISSION_LIFETIME", "CHANNEL_LIFETIME", "REFRESH_FRACTION", "MAX_PATHS"]

ALLOCATION_LIFETIME = 600     # seconds we ask for (RFC 8656 section 7.2 default)
PERMISSION_LIFETIME = 300.0   # RFC 8656 section 9: fixed, not negotiable
CHANNEL_LIFETIME = 600.0      # RFC 8656 section 12
REFRESH_FRACTION = 0.8        # refresh at 80% of the shortest lifetime (240 s)
MAX_PATHS = 256               # remote addresses with a path at once
_NEVER = 10 ** 9              # aioice's on-send channel refresh: off (we refresh them)


class PathReceiverLike(Protocol):
    """What ``accept_path`` returns (``stack.transport.quic.PathReceiver``)."""

    def __call__(self, batch: list[bytes]) -> None: ...
    def close(self, reason: str) -> None: ...


AcceptPath = Callable[[PathSocket, Callable[[Any], None]], PathReceiverLike | None]


class TurnPathSocket:
    """The path to one remote peer through our allocation: ``send`` relays a datagram to
    ``peer`` (ChannelData once a channel is bound). ``path.address`` is the TURN server,
    where our packets go (as a relayed path's is its relay)."""

    __slots__ = ("path", "peer", "_allocation")

    def __init__(self, allocation: TurnAllocation, peer: Address) -> None:
        self.path = Path(PathKind.TURN, allocation.server_address)
        self.peer = peer
        self._allocation = allocation

    def send(self, data: bytes) -> None:
        self._allocation.send(data, self.peer)


class _Client(TurnClientUdpProtocol):
    """aioice's UDP TURN client, with our receive path in front of it (see the module
    docstring) and the socket's errors reported to the allocation."""

    def __init__(self, owner: TurnAllocation, server: TurnServer, address: Address) -> None:
        super().__init__(address, username=server.username, password=server.password,
                         lifetime=ALLOCATION_LIFETIME, channel_refresh_time=_NEVER)
        self._owner = owner

    def datagram_received(self, data: bytes | str, addr: tuple[str, int]) -> None:
        assert isinstance(data, bytes)
        owner = self._owner
        if len(data) >= 4 and is_channel_data(data):
            channel, length = struct.unpack("!HH", data[:4])
            peer = self.channel_to_peer.get(channel)
            if peer is None or len(data) < 4 + length:
                owner.dropped += 1
            else:
                owner._deliver(data[4:4 + length], peer)
            return
        try:
            message = stun.parse_message(data)
        except ValueError:
            owner.dropped += 1
            return
        if message.message_method == stun.Method.DATA:
            peer = message.attributes.get("XOR-PEER-ADDRESS")
            payload = message.attributes.get("DATA")
            if (message.message_class == stun.Class.INDICATION and peer is not None
                    and payload is not None and peer[0] in owner.permitted):
                owner._deliver(payload, peer)
            else:
                owner.dropped += 1
            return
        super().datagram_received(data, addr)  # responses to our transactions

    def error_received(self, exc: Exception) -> None:
        self._owner._socket_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._socket_error(exc or ConnectionError("TURN socket closed"))


class TurnAllocation:
    """An allocation on ``server``: ``allocate()``, then ``run()`` keeps it (returns
    never; raises ``TurnAllocationLost``), ``permit(ip)`` lets a peer IP in,
    ``close()`` deletes it. ``accept_path`` builds the receiver for each new remote
    address (see the module docstring). ``timeout`` bounds each request (aioice's own
    retransmissions would take 31.5 s); ``refresh`` overrides the maintenance interval
    (tests); ``max_permissions`` and ``max_paths`` bound the permitted IPs and the remote
    addresses with a path."""

    def __init__(self, server: TurnServer, *, accept_path: AcceptPath, timeout: float = 10.0,
                 refresh: float | None = None, max_permissions: int = 64,
                 max_paths: int = MAX_PATHS) -> None:
        self.server = server
        self.server_address: Address = server.address   # numeric once allocated
        self.relayed_address: Address | None = None
        self.mapped_address: Address | None = None       # our address as the server saw it
        self.lifetime = 0                                # seconds, as granted
        self.permitted: OrderedDict[str, None] = OrderedDict()
        self.refreshes = 0
        self.dropped = 0
        self.send_failures = 0
        self.permission_failures = 0
        self._accept_path = accept_path
        self._timeout = timeout
        self._refresh = refresh
        self._max_permissions = max_permissions
        self._max_paths = max_paths
        self._proto: _Client | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._error: asyncio.Event = asyncio.Event()
        self._error_text = ""
        self._paths: OrderedDict[Address, tuple[TurnPathSocket, PathReceiverLike]] = \
            OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __str__(self) -> str:
        return str(self.server)

    # ---------------------------------------------------------------- lifecycle
    async def allocate(self) -> Address:
        """Allocate (UDP, long-term credentials) and return the relayed address.
        ``TurnAuthFailed``, ``TurnUnreachable``, ``TurnError``; ``UsageError`` for a
        server name that does not resolve."""
        self.server_address = await resolve_ipv4(self.server.address)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Client(self, self.server, self.server_address),
            remote_addr=self.server_address)
        self._transport, self._proto = transport, proto
        try:
            request = stun.Message(message_method=stun.Method.ALLOCATE,
                                   message_class=stun.Class.REQUEST)
            request.attributes["LIFETIME"] = ALLOCATION_LIFETIME
            request.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
            response = await self._request(request, "Allocate")
            attrs = response.attributes
            for name in ("LIFETIME", "XOR-RELAYED-ADDRESS", "XOR-MAPPED-ADDRESS"):
                if name not in attrs:
                    raise TurnError(f"TURN server {self.server} answered Allocate "
                                    f"without {name}")
        except BaseException:
            self._closed = True
            transport.close()
            raise
        self.lifetime = int(attrs["LIFETIME"])
        host, port = attrs["XOR-RELAYED-ADDRESS"]
        self.relayed_address = (host, port)
        host, port = attrs["XOR-MAPPED-ADDRESS"]
        self.mapped_address = (host, port)
        # asked for before the allocation existed: in place before anyone hears of it
        await asyncio.gather(*(self._create_permission(ip) for ip in list(self.permitted)))
        assert self.relayed_address is not None
        return self.relayed_address

    @property
    def refresh_interval(self) -> float:
        """Seconds between maintenance passes (see the module docstring)."""
        if self._refresh is not None:
            return self._refresh
        return REFRESH_FRACTION * min(float(self.lifetime or ALLOCATION_LIFETIME),
                                      PERMISSION_LIFETIME, CHANNEL_LIFETIME)

    async def run(self) -> None:
        """Keep the allocation, its permissions and channels alive until cancelled;
        ``TurnAllocationLost`` when the allocation could not be refreshed or the socket
        failed."""
        if self._proto is None:
            raise TurnError("TURN allocation not made yet")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._error.wait(), self.refresh_interval)
            try:
                if self._error.is_set():
                    raise TurnUnreachable(self._error_text)
                await self._maintain()
            except TurnError as exc:
                self._shut()
                raise TurnAllocationLost(f"TURN allocation {self._relayed_text()} on "
                                         f"{self.server} lost: {exc}", exc.code) from None

    async def _maintain(self) -> None:
        request = stun.Message(message_method=stun.Method.REFRESH,
                               message_class=stun.Class.REQUEST)
        request.attributes["LIFETIME"] = ALLOCATION_LIFETIME
        response = await self._request(request, "Refresh")
        self.lifetime = int(response.attributes.get("LIFETIME", self.lifetime))
        self.refreshes += 1
        proto = self._proto
        assert proto is not None
        work: list[Awaitable[None]] = [self._create_permission(ip) for ip in self.permitted]
        work += [self._rebind(channel, peer) for channel, peer in
                 list(proto.channel_to_peer.items())]
        await asyncio.gather(*work)

    async def close(self) -> None:
        """Delete the allocation (Refresh with LIFETIME 0, best effort, one second) and
        close its paths and socket."""
        if self._closed:
            return
        if self._proto is not None and not self._error.is_set():
            request = stun.Message(message_method=stun.Method.REFRESH,
                                   message_class=stun.Class.REQUEST)
            request.attributes["LIFETIME"] = 0
            with contextlib.suppress(TurnError):
                await self._request(request, "Refresh", timeout=min(1.0, self._timeout))
        self._shut()

    def _shut(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for _, receiver in list(self._paths.values()):
            receiver.close("TURN allocation closed")
        self._paths.clear()
        if self._transport is not None:
            self._transport.close()

    # --------------------------------------------------------------- permissions
    async def permit(self, ip: str) -> None:
        """Let ``ip`` send to us through the allocation (RFC 8656 section 9) and keep the
        permission refreshed. Before ``allocate`` it is remembered and made then.
        ``TurnError`` when the server refuses it (it stays wanted and is retried at the
        next refresh)."""
        self.permitted[ip] = None
        self.permitted.move_to_end(ip)
        while len(self.permitted) > self._max_permissions:
            self.permitted.popitem(last=False)  # it lapses at the server within 300 s
        if self._proto is not None and not self._closed:
            await self._create_permission(ip, quiet=False)

    async def _create_permission(self, ip: str, quiet: bool = True) -> None:
        request = stun.Message(message_method=stun.Method.CREATE_PERMISSION,
                               message_class=stun.Class.REQUEST)
        request.attributes["XOR-PEER-ADDRESS"] = (ip, 0)  # the port is ignored
        try:
            await self._request(request, f"CreatePermission {ip}")
        except TurnError:
            self.permission_failures += 1
            if not quiet:
                raise

    async def _rebind(self, channel: int, peer: Address) -> None:
        request = stun.Message(message_method=stun.Method.CHANNEL_BIND,
                               message_class=stun.Class.REQUEST)
        request.attributes["CHANNEL-NUMBER"] = channel
        request.attributes["XOR-PEER-ADDRESS"] = peer
        try:
            await self._request(request, f"ChannelBind {format_address(peer)}")
        except TurnError:
            self.permission_failures += 1

    # -------------------------------------------------------------- datagrams
    def send(self, data: bytes, peer: Address) -> None:
        """Relay ``data`` to ``peer``; never blocks or raises (a failure is counted)."""
        proto = self._proto
        if proto is None or self._closed or self._error.is_set():
            self.send_failures += 1
            return
        channel = proto.peer_to_channel.get(peer)
        if channel is not None and peer not in proto.peer_connect_waiters:
            proto._send(struct.pack("!HH", channel, len(data)) + data)
            return
        self._spawn(self._bind_and_send(proto, data, peer))

    async def _bind_and_send(self, proto: _Client, data: bytes, peer: Address) -> None:
        try:
            await asyncio.wait_for(proto.send_data(data, peer), self._timeout)
        except (stun.TransactionError, ConnectionError, TimeoutError, OSError):
            self.send_failures += 1

    def _deliver(self, data: bytes, peer: Address) -> None:
        if self._closed or not data or not data[0] & 0x40:  # QUIC's fixed bit (RFC 9000)
            self.dropped += 1
            return
        entry = self._paths.get(peer)
        if entry is None:
            sock = TurnPathSocket(self, peer)
            receiver = self._accept_path(sock, functools.partial(self._on_path_closed, sock))
            if receiver is None:
                self.dropped += 1
                return
            if len(self._paths) >= self._max_paths:
                _, (_, oldest) = self._paths.popitem(last=False)
                oldest.close("TURN path evicted")
            entry = self._paths[peer] = (sock, receiver)
        entry[1]([data])

    def _on_path_closed(self, sock: TurnPathSocket, conn: object) -> None:
        entry = self._paths.get(sock.peer)
        if entry is not None and entry[0] is sock:
            del self._paths[sock.peer]

    @property
    def paths(self) -> int:
        """Remote addresses with a path now."""
        return len(self._paths)

    # ----------------------------------------------------------------- plumbing
    def _socket_error(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            text = f"TURN server {self.server} refused (port unreachable)"
        else:
            text = f"TURN socket to {self.server} failed: {exc}"
        if not self._error.is_set() and not self._closed:
            self._error_text = text
            self._error.set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _relayed_text(self) -> str:
        return "-" if self.relayed_address is None else format_address(self.relayed_address)

    async def _request(self, request: stun.Message, what: str,
                       timeout: float | None = None) -> stun.Message:
        """Run one transaction (with aioice's credential retry), bounded by ``timeout``
        and cut short by a socket error; aioice's exceptions become ours."""
        proto = self._proto
        assert proto is not None
        wait = self._timeout if timeout is None else timeout
        if self._error.is_set():
            raise TurnUnreachable(self._error_text)
        task = asyncio.ensure_future(proto.request_with_retry(request))
        failed = asyncio.ensure_future(self._error.wait())
        try:
            done, _ = await asyncio.wait({task, failed}, timeout=wait,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task not in done:
            if failed in done:
                raise TurnUnreachable(self._error_text)
            raise TurnUnreachable(f"no answer from TURN server {self.server} to {what} "
                                  f"within {wait:g}s")
        try:
            response, _ = task.result()
        except stun.TransactionFailed as exc:
            code, reason = exc.response.attributes.get("ERROR-CODE", (0, "no error code"))
            if code == 401:
                raise TurnAuthFailed(f"TURN server {self.server} rejected the credentials "
                                     f"of user {self.server.username!r} (401 {reason})",
                                     code) from None
            raise TurnError(f"TURN server {self.server} refused {what}: {code} {reason}",
                            code) from None
        except stun.TransactionTimeout:
            raise TurnUnreachable(f"no answer from TURN server {self.server} to "
                                  f"{what}") from None
        except ConnectionError as exc:
            raise TurnError(f"TURN server {self.server}: {exc}") from None
        assert isinstance(response, stun.Message)
        return response
