"""``/p2pstack/identify/1``: the identity exchange (seed 004) and the dial-back verdict.

Dialer (``exchange``): sends its signed identity exchange (with its listen addresses),
reads the listener's within the handshake timeout (``HandshakeTimeout``), verifies it
(``ProtocolViolation`` on a bad one or a peer id other than the connection's), then
waits in the background for the listener's verdict: ``{"ok", "address", "error",
"observed"}``. The verdict becomes a ``DialbackResult`` (role ``dialer``) in
``reachability``; ``observed`` (our address as the listener saw it, identify's
"observed address") goes to ``on_observed`` with whether the dial-back reached it. A
listener that does no dial-backs answers ``ok: None`` at once.

Listener (``handle``): verifies the dialer's exchange, answers with its own, and unless
it does no dial-backs (or dialed this connection itself, or the connection is relayed:
its remote address is the relay's) asks ``autonat`` to dial the peer back before writing
the verdict. A dialer ignores the observed address of a relayed or TURN connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack

from stack.base.clock import Clock
from stack.base.identity import Identity, PeerId
from stack.base.interfaces import Connection, PathKind, Stream
from stack.base.net import format_address
from stack.base.records import Result, make_identity_exchange, verify_identity_exchange
from stack.node.events import DialbackResult, DialbackRole, EventBus, IdentityReceived
from stack.node.protocols.autonat import DialBack
from stack.node.router import open_protocol
from stack.transport.errors import HandshakeTimeout, ProtocolViolation, TransportError

__all__ = ["PROTO_IDENTIFY", "MAX_IDENTIFY", "IdentifyProtocol"]

PROTO_IDENTIFY = b"/p2pstack/identify/1"
MAX_IDENTIFY = 4096  # bytes per message


class IdentifyProtocol:
    protocol_id = PROTO_IDENTIFY

    def __init__(self, *, identity: Identity, clock: Clock, display_name: str,
                 listen_addrs: Callable[[], list[str]], events: EventBus,
                 handshake_timeout: float, verdict_timeout: float,
                 dial_back: DialBack | None,
                 spawn: Callable[[Coroutine[Any, Any, Any]], object],
                 on_observed: Callable[[Connection, str, bool], None]) -> None:
        self._identity = identity
        self._clock = clock
        self._display_name = display_name
        self._listen_addrs = listen_addrs
        self._events = events
        self._handshake_timeout = handshake_timeout
        self._verdict_timeout = verdict_timeout
        self._dial_back = dial_back
        self._spawn = spawn
        self._on_observed = on_observed
        #: the latest dial-back verdict each peer gave us
        self.reachability: dict[PeerId, DialbackResult] = {}

    def _our_exchange(self) -> bytes:
        return make_identity_exchange(self._identity, self._clock.now(),
                                      display_name=self._display_name,
                                      addrs=self._listen_addrs())

    def _check(self, conn: Connection, data: bytes) -> tuple[str, ...]:
        result, msg = verify_identity_exchange(data, self._clock.now())
        if result is not Result.VALID or msg is None or msg.peer_id != conn.peer_id:
            conn.abort("bad identity exchange")
            raise ProtocolViolation(f"identity exchange from {conn.peer_id} rejected: "
                                    f"{result if msg is None else 'peer id mismatch'}")
        self._events.emit(IdentityReceived(msg.peer_id, msg.addrs, msg.display_name))
        return msg.addrs

    # ---------------------------------------------------------------- dialer side

    async def exchange(self, conn: Connection) -> None:
        stream = await open_protocol(conn, PROTO_IDENTIFY)
        await stream.write_message(self._our_exchange())
        try:
            async with asyncio.timeout(self._handshake_timeout):
                reply = await stream.read_message(MAX_IDENTIFY)
        except TimeoutError:
            conn.abort("no identity exchange")
            raise HandshakeTimeout(f"{conn.peer_id} sent no identity exchange within "
                                   f"{self._handshake_timeout}s") from None
        self._check(conn, reply)
        self._spawn(self._await_verdict(conn, stream))

    async def _await_verdict(self, conn: Connection, stream: Stream) -> None:
        with contextlib.suppress(TransportError, ValueError, TimeoutError):
            async with asyncio.timeout(self._verdict_timeout):
                raw = await stream.next_message(MAX_IDENTIFY)
            if raw is None:  # the listener does no dial-backs: settle at once, no verdict
                result = DialbackResult(conn.peer_id, None, None,
                                        "the peer does not dial back", DialbackRole.DIALER)
            else:
                obj = msgpack.unpackb(raw)
                if not isinstance(obj, dict) or not isinstance(obj.get("ok"), (bool, type(None))):
                    return
                observed = obj.get("observed")
                # over a relayed or TURN path the listener sees the relay, not us
                if isinstance(observed, str) and conn.path.kind not in (PathKind.RELAYED,
                                                                        PathKind.TURN):
                    self._on_observed(conn, observed, obj["ok"] is True)
                address, error = obj.get("address"), obj.get("error")
                result = DialbackResult(conn.peer_id, obj["ok"],
                                        address if isinstance(address, str) else None,
                                        error if isinstance(error, str) else None,
                                        DialbackRole.DIALER)
            self.reachability[conn.peer_id] = result
            self._events.emit(result)

    # -------------------------------------------------------------- listener side

    async def handle(self, conn: Connection, stream: Stream) -> None:
        addrs = self._check(conn, await stream.read_message(MAX_IDENTIFY))
        await stream.write_message(self._our_exchange())
        observed = format_address(conn.remote_address)  # identify's "observed address"
        # a TURN path's remote address is the TURN server's, as a relayed one's is the relay's
        relayed = conn.path.kind in (PathKind.RELAYED, PathKind.TURN)
        if self._dial_back is None or conn.is_client or relayed:
            verdict: dict[str, Any] = {"ok": None, "address": None, "error": "no dial-back"}
        else:
            result = await self._dial_back.dial_back(conn, addrs)
            verdict = {"ok": result.ok, "address": result.address, "error": result.error}
        if relayed:  # the address we see is the relay's: neither dial it back nor report it
            verdict["error"] = f"{conn.path.kind} connection: no dial-back"
        await stream.write_message(msgpack.packb({**verdict, "observed": observed}))
        await stream.close()
