"""What ``p2pstack connect``, ``ping``, ``lookup``, ``discover`` and ``status`` do with a node.

Each function takes a started ``Node`` and returns a JSON-able dict. The same functions
serve the control API (``stack.node.control``: the node a user runs) and the CLI's
throwaway node (when no node runs), so both ways give the same answer in the same shape.
Failures are the node's named errors; ``timeout`` bounds the whole operation
(``RemoteError`` "no answer within ...").
"""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import stack
from stack.base import records
from stack.base.addresses import PeerAddress, parse_address
from stack.base.errors import LocalError, RemoteError, UsageError
from stack.base.identity import PeerId
from stack.base.net import format_address
from stack.node.events import (DialbackResult, DialbackRole, HolePunchFailed,
                               HolePunchSucceeded)
from stack.node.protocols.echo import MAX_ECHO

if TYPE_CHECKING:
    from discovery.mdns import MdnsService
    from stack.node.node import Node

__all__ = ["connect", "ping", "lookup", "discover", "discovered", "status",
           "sign_announcement", "nat", "DIALBACK_WAIT"]

DIALBACK_WAIT = 6.0  # at most this long for the peer's dial-back verdict after an echo
T = TypeVar("T")


def _target(text: object) -> PeerAddress:
    if not isinstance(text, str):
        raise UsageError("target must be an address or a peer id (a string)")
    return parse_address(text)


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UsageError("timeout must be a positive number of seconds")  # nan too
    return float(timeout)


async def _within(timeout: float, work: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        raise RemoteError(f"no answer within {timeout:g}s") from None


async def _dialback_verdict(node: Node, peer_id: PeerId, wait: float) -> bool | None:
    """The peer's dial-back verdict on us (seed 000), waiting up to ``wait`` seconds;
    None when it did not say in time (or does not dial back)."""
    waiter = node.next_event(DialbackResult, peer_id=peer_id, role=DialbackRole.DIALER,
                             timeout=wait)
    known = node.reachability.get(peer_id)  # registered first: no verdict slips between
    if known is not None:
        waiter.cancel()
        return known.ok
    try:
        return (await waiter).ok
    except TimeoutError:
        return None


async def connect(node: Node, target: str, *, message: str = "hello",
                  transport: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Dial ``target`` (address or peer id), send ``message`` on the echo protocol."""
    address = _target(target)  # a usage error before any work
    timeout = _check_timeout(timeout)
    if not isinstance(message, str) or len(message.encode()) > MAX_ECHO:
        raise UsageError(f"the message must be text of at most {MAX_ECHO} bytes")
    started = node.clock.monotonic()
    conn, reply, rtt = await _within(
        timeout, node.echo(address, message.encode(), transport=transport))
    first_byte = node.clock.monotonic() - started
    upgrade = await _upgrade(node, conn, max(0.0, timeout - first_byte), started)
    if upgrade["path"] is not None:  # the echo again, over the direct path
        conn, reply, rtt = await _within(timeout, node.echo(conn.peer_id, message.encode()))
    reachable = await _dialback_verdict(node, conn.peer_id, min(timeout, DIALBACK_WAIT))
    return {"peer_id": str(conn.peer_id), "transport": conn.transport,
            "path": str(conn.path.kind), "rtt_ms": round(rtt * 1000, 3),
            "reply": reply.decode("utf-8", "replace"), "reachable": reachable,
            "first_byte_ms": round(first_byte * 1000, 3), "upgrade_ms": upgrade["ms"],
            "holepunch": upgrade["outcome"]}


async def _upgrade(node: Node, conn: Any, wait: float, started: float) -> dict[str, Any]:
    """For a relayed connection with hole punching on: how its upgrade ended (waiting up
    to ``wait`` seconds), the time from ``started`` (the connect) to the direct path,
    and that path's kind (None when it stays relayed)."""
    none: dict[str, Any] = {"path": None, "ms": None, "outcome": None}
    if str(conn.path.kind) != "relayed" or not node.config.hole_punch:
        return none
    result = await node.holepunch.outcome(conn.peer_id, wait)
    if result is None:
        pending = conn.peer_id in node.holepunch.attempting
        return {**none, "outcome": "pending" if pending else "not attempted"}
    if isinstance(result, HolePunchFailed):
        return {**none, "outcome": f"failed: {result.reason}"}
    if node.holepunch.direct(conn.peer_id) is None:
        return {**none, "outcome": "succeeded, but the direct connection closed"}
    at = node.holepunch.upgraded_at.get(conn.peer_id, node.clock.monotonic())
    return {"path": str(result.path), "ms": round((at - started) * 1000, 3),
            "outcome": f"succeeded on attempt {result.attempt}"}


async def ping(node: Node, target: str, *, transport: str | None = None, count: int = 1,
               timeout: float = 10.0) -> dict[str, Any]:
    """``count`` ping round trips on one connection to ``target``."""
    address = _target(target)
    timeout = _check_timeout(timeout)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError("count must be at least 1")
    conn, rtt = await _within(timeout, node.ping(address, transport=transport))
    rtts = [rtt]
    for _ in range(count - 1):
        rtts.append((await _within(timeout, node.ping(conn)))[1])
    return {"peer_id": str(conn.peer_id), "transport": conn.transport,
            "path": str(conn.path.kind), "rtt_ms": round(statistics.median(rtts) * 1000, 3),
            "reply": "pong", "rtts_ms": [round(r * 1000, 3) for r in rtts]}


async def lookup(node: Node, peer_id: str, *, timeout: float = 15.0) -> dict[str, Any]:
    """``peer_id``'s verified announcement from the DHT (``RecordNotFound``, ``DhtTimeout``)."""
    if not isinstance(peer_id, str):
        raise UsageError("peer_id must be a string")
    ann = await node.resolve(PeerId.parse(peer_id), timeout=_check_timeout(timeout))
    return {"peer_id": str(ann.peer_id), "addrs": list(ann.addrs), "seq": ann.seq,
            "timestamp": ann.timestamp_ms, "result": "valid"}


async def discover(node: Node, *, timeout: float = 2.0) -> dict[str, Any]:
    """The peers mDNS saw on the local network, after a fresh query and ``timeout``
    seconds of listening (``LocalError`` when the node runs without mDNS)."""
    timeout = _check_timeout(timeout)
    service = node.mdns
    if service is None:
        raise LocalError("this node runs without mDNS (--no-mdns); "
                         "use 'p2pstack discover --standalone'")
    return await discovered(service, timeout)


async def discovered(service: MdnsService, timeout: float) -> dict[str, Any]:
    """``service``'s table after a query now and ``timeout`` seconds of listening: the
    same answer for a running node and for the CLI's own browser."""
    service.query_now()
    await asyncio.sleep(timeout)  # a listening window: answers come when they come
    return {"peers": service.peers.snapshot(service.clock.monotonic()),
            "mdns": service.stats}
async def sign_announcement(node: Node, *, addrs: list[str] | None = None,
                            name: str = "") -> dict[str, Any]:
    """A signed announcement of this node (``addrs``, default: what it announces) with
    the node's next sequence number, so a CLI ``announce sign`` and the node's own
    publisher never hand out numbers out of order. ``record`` is base64."""
    if addrs is None:
        addrs = list(node.announced_addrs())
    if not (isinstance(addrs, list) and all(isinstance(a, str) for a in addrs)
            and isinstance(name, str)):
        raise UsageError("addrs must be a list of strings and name a string")
    now = node.clock.now()
    try:  # what cannot go into a record is found before a number is used up
        records.sign_announcement(node.identity, records.MAX_SEQ, addrs, now,
                                  display_name=name)
    except (records.MalformedRecord, records.RecordTooLarge) as exc:
        raise UsageError(f"cannot announce that: {exc}") from None
    seq = await asyncio.to_thread(node.stores.sequence.next)  # may reserve: off the loop
    data = records.sign_announcement(node.identity, seq, addrs, now, display_name=name)
    return {"peer_id": str(node.peer_id), "seq": seq,
            "record": base64.b64encode(data).decode()}


async def nat(node: Node, *, timeout: float = 60.0) -> dict[str, Any]:
    """Learn the node's NAT behaviour again, now, on its own UDP port (``detect_nat``);
    the report as ``status`` shows it (``LocalError`` when there is no server to ask)."""
    timeout = _check_timeout(timeout)
    if await _within(timeout, node.detect_nat("asked")) is None:
        raise LocalError("no STUN server to ask: start the node with --stun or --bootstrap")
    assert node.natinfo is not None
    behaviour = node.natinfo.to_json()
    assert behaviour is not None
    return behaviour


def status(node: Node) -> dict[str, Any]:
    """The node's state: who it is, where it listens, what it announces, what it knows
    of its NAT, its DHT and its connections."""
    dht = node.dht
    return {
        "peer_id": str(node.peer_id),
        "fingerprint": node.identity.fingerprint,
        "version": stack.__version__,
        "pid": os.getpid(),
        "uptime_s": round(node.uptime, 3),
        "data_dir": str(node.config.data_dir),
        "listen": {"udp": format_address(node.udp_address),
                   "tls": (None if node.tls_address is None
                           else format_address(node.tls_address))},
        "addrs": node.addrs(),
        "announced": list(node.announced_addrs()),
        # What the node knows of its NAT: the address peers saw (announced once
        # confirmed), whether a dial-back reached it, the RFC 5780 report of its own
        # port (null until the first run) and its keepalives (null when off).
        "nat": {"observed_address": (None if node.observed_address is None
                                     else format_address(node.observed_address)),
                "publicly_reachable": node.publicly_reachable,
                "behaviour": None if node.natinfo is None else node.natinfo.to_json(),
                "keepalive": None if node.keepalive is None else node.keepalive.to_json()},
        "dht": None if dht is None else {
            "mode": "server" if dht.core.server else "client",
            "table_size": len(dht.core.table),
            "records_stored": len(dht.core.store),
            "published_seq": None if node.published is None else node.published.seq,
            "replicas": node.replicas,
        },
        "connections": sorted(
            ({"peer_id": str(c.peer_id), "transport": c.transport,
              "path": str(c.path.kind), "remote": format_address(c.remote_address),
              "direction": "outbound" if c.is_client else "inbound"}
             for c in node.connections),
            key=lambda c: (c["peer_id"], c["transport"], c["remote"])),
        "mdns": None if node.mdns is None else {
            "instance": node.mdns.instance, "advertised": node.mdns.advertised,
            "peers": len(node.mdns.peers), "counters": node.mdns.stats},
        "relay": {"service": node.config.relay_service,
                  "stats": None if node.relay_server is None else node.relay_server.stats,
                  "reservations": node.relays.addrs()},
        "turn": node.turn.to_json(),  # our TURN allocations (issue 9, stack.node.turn)
        # Issue 10: the moves noticed (latest last) and the pushed announcements'
        # verdicts (seed-004 codes, banned, rate_limited) and push/relay/redial counts.
        "mobility": {"changes": [{"old": c.old, "new": c.new, "cause": c.cause}
                                 for c in node.mobility.changes[-8:]] if node._started else [],
                     "announcements": dict(sorted(node.announce_push.stats.items())),
                     "connections": dict(node.migration.stats)},  # migrated / replaced
        "holepunch": {str(peer): {"outcome": type(r).__name__.removeprefix("HolePunch").lower(),
                                  "attempt": r.attempt,
                                  "path": str(r.path) if isinstance(r, HolePunchSucceeded)
                                  else "relayed",
                                  "upgrade_ms": (round(r.elapsed * 1000, 3)
                                                 if isinstance(r, HolePunchSucceeded) else None),
                                  "reason": getattr(r, "reason", None)}
                      for peer, r in sorted(node.holepunch.results.items(),
                                            key=lambda item: str(item[0]))},
        # the birthday technique (port-restricted cone <-> symmetric): on or off, and
        # attempts / hits / probes sent / sends from the extra sockets since start
        "birthday": {"enabled": node.holepunch.birthday is not None
                     and node.holepunch.birthday.enabled,
                     "counters": (dict(node.holepunch.birthday.stats)
                                  if node.holepunch.birthday is not None else {})},
        "rendezvous": None if node.rendezvous is None else {
            "rooms": node.rendezvous.directory.room_count,
            "stats": dict(sorted(node.rendezvous.stats.items()))},
        # Issue 13: our admissions by role and outcome (a wrong PIN: "inviter.wrong_pin")
        "rooms": {"admissions": dict(sorted(node.rooms.stats.items()))},
        "services": sorted(node.supervisor.services),
        "service_restarts": dict(sorted(node.supervisor.restarts.items())),
    }
