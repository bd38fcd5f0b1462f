"""Seed 000's reverse connection (AutoNAT-style dial-back), run by the identify listener,
and ``AutoNat``: the dial-back from a third node's IP that decides DHT server mode.

The listener dials the dialer back at the *observed* IP with the advertised port of the
same transport (never a host the peer names: that would make us a reflector), from a
transport ``transport_for(name)`` provides (for QUIC a fresh UDP port: an answer from
the port the peer just sent to passes any cone NAT's filter and proves nothing), then
proves the connection with one ping. Success: ``record_dialback(ok=True)`` (peer
reachable); failure: logged as the seed does, non-fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import msgpack

from stack.base.addresses import PeerAddress, parse_address
from stack.base.clock import Clock
from stack.base.errors import StackError, UsageError
from stack.base.identity import PeerId
from stack.base.interfaces import Connection, Stream, Transport
from stack.base.net import Address, format_address
from stack.base.ratelimit import TokenBuckets
from stack.node.events import DialbackResult, DialbackRole, EventBus, ReachabilityChecked
from stack.node.protocols.ping import ping_once
from stack.node.router import open_protocol
from stack.store.trust import TrustStore
from stack.transport.errors import TransportError

__all__ = ["DialBack", "AutoNat", "Helper", "PROTO_AUTONAT_REQUEST", "PROTO_AUTONAT_DIAL",
           "PROTO_AUTONAT_NONCE"]


class DialBack:
    def __init__(self, *, transport_for: Callable[[str], AbstractAsyncContextManager[Transport]],
                 trust: TrustStore, events: EventBus, timeout: float) -> None:
        self._transport_for = transport_for
        self._trust = trust
        self._events = events
        self.timeout = timeout

    async def dial_back(self, conn: Connection, addrs: tuple[str, ...]) -> DialbackResult:
        observed_ip = conn.remote_address[0]
        port = conn.remote_address[1] if conn.transport == "quic" else None
        for text in addrs if port is None else ():
            with contextlib.suppress(UsageError):
                parsed = parse_address(text)
                if parsed.transport == conn.transport and parsed.port and parsed.relay is None:
                    port = parsed.port
                    break
        if port is None:
            result = DialbackResult(conn.peer_id, False, None,
                                    f"no {conn.transport} listen address advertised",
                                    DialbackRole.LISTENER)
        else:
            target = PeerAddress(observed_ip, port, conn.transport, conn.peer_id)
            address = format_address(target.address)
            try:
                async with self._transport_for(conn.transport) as transport:
                    async with asyncio.timeout(self.timeout):
                        back = await transport.dial(target.address, conn.peer_id)
                    try:
                        async with asyncio.timeout(self.timeout):
                            await ping_once(back)
                    finally:
                        back.abort("dial-back done")
                result = DialbackResult(conn.peer_id, True, address, None,
                                        DialbackRole.LISTENER)
            except (TransportError, TimeoutError, OSError) as exc:
                error = str(exc) or type(exc).__name__
                result = DialbackResult(conn.peer_id, False, address, error,
                                        DialbackRole.LISTENER)
        with contextlib.suppress(StackError):
            # record_dialback logs the seed's "Mutual trust established" / "Reverse
            # connection failed ... Continuing anyway" lines.
            await self._trust.record_dialback_async(conn.peer_id, result.ok is True,
                                                    result.address or observed_ip,
                                                    error=result.error)
        self._events.emit(result, "info" if result.ok else "warning")
        return result


# ------------------------------------------------------- third-party dial-back (v2)

PROTO_AUTONAT_REQUEST = b"/p2pstack/autonat/request/1"  # client -> server
PROTO_AUTONAT_DIAL = b"/p2pstack/autonat/dial/1"        # server -> helper
PROTO_AUTONAT_NONCE = b"/p2pstack/autonat/nonce/1"      # helper -> client (dialed back)
MAX_AUTONAT = 1024      # bytes per message
NONCE_BYTES = 16
HELPERS_TO_TRY = 3      # peers a server asks before it gives up (unreachable ones skipped)
REQUEST_RATE, REQUEST_BURST = 0.1, 3.0   # requests a client IP may make per second
DIAL_RATE, DIAL_BURST = 0.2, 4.0         # dials a helper does per requester IP / target IP
REFUSALS = ("rate-limited", "bad request")  # a helper's "no" that says nothing of the client


@dataclass(frozen=True)
class Helper:
    """A peer that may dial for us: its id and the (proven) address we reach it at."""
    peer_id: PeerId
    address: Address


class AutoNat:
    """Reachability confirmed from a *third* IP (AutoNAT v2 semantics, issue 9 section 1).

    Roles, one object, three protocols (``protocols``):

    * client (``probe(conn)``): sends a fresh random nonce to the server ``conn`` leads to
      and waits for its answer. Reachable only if the nonce came back over an inbound
      connection from an IP other than the server's: our own check, not the server's word.
    * server (``/p2pstack/autonat/request/1``): picks up to ``HELPERS_TO_TRY`` peers
      (``helpers()``; not at the client's IP nor ours) and asks one to dial the client's
      *observed* address (never one the client names: no reflection). Answers
      ``{ok, helper, error}``; ``error`` "no third peer" when it knows none.
    * helper (``/p2pstack/autonat/dial/1``): dials the address from a fresh UDP port
      (``transport_for``), expecting the client's peer id, writes the nonce on
      ``/p2pstack/autonat/nonce/1`` and reports the outcome.

    Refusals are named (``rate-limited``, ``quic only``, ``bad request``) and rate limits
    are per IP (``stack.base.ratelimit``): a server answers each client IP
    ``REQUEST_RATE``/s, a helper dials ``DIAL_RATE``/s per requester IP and per target IP,
    so a peer cannot turn helpers into a QUIC-Initial cannon.
    """

    def __init__(self, *, transport_for: Callable[[str], AbstractAsyncContextManager[Transport]],
                 connect: Callable[[Helper], Awaitable[Connection]],
                 helpers: Callable[[Connection], list[Helper]], own_ips: Callable[[], list[str]],
                 clock: Clock, events: EventBus, timeout: float,
                 connect_timeout: float) -> None:
        self._transport_for = transport_for
        self._connect = connect
        self._helpers = helpers
        self._own_ips = own_ips
        self._clock = clock
        self._events = events
        self.timeout = timeout  # one dial-back; and the nonce exchange after it
        self.connect_timeout = connect_timeout  # reaching a helper
        self._pending: dict[bytes, asyncio.Future[Address]] = {}
        self._requests = TokenBuckets(REQUEST_RATE, REQUEST_BURST)
        self._dials_by = TokenBuckets(DIAL_RATE, DIAL_BURST)
        self._dials_to = TokenBuckets(DIAL_RATE, DIAL_BURST)
        self.stats: Counter[str] = Counter()
        self.protocols = (_Handler(PROTO_AUTONAT_REQUEST, self._serve_request),
                          _Handler(PROTO_AUTONAT_DIAL, self._serve_dial),
                          _Handler(PROTO_AUTONAT_NONCE, self._serve_nonce))
        #: what a node that does no dial-backs serves: it can still be dialed back
        self.client_protocols = self.protocols[2:]

    # ---------------------------------------------------------------- client side

    async def probe(self, conn: Connection) -> ReachabilityChecked:
        """Ask ``conn``'s peer for a third-party dial-back; the verdict is also emitted."""
        nonce = os.urandom(NONCE_BYTES)
        arrived: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
        self._pending[nonce] = arrived
        answer: dict[str, Any] = {}
        try:
            stream = await open_protocol(conn, PROTO_AUTONAT_REQUEST)
            await stream.write_message(msgpack.packb({"nonce": nonce}))
            async with asyncio.timeout(HELPERS_TO_TRY * (self.connect_timeout
                                                         + 3 * self.timeout) + self.timeout):
                answer = _message(await stream.read_message(MAX_AUTONAT))
            await stream.close()
        except (TransportError, TimeoutError) as exc:
            answer = {"error": str(exc) or type(exc).__name__}
        finally:
            del self._pending[nonce]
        server_ip = conn.remote_address[0]
        source = arrived.result() if arrived.done() else None
        helper = _peer_id(answer.get("helper"))
        error = answer.get("error") if isinstance(answer.get("error"), str) else None
        if source is not None and source[0] == server_ip:
            source, error = None, "the dial-back came from the server's own IP"
        elif source is None and error is None:
            error = "no dial-back arrived"
        result = ReachabilityChecked(conn.peer_id, source is not None, helper,
                                     None if source is None else format_address(source),
                                     None if source is not None else error)
        self._events.emit(result, "info" if result.ok else "warning")
        return result

    async def _serve_nonce(self, conn: Connection, stream: Stream) -> None:
        async with asyncio.timeout(self.timeout):
            nonce = await stream.read_message(NONCE_BYTES)
        waiter = self._pending.get(nonce)
        ok = waiter is not None and not waiter.done() and not conn.is_client
        if ok and waiter is not None:
            waiter.set_result(conn.remote_address)
        self.stats["nonce_ok" if ok else "nonce_unknown"] += 1
        await stream.write_message(b"\x01" if ok else b"\x00")
        await stream.close()

    # ---------------------------------------------------------------- server side

    async def _serve_request(self, conn: Connection, stream: Stream) -> None:
        async with asyncio.timeout(self.timeout):
            request = _message(await stream.read_message(MAX_AUTONAT))
        nonce = request.get("nonce")
        answer: dict[str, Any]
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            answer = {"ok": False, "error": "bad request"}
        elif conn.transport != "quic":
            answer = {"ok": False, "error": "quic only"}
        elif not self._requests.allow(conn.remote_address[0], self._clock.monotonic()):
            answer = {"ok": False, "error": "rate-limited"}
        else:
            answer = await self._ask_helpers(conn, nonce)
        self.stats[f"request_{answer.get('error') or 'ok'}"] += 1
        await stream.write_message(msgpack.packb(answer))
        await stream.close()

    async def _ask_helpers(self, conn: Connection, nonce: bytes) -> dict[str, Any]:
        client_ip = conn.remote_address[0]
        excluded = {client_ip, *self._own_ips()}
        candidates = [h for h in self._helpers(conn)
                      if h.peer_id != conn.peer_id and h.address[0] not in excluded]
        error = "no third peer"
        for helper in candidates[:HELPERS_TO_TRY]:
            link: Connection | None = None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    link = await self._connect(helper)
                async with asyncio.timeout(3 * self.timeout):
                    stream = await open_protocol(link, PROTO_AUTONAT_DIAL)
                    await stream.write_message(msgpack.packb({
                        "peer_id": str(conn.peer_id), "nonce": nonce,
                        "address": format_address(conn.remote_address)}))
                    reply = _message(await stream.read_message(MAX_AUTONAT))
                    await stream.close()
            except (StackError, TimeoutError, OSError) as exc:
                error = f"helper {helper.peer_id} unreachable: {str(exc) or type(exc).__name__}"
                continue  # that helper is down: ask the next one
            finally:
                if link is not None:  # dialed for this request only
                    link.abort("autonat done")
            reply_error = reply.get("error")
            if isinstance(reply.get("ok"), bool) and reply_error not in REFUSALS:
                return {"ok": reply["ok"], "helper": str(helper.peer_id),
                        "error": reply_error if isinstance(reply_error, str) else None}
            error = f"helper {helper.peer_id} refused: {reply_error}"  # ask the next one
        return {"ok": False, "error": error}

    # ---------------------------------------------------------------- helper side

    async def _serve_dial(self, conn: Connection, stream: Stream) -> None:
        async with asyncio.timeout(self.timeout):
            request = _message(await stream.read_message(MAX_AUTONAT))
        answer = await self._dial_for(conn, request)
        self.stats[f"dial_{answer.get('error') or 'ok'}"] += 1
        await stream.write_message(msgpack.packb(answer))
        await stream.close()

    async def _dial_for(self, conn: Connection, request: dict[str, Any]) -> dict[str, Any]:
        nonce, target = request.get("nonce"), _peer_id(request.get("peer_id"))
        try:
            address = parse_address(str(request.get("address"))).address
        except UsageError:
            address = None
        if (not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES or target is None
                or address is None):
            return {"ok": False, "error": "bad request"}
        now = self._clock.monotonic()
        if (not self._dials_by.allow(conn.remote_address[0], now)
                or not self._dials_to.allow(address[0], now)):
            return {"ok": False, "error": "rate-limited"}
        try:
            async with self._transport_for("quic") as transport:
                async with asyncio.timeout(self.timeout):
                    back = await transport.dial(address, target)
                try:
                    async with asyncio.timeout(self.timeout):
                        stream = await open_protocol(back, PROTO_AUTONAT_NONCE)
                        await stream.write_message(nonce)
                        ack = await stream.read_message(1)
                finally:
                    back.abort("dial-back done")
        except (TransportError, TimeoutError, OSError) as exc:
            return {"ok": False, "error": f"dial-back failed: {str(exc) or type(exc).__name__}"}
        return {"ok": ack == b"\x01", "error": None if ack == b"\x01" else "nonce refused"}


class _Handler:
    """One protocol id routed to one coroutine (the router's ``ProtocolHandler``)."""

    def __init__(self, protocol_id: bytes,
                 handle: Callable[[Connection, Stream], Awaitable[None]]) -> None:
        self.protocol_id = protocol_id
        self._handle = handle

    async def handle(self, conn: Connection, stream: Stream) -> None:
        await self._handle(conn, stream)


def _message(raw: bytes) -> dict[str, Any]:
    """A msgpack map, or an empty one for anything else (remote garbage never raises)."""
    try:
        obj = msgpack.unpackb(raw)
    except (ValueError, msgpack.UnpackException):
        return {}
    return obj if isinstance(obj, dict) else {}


def _peer_id(text: object) -> PeerId | None:
    if not isinstance(text, str):
        return None
    try:
        return PeerId.parse(text)
    except (StackError, ValueError):
        return None
