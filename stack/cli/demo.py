"""``p2pstack demo``: a small p2pstack network on 127.0.0.1, no configuration.

It starts N nodes (default 5), each with a fresh identity in a temporary data
directory (the user's own data directory is not touched). Node 1 founds a new DHT; the
others bootstrap from it. Every node publishes its signed announcement, resolves every
other node's announcement through the DHT, and then dials the next node *by peer id
alone* over QUIC: the address comes from the DHT, the identity is enforced by the
handshake, and the callee dials back (seed 000). Exit 0 when every step succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

from stack.cli._common import add_json_flag, print_json, quiet_logging, seconds
from stack.node.config import NodeConfig
from stack.base.errors import StackError, UsageError
from stack.node import AnnouncementPublished, DialbackResult
from stack.node.events import EventWaiter

__all__ = ["register"]

MAX_NODES = 32


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a small network on 127.0.0.1 and show it working")
    p.add_argument("--nodes", type=int, default=5, metavar="N",
                   help=f"how many nodes (2-{MAX_NODES}, default 5)")
    p.add_argument("--timeout", type=seconds, default=30.0, metavar="S",
                   help="seconds each step may take (default 30)")
    add_json_flag(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.nodes <= MAX_NODES:
        raise UsageError(f"--nodes must be between 2 and {MAX_NODES}")
    quiet_logging(args, logging.ERROR)  # the narrative below is the output
    with tempfile.TemporaryDirectory(prefix="p2pstack-demo-") as tmp:
        summary = asyncio.run(_demo(Path(tmp), args.nodes, args.timeout,
                                    say=(lambda *_: None) if args.json else print))
    if args.json:
        print_json(summary)
    return 0 if summary["ok"] else 1


async def _demo(tmp: Path, count: int, timeout: float, say: Any) -> dict[str, Any]:
    from stack.node import Node  # here, not at the top: see stack.node's docstring
    nodes: list[Node] = []
    published: list[EventWaiter[AnnouncementPublished]] = []  # registered before each join
    try:
        say(f"starting {count} nodes on 127.0.0.1 ...")
        for i in range(count):
            bootstrap = () if i == 0 else (f"127.0.0.1:{nodes[0].udp_address[1]}",)
            node = Node(NodeConfig(data_dir=tmp / f"node{i + 1}", listen=("127.0.0.1", 0),
                                   tls=False, bootstrap=bootstrap,
                                   display_name=f"node{i + 1}", dial_back_timeout=3.0))
            await node.start()
            nodes.append(node)
            published.append(node.next_event(AnnouncementPublished, timeout=timeout))
            peers = await node.join(timeout=timeout)
            assert node.dht is not None
            role = ("DHT server (dialed back)" if node.dht.core.server
                    else "DHT client (not dialed back)")
            say(f"  node{i + 1} {node.peer_id}  udp {node.udp_address[1]}"
                + ("  founds the DHT" if i == 0 else f"  bootstrapped, knows {peers}, {role}"))

        say("publishing signed announcements ...")
        for i, waiter in enumerate(published):
            event = await waiter
            say(f"  node{i + 1} seq {event.seq} stored on {event.stored} nodes")

        say("resolving every node through the DHT ...")
        resolved = failed = 0
        for a in nodes:
            for b in nodes:
                if a is b:
                    continue
                try:
                    ann = await a.resolve(b.peer_id, timeout)
                    resolved += ann.peer_id == b.peer_id
                except StackError:
                    failed += 1
        say(f"  {resolved}/{resolved + failed} lookups found a valid announcement")

        say("connecting by peer id over QUIC (address from the DHT) ...")
        connections = []
        for i, a in enumerate(nodes):
            b = nodes[(i + 1) % count]
            entry: dict[str, Any] = {"from": f"node{i + 1}", "to": f"node{(i + 1) % count + 1}"}
            verdict = a.next_event(DialbackResult, role="dialer", peer_id=b.peer_id,
                                   timeout=timeout)
            try:
                _conn, reply, rtt = await asyncio.wait_for(
                    a.echo(b.peer_id, f"hello from node{i + 1}".encode(), transport="quic"),
                    timeout)
                dialback = await verdict
                entry.update(ok=reply == f"hello from node{i + 1}".encode(),
                             rtt_ms=round(rtt * 1000, 3), mutual_trust=dialback.ok is True)
                say(f"  {entry['from']} -> {entry['to']}: echo ok, rtt {entry['rtt_ms']} ms, "
                    f"dial-back {'ok (mutual trust)' if dialback.ok else 'failed'}")
            except (StackError, TimeoutError) as exc:
                verdict.cancel()
                entry.update(ok=False, error=str(exc) or type(exc).__name__)
                say(f"  {entry['from']} -> {entry['to']}: FAILED {entry['error']}")
            connections.append(entry)
    finally:
        for waiter in published:
            waiter.cancel()
        await asyncio.gather(*(n.stop(grace=0.2) for n in nodes), return_exceptions=True)

    ok = failed == 0 and all(c["ok"] for c in connections)
    total = count * (count - 1)
    say(f"summary: {count} nodes, {resolved}/{total} DHT lookups, "
        f"{sum(c['ok'] for c in connections)}/{count} QUIC connections by peer id"
        + (" - all good" if ok else " - FAILURES above"))
    return {"ok": ok, "nodes": [{"name": f"node{i + 1}", "peer_id": str(n.peer_id)}
                                for i, n in enumerate(nodes)],
            "lookups": {"ok": resolved, "total": total}, "connections": connections}
