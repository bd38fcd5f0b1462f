"""Seed 000's reverse connection (AutoNAT-style dial-back), run by the identify listener.

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
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from stack.base.addresses import PeerAddress, parse_address
from stack.base.errors import StackError, UsageError
from stack.base.interfaces import Connection, Transport
from stack.base.net import format_address
from stack.node.events import DialbackResult, DialbackRole, EventBus
from stack.node.protocols.ping import ping_once
from stack.store.trust import TrustStore
from stack.transport.errors import TransportError

__all__ = ["DialBack"]


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
