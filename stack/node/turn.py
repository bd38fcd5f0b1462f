"""TURN as a second relay kind (issue 9 section 2): the node's side of ``nat.turn``.

``config.turn`` names TURN servers (``turn:USER:PASS@HOST[:PORT]``). For each, a
supervised service ``turn.allocation <server>`` allocates (long-term credentials), keeps
the allocation, its permissions and channels refreshed (``nat.turn.allocation``), and
accepts QUIC over it: every remote address the server relays from is a path of kind
TURN into the node's QUIC transport, so the same end-to-end QUIC runs over it and the
server sees ciphertext only. The relayed address is announced in our signed DHT record
as ``/ip4/H/udp/P/quic-v1/p2p-turn/p2p/<us>``; a dialer reaches us by sending QUIC there
from its own port (it needs no TURN), and reports the path as ``turn``.

Permissions (RFC 8656 section 9): the server relays only from peer IPs we permitted,
and a dialer's first Initial comes before we know it exists. Which IPs, then:

- ``config.turn_permit``: IPs the user names (their other sites, their peers' networks);
- the IP of every peer we hold a direct, LAN or punched connection with, as it connects:
  the address it sends to a TURN relay from is, behind any NAT, that same public IP
  (permissions are per IP, not per port, so a symmetric NAT's fresh port is fine), so a
  peer that once reached us directly can come back through TURN after our own NAT
  stopped letting it in. At most ``MAX_PERMISSIONS`` IPs, newest kept.

A first contact from an IP we have never seen is not let in: that needs signalling over
another path (the circuit relay, as ICE does over its offer/answer), which is not built.

A failure (wrong credentials, no answer, a refresh that failed) is a
``TurnAllocationChanged`` event with the reason and the service's named exception, so
the supervisor restarts it with backoff; the node keeps running without the address.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from nat.turn import TurnAllocation, TurnError, TurnServer, parse_turn_url
from stack.base.addresses import PeerAddress
from stack.base.identity import PeerId
from stack.base.interfaces import Connection, PathKind
from stack.base.net import format_address
from stack.node.events import EventBus, TurnAllocationChanged

__all__ = ["NodeTurn", "MAX_PERMISSIONS"]

MAX_PERMISSIONS = 64
_PERMITTING_PATHS = (PathKind.DIRECT, PathKind.LAN, PathKind.PUNCHED)


class NodeTurn:
    """The node's TURN allocations. ``servers`` parsed at construction (``UsageError``
    for a bad URL); ``service(server)`` runs one allocation under the supervisor."""

    def __init__(self, *, urls: tuple[str, ...], permits: tuple[str, ...], me: PeerId,
                 accept_path: Callable[..., Any], events: EventBus, timeout: float,
                 spawn: Callable[[Any], object], on_change: Callable[[], None],
                 refresh: float | None = None) -> None:
        self.servers: list[TurnServer] = [parse_turn_url(url) for url in urls]
        self.active: dict[str, TurnAllocation] = {}
        self.permits: OrderedDict[str, None] = OrderedDict((ip, None) for ip in permits)
        self._me = me
        self._accept_path = accept_path
        self._events = events
        self._timeout = timeout
        self._spawn = spawn
        self._on_change = on_change
        self._refresh = refresh

    def addrs(self) -> list[str]:
        """Our relayed addresses, one per held allocation."""
        return [PeerAddress(*a.relayed_address, "quic", self._me, turn=True).multiaddr()
                for a in self.active.values() if a.relayed_address is not None]

    def to_json(self) -> list[dict[str, Any]]:
        """What ``status`` shows of each allocation."""
        return [{"server": key, "address": PeerAddress(*a.relayed_address, "quic",
                                                       turn=True).multiaddr()
                 if a.relayed_address is not None else None,
                 "lifetime_s": a.lifetime, "refreshes": a.refreshes,
                 "permissions": len(a.permitted), "paths": a.paths, "dropped": a.dropped,
                 "send_failures": a.send_failures}
                for key, a in sorted(self.active.items())]

    def connected(self, conn: Connection) -> None:
        """A connection opened: a direct one's peer IP is permitted (module docstring)."""
        if not self.servers or conn.path.kind not in _PERMITTING_PATHS:
            return
        self.permit(conn.remote_address[0])

    def permit(self, ip: str) -> None:
        """Permit ``ip`` on every allocation, now and on later ones."""
        self.permits[ip] = None
        self.permits.move_to_end(ip)
        while len(self.permits) > MAX_PERMISSIONS:
            self.permits.popitem(last=False)
        for allocation in self.active.values():
            self._spawn(self._permit_quietly(allocation, ip))

    @staticmethod
    async def _permit_quietly(allocation: TurnAllocation, ip: str) -> None:
        with contextlib.suppress(TurnError):  # counted; retried at the next refresh
            await allocation.permit(ip)

    async def service(self, server: TurnServer) -> None:
        """Allocate on ``server`` and keep it; raises the named ``TurnError`` for the
        supervisor when it cannot (after a ``TurnAllocationChanged`` event)."""
        key = str(server)
        allocation = TurnAllocation(server, accept_path=self._accept_path,
                                    timeout=self._timeout, refresh=self._refresh,
                                    max_permissions=MAX_PERMISSIONS)
        for ip in self.permits:
            allocation.permitted[ip] = None  # created right after the allocation
        try:
            try:
                relayed = await allocation.allocate()
            except TurnError as exc:
                self._events.emit(TurnAllocationChanged(key, "", False, str(exc)), "warning")
                raise
            self.active[key] = allocation
            self._events.emit(TurnAllocationChanged(key, format_address(relayed), True, ""))
            self._on_change()
            try:
                await allocation.run()
            except TurnError as exc:
                self._events.emit(TurnAllocationChanged(key, format_address(relayed), False,
                                                        str(exc)), "warning")
                raise
        finally:
            if self.active.get(key) is allocation:
                del self.active[key]
                self._on_change()
            await allocation.close()
