"""Keeping connections across our move (issue 10 section 3).

After a move that made our old path unusable (``stack.node.mobility``: a new interface
address, a rebind, a sleep), ``Migration.settle_all()`` handles every open connection,
one task per peer:

=========================================  =============================================
connection                                 what happens
=========================================  =============================================
QUIC, we are its client, on our UDP port   migrated (``QuicTransport.migrate``: new
                                           connection id, PING from the new path, the
                                           peer validates it): ``connection.migrated``,
                                           role ``client``; streams carry on
the same, but the peer acknowledged        replaced, cause ``migration_failed``
nothing from the new path in ``timeout`` s
the same, after a sleep longer than the     replaced, cause ``slept``: the peer closed
idle timeout (``migrate=False``)           its side long ago, a migration would only
                                           wait for its timeout
QUIC, we are its server                    replaced, cause ``server_side`` (RFC 9000
                                           section 9: only clients migrate)
TLS over TCP                               replaced, cause ``tcp``
another path (relayed: it rides inside     left alone: it lives or dies with that one
our connection to the relay)
=========================================  =============================================

"Replaced": the old connection is closed and the peer is dialed again by peer id (the
addresses we know, its latest pushed announcement, the DHT: ``Node.connect``), unless a
connection to it survived (migrated), which then carries on; each replaced connection is
one ``connection.replaced`` event (peer, old path, new path or None with the error,
cause), so the application never sees a connection just go quiet. The connection that
carries on is where the mover's announcement push goes (``push_all(route=...)``).

The server side of a migration needs nothing from us: aioquic validates the new address
and the driver follows it; ``on_migrated`` turns that into ``connection.migrated`` with
role ``server``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from stack.base.errors import StackError
from stack.base.identity import PeerId
from stack.base.interfaces import Connection, PathKind
from stack.base.net import Address, format_address
from stack.node.events import ConnectionMigrated, ConnectionReplaced
from stack.transport.errors import MigrationFailed
from stack.transport.quic import QuicConn, UdpPathSocket

if TYPE_CHECKING:
    from stack.node.node import Node

__all__ = ["Migration", "MIGRATION_TIMEOUT", "route"]

log = structlog.get_logger("p2pstack.migration")

#: seconds a migrated connection waits for the peer's acknowledgement from the new path
#: before it is replaced (a few round trips and PING retransmissions on any sane path)
MIGRATION_TIMEOUT = 1.0


class Migration:
    """Our connections across our move, on one Node (see the module docstring)."""

    def __init__(self, node: Node, *, timeout: float = MIGRATION_TIMEOUT) -> None:
        self.node = node
        self.timeout = timeout
        self.stats: dict[str, int] = {"migrated": 0, "replaced": 0, "reconnect_failed": 0}

    # ----------------------------------------------------------- the server side

    def on_migrated(self, conn: QuicConn, old: Address) -> None:
        """``QuicTransport``'s ``on_migrated``: the peer moved its client connection."""
        self.node.events.emit(ConnectionMigrated(
            conn.peer_id, format_address(conn.remote_address), "server",
            old_address=format_address(old)))

    # ------------------------------------------------------------- our move

    def settle_all(self, *, migrate: bool = True) -> dict[PeerId, asyncio.Task[Connection | None]]:
        """Start settling every peer we have an open connection with; each task gives
        the connection to that peer that carries on (or None). ``migrate`` False: replace
        every connection (see the module docstring)."""
        peers: dict[PeerId, None] = {}
        for conn in self.node.connections:
            if not conn.closed:
                peers.setdefault(conn.peer_id, None)
        spawn = self.node.supervisor.spawn
        return {peer: spawn(self.settle(peer, migrate=migrate)) for peer in peers}

    async def settle(self, peer: PeerId, *, migrate: bool = True) -> Connection | None:
        """Migrate or replace our connections to ``peer``; the one that carries on."""
        node = self.node
        live = [c for c in node.connections if c.peer_id == peer and not c.closed]
        kept: list[Connection] = []
        stale: list[tuple[Connection, str, str | None]] = []
        migrating: list[tuple[QuicConn, asyncio.Future[float]]] = []
        for conn in live:
            if isinstance(conn, QuicConn):
                if not _on_our_port(conn):
                    continue  # relayed: rides on (and settles with) another connection
                if not migrate:
                    stale.append((conn, "slept", None))
                elif conn.is_client and node.quic is not None:
                    migrating.append((conn, node.quic.migrate(conn, self.timeout)))
                else:
                    stale.append((conn, "server_side", None))
            else:
                stale.append((conn, "tcp", None))
        for conn, future in migrating:
            try:
                elapsed = await future
            except MigrationFailed as exc:
                stale.append((conn, "migration_failed", str(exc)))
                continue
            self.stats["migrated"] += 1
            kept.append(conn)
            node.events.emit(ConnectionMigrated(conn.peer_id,
                                                format_address(conn.remote_address),
                                                "client", elapsed))
        if not stale:
            return kept[0] if kept else None
        new: Connection | None = kept[0] if kept else None
        error = None
        if new is None:
            for conn, _, _ in stale:  # dead paths: the redial must not pick them
                conn.abort("replaced after our move")
            try:
                async with asyncio.timeout(node.options.handshake_timeout):
                    new = await node.connect(peer, identify=False)
            except (StackError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self.stats["reconnect_failed"] += 1
        for conn, cause, why in stale:
            conn.abort("replaced after our move")
            self.stats["replaced"] += 1
            node.events.emit(ConnectionReplaced(
                peer, str(conn.path), None if new is None else str(new.path), cause,
                why if new is not None else "; ".join(e for e in (why, error) if e)),
                "warning")
        return new


def _on_our_port(conn: QuicConn) -> bool:
    """Whether ``conn`` sends through our shared UDP port (not a relay's circuit)."""
    return isinstance(conn.path_socket, UdpPathSocket) and conn.path.kind is not PathKind.RELAYED


async def route(tasks: dict[PeerId, asyncio.Task[Connection | None]],
                peer: PeerId) -> Connection | None:
    """The connection that carries on to ``peer`` once settled (None: none settled)."""
    task = tasks.get(peer)
    if task is None:
        return None
    with contextlib.suppress(StackError, asyncio.CancelledError):
        return await task
    return None
